"""Intervals on a sweep's per-distance metrics, and what a participation ratio says about channels.

`distance_intervals`: for each distance bin of t - s (s <= t; bins as `results.distance_bin`), the
median of a metric over the bin's blocks J(t, s) with a percentile interval from a two-level
bootstrap: contexts are drawn with replacement, then the (context, t) items within each drawn
context, and the bin's blocks of the drawn items are pooled. Contexts are the independent unit
(targets of one context share its tokens); with one context only the items are drawn. The
median is invariant to monotone changes of scale of the metric and to the order of blocks.

`channel_reading`: the seed question's three answers from a participation ratio PR of a width-d
block (PR = (sum lambda)^2 / sum lambda^2 of the squared singular values, 1 <= PR <= d):
`one big channel` when PR <= ONE_CHANNEL_PR (one direction carries most of ||J||_F^2: a rank-1
block has PR 1, two equal directions PR 2), `nearly full rank` when PR >= FULL_RANK_SHARE * d, else
`many medium channels`; read from the interval, so an interval across a boundary says both.
"""

from __future__ import annotations

import numpy as np

from channels.sweep.plan import bin_range, distance_bin

N_BOOT = 1000
LEVEL = 0.95
ONE_CHANNEL_PR = 2.0
FULL_RANK_SHARE = 0.5
READINGS = ("one big channel", "many medium channels", "nearly full rank")


def distance_intervals(context: np.ndarray, target: np.ndarray, distance: np.ndarray, values: np.ndarray,
                       n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> list[dict]:
    """Per bin of t - s >= 0: median of `values` over its blocks and its bootstrap interval.

    All arrays are per block (context, target, t - s, metric); NaN values are left out.
    """
    keep = (distance >= 0) & np.isfinite(values)
    context, target, distance, values = context[keep], target[keep], distance[keep], values[keep]
    bins = distance_bin(distance)
    items, item_of = np.unique(np.stack([context, target], 1), axis=0, return_inverse=True)
    item_of = item_of.reshape(-1)
    contexts = np.unique(items[:, 0])
    items_by_context = [np.flatnonzero(items[:, 0] == c) for c in contexts]
    rng = np.random.default_rng(seed)
    draws = []  # per bootstrap round: how often each item is drawn
    for _ in range(n_boot):
        counts = np.zeros(len(items), dtype=np.int64)
        for c in rng.integers(0, len(contexts), len(contexts)):
            own = items_by_context[c]
            np.add.at(counts, own[rng.integers(0, len(own), len(own))], 1)
        draws.append(counts)
    rows = []
    for index in np.unique(bins):
        chosen = bins == index
        v, owner = values[chosen], item_of[chosen]
        order = np.argsort(v)
        v, owner = v[order], owner[order]
        medians = np.array([_weighted_median(v, counts[owner]) for counts in draws])
        medians = medians[np.isfinite(medians)]
        tail = (1 - level) / 2
        rows.append({
            "distance": list(bin_range(int(index))),
            "n_blocks": int(chosen.sum()),
            "n_items": int(len(np.unique(owner))),
            "n_contexts": int(len(np.unique(items[np.unique(owner), 0]))),
            "median": float(np.median(v)),
            "lo": float(np.quantile(medians, tail)) if medians.size else float("nan"),
            "hi": float(np.quantile(medians, 1 - tail)) if medians.size else float("nan"),
        })
    return rows


def _weighted_median(sorted_values: np.ndarray, weights: np.ndarray) -> float:
    """The median of values repeated `weights` times (values sorted); NaN when every weight is 0."""
    cumulative = np.cumsum(weights)
    total = cumulative[-1]
    if total == 0:
        return float("nan")
    lower = sorted_values[np.searchsorted(cumulative, (total + 1) // 2)]  # the ceil(total/2)-th value
    upper = sorted_values[np.searchsorted(cumulative, total // 2 + 1)]
    return float(0.5 * (lower + upper))


def channel_reading(lo: float, hi: float, width: int) -> str:
    """The reading(s) of a participation-ratio interval [lo, hi] for a block of width `width`."""
    def one(pr: float) -> int:
        if pr <= ONE_CHANNEL_PR:
            return 0
        return 2 if pr >= FULL_RANK_SHARE * width else 1

    first, last = one(lo), one(hi)
    return READINGS[first] if first == last else f"between {READINGS[first]} and {READINGS[last]}"
