"""The standard lottery-ticket controls, built from a ticket's mask (Frankle & Carbin 2019).

- random_prune: a random mask with the ticket's per-tensor counts, applied to the rewound weights;
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
