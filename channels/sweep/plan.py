"""What a Jacobian sweep measures: pairs, settings, items, the target order and each item's sources.

An *item* is (pair a->b, context c, target t); its blocks are J(t, s) = d b[t] / d a[s] for every
source s of `source_positions` (s <= t in a causal model, every s in an encoder, within
`max_distance` of t if set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from channels.metrics import DEFAULT_RTOL
from channels.sketch import PROBES
from channels.sites import replace, run_sites
from lth.errors import LTCError

METHODS = ("exact", "sketch")


@dataclass(frozen=True)
class Pair:
    """A Jacobian between two sites: J = d b / d a."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a}->{self.b}"

    @property
    def slug(self) -> str:
        """The pair's file-name form `a__b` (item and figure directories)."""
        return f"{self.a}__{self.b}"


def parse_pair(spec: str) -> Pair:
    """`site_a->site_b` -> Pair, or one LTCError line."""
    parts = [p.strip() for p in spec.split("->")]
    if len(parts) != 2 or not all(parts):
        raise LTCError(
            f"pair {spec!r} is not of the form 'site_a->site_b' (e.g. resid_pre.0->resid_post.11)"
        )
    return Pair(*parts)


@dataclass
class SweepSettings:
    """How much to measure and how.

    Args:
        contexts: contexts of the Jacobian sweep.
        targets: target positions t per context.
        covariance_contexts: contexts whose tokens feed the covariance.
        max_distance: only sources with |t - s| <= max_distance (None: all).
        keep_singular_values: singular values stored per block, largest first (None: all).
        limit: at most this many items, in sweep order (a quick look).
        rtol: relative tolerance of the numerical rank.
        covariance_skip_first: leave the first positions of each context out of the covariance
            (trained GPT-2's position 0 is a huge outlier, the "attention sink").
        chunk_size: cotangents per backward call (peak memory ~ chunk_size x context x width);
            None: 8 on a CPU (measured faster there than larger batches), 64 on a GPU.
        method: `exact` (d_b VJPs per target: every block and its full spectrum) or `sketch`
            (`sketch_size` random VJPs per target: unbiased ||J||_F^2, tr((J J^T)^2) and the
            participation ratio of every block with standard errors, top-k singular values of
            the blocks at `sketch_topk_offsets`; see channels.sketch).
        sketch_size: random cotangents m per target to start with (sketch).
        sketch_probes: `orthogonal` (rows of one random orthonormal frame, m <= d_b: lower variance,
            exact at m = d_b) or `gaussian` (independent normal rows); see channels.sketch.
        sketch_pr_rel_se: the sketch grows (up to `sketch_max_size`) until every block's
            participation ratio has a relative standard error at most this (null: fixed m).
        sketch_max_size: the most cotangents per target.
        sketch_topk: k of the sketch's top singular values (block Krylov per block).
        sketch_topk_offsets: distances t - s whose blocks get top-k singular values (sketch).
        krylov_block, krylov_iters: block size and the most power steps of that block Krylov.
        krylov_tol: the block Krylov stops once a step moves no top-k Ritz value by more than
            this, relative (null: always `krylov_iters` steps).
        lens_skip_first: targets t < this are left out of the Jacobian lens (attention sinks).
    """

    contexts: int = 4
    targets: int = 4
    covariance_contexts: int = 32
    max_distance: int | None = None
    keep_singular_values: int | None = None
    limit: int | None = None
    rtol: float = DEFAULT_RTOL
    covariance_skip_first: int = 0
    chunk_size: int | None = None
    method: str = "exact"
    sketch_size: int = 64
    sketch_probes: str = "orthogonal"
    sketch_pr_rel_se: float | None = 0.02
    sketch_max_size: int = 256
    sketch_topk: int = 8
    sketch_topk_offsets: list[int] = field(default_factory=lambda: [0, 2])
    krylov_block: int = 12
    krylov_iters: int = 6
    krylov_tol: float | None = 0.01
    lens_skip_first: int = 4

    def validate(self) -> None:
        """One LTCError line for the first bad setting."""
        for key in ("contexts", "targets", "covariance_contexts", "krylov_block", "krylov_iters"):
            if getattr(self, key) < 1:
                raise LTCError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_distance", "limit", "keep_singular_values", "chunk_size"):
            value = getattr(self, key)
            if value is not None and value < (0 if key == "max_distance" else 1):
                raise LTCError(
                    f"{key} must be {'>= 0' if key == 'max_distance' else '>= 1'} or null, got {value}"
                )
        if self.covariance_skip_first < 0 or self.lens_skip_first < 0 or not 0 < self.rtol < 1:
            raise LTCError("covariance_skip_first and lens_skip_first must be >= 0, rtol in (0, 1)")
        if self.method not in METHODS:
            raise LTCError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.sketch_probes not in PROBES:
            raise LTCError(f"sketch_probes must be one of {', '.join(PROBES)}, got {self.sketch_probes!r}")
        if self.sketch_size < 4 or self.sketch_size % 2:
            raise LTCError(f"sketch_size must be even and >= 4, got {self.sketch_size}")
        if self.sketch_max_size < self.sketch_size or self.sketch_max_size % 2:
            raise LTCError(f"sketch_max_size must be even and >= sketch_size, got {self.sketch_max_size}")
        if any(v is not None and v <= 0 for v in (self.sketch_pr_rel_se, self.krylov_tol)):
            raise LTCError("sketch_pr_rel_se and krylov_tol must be positive or null")
        if self.sketch_topk < 1 or any(o < 0 for o in self.sketch_topk_offsets):
            raise LTCError("sketch_topk must be >= 1 and sketch_topk_offsets >= 0")


