"""Masks: a mapping from parameter name to a bool tensor of that parameter's shape.

True = the weight survives, False = pruned. Masks live on the CPU and are saved as safetensors
(uint8, since safetensors has no bool) next to a JSON sparsity report.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lth.errors import LTCError

Mask = dict[str, torch.Tensor]


def full_mask(model: nn.Module, names: Iterable[str]) -> Mask:
    """The dense mask (all True) over the named parameters of `model`."""
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names}


def count_remaining(mask: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def count_total(mask: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in mask.values()))


def density(mask: Mapping[str, torch.Tensor]) -> float:
    """Global fraction of weights that survive (1 = dense)."""
    total = count_total(mask)
    return count_remaining(mask) / total if total else 1.0


def layer_density(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per-tensor fraction of weights that survive."""
    return {n: float(m.float().mean()) for n, m in mask.items()}


def sparsity_report(mask: Mapping[str, torch.Tensor]) -> dict:
    """JSON-ready summary: global and per-tensor density and counts."""
    return {
        "density": density(mask),
        "sparsity": 1.0 - density(mask),
        "remaining": count_remaining(mask),
        "total": count_total(mask),
        "layers": {
            n: {"density": float(m.float().mean()), "remaining": int(m.sum()), "total": m.numel()}
            for n, m in mask.items()
        },
    }


def iou(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Intersection over union of the kept weights, per tensor and `global` over all tensors.

    IoU = |a AND b| / |a OR b|; 1.0 when both keep nothing.
    """
    if set(a) != set(b):
        raise LTCError(f"masks cover different parameters: {sorted(set(a) ^ set(b))[:5]}")
    out, inter_all, union_all = {}, 0, 0
    for n in a:
        inter = int((a[n] & b[n]).sum())
        union = int((a[n] | b[n]).sum())
        out[n] = inter / union if union else 1.0
        inter_all += inter
        union_all += union
    out["global"] = inter_all / union_all if union_all else 1.0
    return out


def validate_mask(mask: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Check every mask entry names a parameter of `model` with the same shape."""
    params = dict(model.named_parameters())
    for n, m in mask.items():
        if n not in params:
            raise LTCError(
                f"mask entry {n!r} is not a parameter of {type(model).__name__}: "
                "the mask belongs to another model (check the config that made it)"
            )
        if tuple(m.shape) != tuple(params[n].shape):
            raise LTCError(
                f"mask entry {n!r} has shape {tuple(m.shape)} but the parameter has "
                f"{tuple(params[n].shape)}: the mask belongs to another model"
            )
        if m.dtype != torch.bool:
            raise LTCError(f"mask entry {n!r} has dtype {m.dtype}, expected bool")


def mask_to_tensors(mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """uint8 copies for safetensors, which has no bool dtype."""
    return {n: m.to(torch.uint8).contiguous().cpu() for n, m in mask.items()}


def save_mask(path: str | Path, mask: Mapping[str, torch.Tensor]) -> None:
    """Write `mask` as safetensors at `path` (the caller handles atomic renames)."""
    save_file(mask_to_tensors(mask), str(path), metadata={"format": "lth-mask"})


def load_mask(path: str | Path) -> Mask:
    """Read a mask saved by `save_mask`."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types on corrupt files
        raise LTCError(f"cannot read mask {path}: {exc}; delete it to recompute the level") from exc
    return {n: t.bool() for n, t in tensors.items()}



def apply_mask(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every masked tensor multiplied by its mask (the others unchanged)."""
    out = dict(state)
    for name, m in mask.items():
        out[name] = state[name] * m.to(state[name].dtype)
    return out
