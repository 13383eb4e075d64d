"""Every seed a run derives, from one function: independent streams named by their parts.

`derive_seed(seed, "random_prune", 3)` is the seed of the random_prune control at level 3,
`derive_seed(seed, step, rank)` the in-step seed of one optimiser step. The sha256 of the parts
makes neighbouring names (step 7 and step 8, level 2 and level 3, seed 0's control and seed 1's)
independent streams, which additive offsets (`seed * 1000 + level`) do not guarantee.
"""
from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed (it fits torch; callers reduce it for numpy) from the sha256 of the parts joined by '/'."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: int | str) -> torch.Generator:
    """A CPU torch generator seeded by `derive_seed(*parts)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))
