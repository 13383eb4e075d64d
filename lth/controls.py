"""The standard lottery-ticket controls, built from a ticket's mask (Frankle & Carbin 2019).

- random_prune: a random mask with the ticket's per-tensor counts, applied to the rewound weights;
- random_prune_module: a random mask with the ticket's count per module (a layer's weight and bias
  together), spread at random over the module's entries: the random baseline of papers that
  prune each layer's parameters as one vector (the MNIST-1D notebook);
- shuffle: the ticket's mask shuffled within each tensor, the ticket's own surviving rewound
  values carried along to the new positions (same values, random places);
- random_reinit: the ticket's mask on a fresh random initialisation (built by the driver).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from lth.masks import Mask


def random_mask_like(mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
    """A uniformly random mask with exactly the same number of kept weights in each tensor."""
    out: Mask = {}
    for name, m in mask.items():
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
        out[name] = flat.reshape(m.shape)
    return out


def module_of(name: str) -> str:
    """The module a parameter belongs to: `hidden.0.weight` -> `hidden.0`."""
    return name.rsplit(".", 1)[0]


def random_mask_per_module(mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
    """A uniformly random mask with the same number of kept entries in each module as `mask`,
    drawn over the module's tensors as one vector (so a tensor's count is random: the ticket's
    split between a layer's weight and bias is not carried over)."""
    modules: dict[str, list[str]] = {}
    for name in mask:
        modules.setdefault(module_of(name), []).append(name)
    out: Mask = {}
    for names in modules.values():
        sizes = [mask[n].numel() for n in names]
        flat = torch.zeros(sum(sizes), dtype=torch.bool)
        flat[torch.randperm(len(flat), generator=generator)[: sum(int(mask[n].sum()) for n in names)]] = True
        for name, part in zip(names, flat.split(sizes)):
            out[name] = part.reshape(mask[name].shape)
    return out


def shuffle_within_tensors(
    mask: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], generator: torch.Generator
) -> tuple[Mask, dict[str, torch.Tensor]]:
    """Permute each tensor's entries at random, moving the mask and the weights together.

    Returns the shuffled mask and the shuffled weights of the masked tensors; each tensor keeps
    its count and its multiset of surviving values, only their places change.
    """
    new_mask: Mask = {}
    new_weights: dict[str, torch.Tensor] = {}
    for name, m in mask.items():
        perm = torch.randperm(m.numel(), generator=generator)
        new_mask[name] = m.reshape(-1)[perm].reshape(m.shape)
        w = weights[name].detach().cpu()
        new_weights[name] = (w * m.to(w.dtype)).reshape(-1)[perm].reshape(m.shape)
    return new_mask, new_weights