@dataclass(frozen=True)
class Item:
    """One (pair, context, target) of the sweep; `rank` is t's place in the target order."""

    pair: int  # index into the sweep's pairs
    context: int
    target: int
    rank: int

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.pair, self.context, self.target)


def target_order(length: int, count: int) -> list[int]:
    """`count` target positions, evenly spread and prefix-stable: t_i = L - 1 - floor(v_i L).

    v_i is the base-2 van der Corput sequence 0, 1/2, 1/4, 3/4, 1/8, ... (bits of i mirrored),
    so the first target is the last position, the next ones halve the gaps, and asking for more
    targets keeps the earlier ones. Duplicates (L not a power of 2) are skipped.
    """
    bits = max(1, math.ceil(math.log2(length)))
    order: list[int] = []
    for i in range(2**bits):
        mirrored = int(f"{i:0{bits}b}"[::-1], 2)
        t = length - 1 - (mirrored * length) // 2**bits
        if t not in order:
            order.append(t)
        if len(order) == min(count, length):
            break
    return order


def source_positions(t: int, length: int, causal: bool, max_distance: int | None) -> list[int]:
    """The sources s of target t: s <= t (causal) or all s, within max_distance of t if set."""
    reach = length if max_distance is None else max_distance
    return list(range(max(0, t - reach), (t + 1) if causal else min(length, t + reach + 1)))


def is_causal(model: nn.Module, ids: torch.Tensor, pair: Pair) -> bool:
    """Whether b[t] ignores a[s > t]: perturb a at the last position, see if earlier b moves."""
    with torch.no_grad():
        before = run_sites(model, ids, [pair.b])[pair.b]

        def nudge(old: torch.Tensor) -> torch.Tensor:
            new = old.clone()
            new[:, -1] += 1.0
            return new

        with replace(model, pair.a, nudge):
            after = run_sites(model, ids, [pair.b])[pair.b]
    return bool(torch.equal(before[:, :-1], after[:, :-1]))


def distance_bin(distance: np.ndarray) -> np.ndarray:
    """Bin of |t - s|: 0 -> 0, 1 -> 1, 2 -> 2, 3-4 -> 3, 5-8 -> 4, ... (1 + ceil(log2 |d|))."""
    size = np.abs(distance)
    out = np.zeros(size.shape, dtype=np.int64)
    out[size > 0] = 1 + np.ceil(np.log2(size[size > 0])).astype(np.int64)
    return out


def bin_range(index: int) -> tuple[int, int]:
    """The distances [lo, hi] of a bin."""
    return (index, index) if index <= 2 else (2 ** (index - 2) + 1, 2 ** (index - 1))
