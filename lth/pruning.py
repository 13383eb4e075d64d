"""Magnitude pruning of the remaining weights (Frankle & Carbin 2019).

Every rate is a fraction of the weights that *remain*: pruning 20% twice leaves 64%.
Name patterns are shell-style globs (`fnmatch`) matched against parameter names.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn

from lth.errors import LTCError
from lth.masks import Mask

PRUNABLE_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face GPT-2's `Conv1D` (a Linear with an (in, out) weight), matched by name so
    that `lth` need not import transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _output_embedding(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def default_prunable(model: nn.Module) -> list[str]:
    """Weights of Linear / Conv layers (and HF Conv1D), in model order.

    Biases, norms, embeddings and a Hugging Face model's unembedding (`get_output_embeddings`)
    are left out; add them with `include` patterns.
    """
    params = dict(model.named_parameters())
    unembed = _output_embedding(model)
    names = []
    for mod_name, module in model.named_modules():
        if module is unembed:
            continue
        if isinstance(module, PRUNABLE_LAYER_TYPES) or _is_hf_conv1d(module):
            name = f"{mod_name}.weight" if mod_name else "weight"
            if name in params and params[name].requires_grad:
                names.append(name)
    return names


def _matching(names: Sequence[str], pattern: str) -> list[str]:
    return [n for n in names if fnmatchcase(n, pattern)]


def select_prunable(
    model: nn.Module, include: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[str]:
    """The default prunable weights plus parameters matching `include`, minus those matching `ignore`.

    A pattern that matches nothing is an error (it is almost always a typo).
    """
    all_names = [n for n, _ in model.named_parameters()]
    chosen = default_prunable(model)
    for pattern in include:
        hits = _matching(all_names, pattern)
        if not hits:
            raise LTCError(f"include pattern {pattern!r} matches no parameter; some names: {all_names[:6]}")
        chosen += [n for n in hits if n not in chosen]
    for pattern in ignore:
        hits = _matching(chosen, pattern)
        if not hits:
            raise LTCError(f"ignore pattern {pattern!r} matches no prunable parameter; prunable: {chosen[:8]}")
        chosen = [n for n in chosen if n not in hits]
    if not chosen:
        raise LTCError(
            f"no prunable tensors in {type(model).__name__}: add patterns to imp.include or relax imp.ignore"
        )
    order = {n: i for i, n in enumerate(all_names)}
    return sorted(chosen, key=order.__getitem__)


def resolve_rates(
    names: Sequence[str], fraction: float, overrides: Mapping[str, float]
) -> dict[str, float | None]:
    """Per-tensor pruning rate: the override whose pattern matches (first wins), else None (= default)."""
    check_fraction(fraction, "imp.prune_fraction")
    rates: dict[str, float | None] = {n: None for n in names}
    for pattern, rate in overrides.items():
        check_fraction(rate, f"imp.rate_overrides[{pattern!r}]", allow_zero=True)
        hits = _matching(names, pattern)
        if not hits:
            raise LTCError(f"rate override pattern {pattern!r} matches no prunable tensor; prunable: {list(names)[:8]}")
        for n in hits:
            if rates[n] is None:
                rates[n] = rate
    return rates


def check_fraction(value: float, what: str, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise LTCError(f"{what} must be in {interval}, got {value}")


def _prune_smallest(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """Return a copy of `alive` with the `count` smallest-scored alive entries set False.

    Ties are broken by position (earlier entries pruned first), so the result is deterministic.
    """
    flat_alive = alive.reshape(-1)
    idx = flat_alive.nonzero().squeeze(1)
    if count <= 0 or idx.numel() == 0:
        return alive.clone()
    order = torch.sort(scores.reshape(-1)[idx], stable=True).indices
    out = flat_alive.clone()
    out[idx[order[: min(count, idx.numel())]]] = False
    return out.reshape(alive.shape)


def magnitude_prune(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    fraction: float,
    strategy: str = "global",
    overrides: Mapping[str, float] | None = None,
) -> Mask:
    """Prune `fraction` of the remaining weights by smallest magnitude |w|.

    `global`: one threshold across every tensor without an override, removing exactly
    round(fraction * remaining) weights. `layerwise`: each tensor loses round(fraction * its remaining).
    Tensors matched by `overrides` are always pruned layerwise at their own rate (e.g. the
    output layer at half the rate, as Frankle & Carbin did).
    """
    if strategy not in ("global", "layerwise"):
        raise LTCError(f"unknown pruning strategy {strategy!r}: use global or layerwise")
    rates = resolve_rates(list(mask), fraction, overrides or {})
    new_mask: Mask = {}
    pooled = [n for n, r in rates.items() if r is None and strategy == "global"]
    for name, rate in rates.items():
        if name in pooled:
            continue
        r = fraction if rate is None else rate
        alive = mask[name].cpu()
        new_mask[name] = _prune_smallest(weights[name].detach().abs().cpu(), alive, round(r * int(alive.sum())))
    if pooled:
        scores = torch.cat([weights[n].detach().abs().cpu().reshape(-1).double() for n in pooled])
        alive = torch.cat([mask[n].cpu().reshape(-1) for n in pooled])
        kept = _prune_smallest(scores, alive, round(fraction * int(alive.sum())))
        offset = 0
        for n in pooled:
            size = mask[n].numel()
            new_mask[n] = kept[offset : offset + size].reshape(mask[n].shape)
            offset += size
    return {n: new_mask[n] for n in mask}


def prune_to_counts(weights: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> Mask:
    """One-shot magnitude pruning to another mask's per-tensor counts: in each tensor of `like`,
    keep the `like[name].sum()` entries of largest |w| (ties broken by position, as in
    `magnitude_prune`), so two masks can be compared at exactly matched per-layer sparsity."""
    out: Mask = {}
    for name, m in like.items():
        scores = weights[name].detach().abs().cpu()
        alive = torch.ones_like(m, dtype=torch.bool, device="cpu")
        out[name] = _prune_smallest(scores, alive, m.numel() - int(m.sum()))
    return out
