"""Statistics the ticket tests share: bootstrap intervals over seeds and chance-corrected similarities.

Chance correction puts similarities of different kinds on one scale: excess = (s - c) / (1 - c),
0 at the value c two unrelated objects reach by chance, 1 at identity.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from channels.compare import linear_cka, subspace_overlap
from channels.metrics import as_spectrum, top_share


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Expanded-percentile bootstrap interval of the mean (Hesterberg 2015).

    Resample the n values with replacement `n_boot` times and take the alpha'/2 and 1 - alpha'/2
    quantiles of the resampled means, with alpha'/2 = Phi(-sqrt(n / (n - 1)) t_{n-1, 1 - alpha/2}).
    The widening makes up for the plain percentile interval's narrowness at small n; at n = 3
    the interval is about the range of the values. (nan, nan) for fewer than 2 finite values.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return (math.nan, math.nan)
    if np.ptp(x) == 0:
        return (float(x[0]), float(x[0]))
    alpha = 1.0 - level
    tail = stats.norm.sf(math.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha / 2, n - 1))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return (float(lo), float(hi))


def excess(value: float, chance: float) -> float:
    """(value - chance) / (1 - chance): 0 at chance, 1 at identity."""
    return float((value - chance) / (1.0 - chance)) if chance < 1 else 0.0


def channel_strength(eigs, k: int) -> float:
    """How much the top-k directions carry beyond a flat spectrum: excess(top-k share, k / d).

    0 for white noise, 1 when k directions carry everything.
    """
    lam = as_spectrum(eigs)
    return excess(top_share(lam, k), min(k, lam.size) / lam.size)


def overlap_excess(a: np.ndarray, b: np.ndarray) -> float:
    """Chance-corrected subspace overlap of two k-column bases of R^d: excess(overlap, k / d)."""
    k = min(a.shape[1], b.shape[1])
    return excess(subspace_overlap(a[:, :k], b[:, :k]), k / a.shape[0])


def weighted_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Weighted Jaccard of two non-negative weightings of the same entries: sum min / sum max.

    Each side is first scaled to sum 1, so it compares where two tickets put their weight mass.
    """
    a = a.detach().double().flatten().abs()
    b = b.detach().double().flatten().abs()
    if a.sum() == 0 or b.sum() == 0:
        return 0.0
    a, b = a / a.sum(), b / b.sum()
    return float(torch.minimum(a, b).sum() / torch.maximum(a, b).sum())


def weighted_iou_excess(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, n_perm: int = 5) -> float:
    """Weighted IoU of the masked magnitudes a, b beyond chance; chance = mean weighted IoU of a
    with b's entries shuffled within the tensor (random places, same values)."""
    flat_b = b.flatten()
    null = np.mean([weighted_iou(a, flat_b[torch.randperm(flat_b.numel(), generator=generator)])
                    for _ in range(n_perm)])
    return excess(weighted_iou(a, b), float(null))


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a AND b| / |a OR b| of two bool masks (1 when both keep nothing)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def iou_chance(density_a: float, density_b: float) -> float:
    """Expected IoU of independent random masks of these densities: da db / (da + db - da db)."""
    union = density_a + density_b - density_a * density_b
    return density_a * density_b / union if union > 0 else 1.0


def cka_excess(x: np.ndarray, y: np.ndarray, baseline: float) -> float:
    """Linear CKA of two representations of the same inputs beyond `baseline` (e.g. the CKA of
    the two untrained networks, what architecture and inputs alone give)."""
    return excess(linear_cka(x, y), baseline)


def mean_over(values: Mapping[str, float]) -> float:
    """Mean of the finite values (nan when none)."""
    finite = [v for v in values.values() if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
