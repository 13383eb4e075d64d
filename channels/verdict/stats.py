"""The statistics of the verdict: intervals over seeds, equivalence by TOST, and chance-corrected
similarities.

Seeds are the units: each test gives one number per init seed (runs of one seed with other data
orders are averaged first), and n seeds give a Student-t interval of the mean,

    mean +- t_{n-1, 1 - a/2} * sd / sqrt(n),

at 95% (a = 0.05) for effect claims and at 90% for equivalence: two one-sided tests (TOST,
Schuirmann 1987) at a = 0.05 each claim |mean| < margin exactly when the 90% interval lies inside
(-margin, margin). With one seed there is no interval (nan). A test whose effect also varies with
something drawn once per world, which the seeds do not resample (T1's original basis), adds that
variance v_once: mean +- t_{n-1, 1 - a/2} * sqrt(sd^2 / n + v_once).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float], level: float = 0.95, once: float = 0.0) -> tuple[float, float]:
    """Student-t interval of the mean of the finite values, `once` the variance of a part drawn once
    and not resampled by the seeds (module docstring); (nan, nan) for fewer than 2."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * math.sqrt(x.var(ddof=1) / x.size + once)
    return (float(x.mean() - half), float(x.mean() + half))


def tost_equivalent(values: Sequence[float], margin: float, once: float = 0.0) -> bool:
    """TOST at a = 0.05: the 90% t-interval of the mean lies inside (-margin, margin)."""
    lo, hi = t_interval(values, level=0.90, once=once)
    return bool(math.isfinite(lo) and -margin < lo and hi < margin)


def excess(value: float, chance: float) -> float:
    """(value - chance) / (1 - chance): 0 at chance, 1 at identity."""
    return float((value - chance) / (1.0 - chance)) if chance < 1 else 0.0


def hypergeometric_overlap(kept_a: int, kept_b: int, total: int, shared: int) -> dict[str, float]:
    """How far two masks' overlap exceeds that of independent random masks of the same counts.

    Under the null (b's kept entries a uniformly random subset of size kept_b), the shared count
    is hypergeometric: mean = ka kb / N, var = ka kb (N - ka)(N - kb) / (N^2 (N - 1)).
    Returns the z-score and the chance-corrected overlap (shared - mean) / (min(ka, kb) - mean):
    0 at chance, 1 when the smaller mask lies inside the other.
    """
    n = float(total)
    mean = kept_a * kept_b / n
    var = kept_a * kept_b * (n - kept_a) * (n - kept_b) / (n * n * (n - 1)) if n > 1 else 0.0
    room = min(kept_a, kept_b) - mean
    return {"shared": float(shared), "null_mean": mean,
            "z": (shared - mean) / math.sqrt(var) if var > 0 else math.nan,
            "excess": (shared - mean) / room if room > 0 else math.nan}


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial rate from k successes in n trials:
    the beta quantiles B(a/2; k, n - k + 1) and B(1 - a/2; k + 1, n - k); (nan, nan) for n = 0."""
    if n == 0:
        return (math.nan, math.nan)
    alpha = 1 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)
