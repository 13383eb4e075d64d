"""Shape metrics of a spectrum: how many channels carry the signal, and how unevenly.

Input: eigenvalues lambda_i >= 0 (of a covariance or a Jacobian Gram, or squared singular
values), numpy or torch, any order. Tiny negatives from round-off are clipped to 0 and the
spectrum is sorted descending. Throughout, p_i = lambda_i / sum_j lambda_j.

An all-zero spectrum (a dead site) has no channels: every metric returns 0.0, never NaN.

`METRICS` is the one registry of named metrics (name -> function of the descending spectrum, k
and rtol, its formula in the docstring): the SpectraCallback, `ltc spectra` and the Jacobian
sweep all report these names. Estimators that see only power sums of a spectrum (the sketch)
use `participation_ratio_of` and `stable_rank_of`, the same formulas. `eigh_desc` gives a
symmetric matrix's spectrum (and eigenvectors) in this module's order.
"""

from collections.abc import Callable

import numpy as np
import torch

from lth.errors import LTCError

DEFAULT_RTOL = 1e-3  # numerical rank counts eigenvalues above 0.1% of the largest


def as_spectrum(eigs) -> np.ndarray:
    """A 1-D float64 numpy spectrum, clipped at 0 and sorted descending."""
    values = eigs.detach().cpu().double().numpy() if isinstance(eigs, torch.Tensor) else eigs
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise LTCError(f"a spectrum must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise LTCError("spectrum holds NaN or Inf; the matrix it came from is not finite")
    return np.sort(np.clip(values, 0.0, None))[::-1]


def eigh_desc(matrix) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors as columns) of a symmetric matrix (numpy or torch), descending.

    float64 `np.linalg.eigh` (it reads the lower triangle); eigenvalues clipped at 0. Both are
    fresh contiguous arrays (torch.from_numpy refuses the reversed views).
    """
    values = matrix.detach().cpu().double().numpy() if isinstance(matrix, torch.Tensor) else matrix
    values, vectors = np.linalg.eigh(np.asarray(values, dtype=np.float64))
    return np.clip(values[::-1], 0.0, None).copy(), vectors[:, ::-1].copy()


def entropy_effective_rank(eigs) -> float:
    """exp(H), H = -sum_i p_i log p_i (Roy & Vetterli 2007); d for a flat spectrum, 1 for rank 1."""
    lam = as_spectrum(eigs)
    total = lam.sum()
    if total == 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(eigs) -> float:
    """(sum_i lambda_i)^2 / sum_i lambda_i^2 = 1 / sum_i p_i^2."""
    lam = as_spectrum(eigs)
    return participation_ratio_of(lam.sum(), (lam**2).sum())


def stable_rank(eigs) -> float:
    """sum_i lambda_i / max_i lambda_i (= ||A||_F^2 / ||A||_2^2 for singular values s_i^2)."""
    lam = as_spectrum(eigs)
    return stable_rank_of(lam.sum(), lam[0])


def numerical_rank(eigs, rtol: float = DEFAULT_RTOL) -> int:
    """#{i : lambda_i > rtol * max_j lambda_j}."""
    lam = as_spectrum(eigs)
    return int((lam > rtol * lam[0]).sum()) if lam[0] > 0 else 0


def top_share(eigs, k: int = 1) -> float:
    """sum_{i<=k} lambda_i / sum_i lambda_i, top-k eigenvalues; k beyond d counts all."""
    if k < 1:
        raise LTCError(f"top-k share needs k >= 1, got {k}")
    lam = as_spectrum(eigs)
    total = lam.sum()
    return float(lam[:k].sum() / total) if total > 0 else 0.0


def power_law_slope(
    eigs, first: int = 2, last: int | None = None, rtol: float = DEFAULT_RTOL
) -> float:
    """alpha of lambda_i ~ i^(-alpha): minus the least-squares slope of log lambda_i on log i.

    Fitted over ranks i = first..last (1-based, inclusive). Defaults: from rank 2 (the top
    eigenvalue is often a lone outlier) to rank ceil(d/2) (the bottom of a sampled spectrum
    is dominated by sampling noise), keeping only lambda_i > rtol * lambda_1 (log 0 is
    undefined). Positive for a decaying spectrum; 0.0 when fewer than 2 ranks remain.
    """
    lam = as_spectrum(eigs)
    last = -(-lam.size // 2) if last is None else last
    ranks = np.arange(1, lam.size + 1)
    keep = (ranks >= first) & (ranks <= last) & (lam > rtol * lam[0]) & (lam > 0)
    if keep.sum() < 2:
        return 0.0
    slope = np.polyfit(np.log(ranks[keep]), np.log(lam[keep]), deg=1)[0]
    return float(-slope)


def participation_ratio_of(total: float, squares: float) -> float:
    """(sum lambda)^2 / sum lambda^2 from the two power sums (estimated ones too, e.g. a sketch's)."""
    return float(total**2 / squares) if squares > 0 else 0.0


def stable_rank_of(total: float, top: float) -> float:
    """sum lambda / lambda_1 from the trace and the top eigenvalue."""
    return float(total / top) if top > 0 else 0.0


Metric = Callable[[np.ndarray, int, float], float]
METRICS: dict[str, Metric] = {}


def _metric(name: str) -> Callable[[Metric], Metric]:
    def register(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn

    return register


@_metric("effective_rank")
def _effective_rank(lam: np.ndarray, k: int, rtol: float) -> float:
    """exp(-sum p_i log p_i), the entropy effective rank."""
    return entropy_effective_rank(lam)


@_metric("participation_ratio")
def _participation_ratio(lam: np.ndarray, k: int, rtol: float) -> float:
    """(sum lambda)^2 / sum lambda^2."""
    return participation_ratio_of(lam.sum(), (lam**2).sum())


@_metric("stable_rank")
def _stable_rank(lam: np.ndarray, k: int, rtol: float) -> float:
    """sum lambda / lambda_1."""
    return stable_rank_of(lam.sum(), lam[0])


@_metric("numerical_rank")
def _numerical_rank(lam: np.ndarray, k: int, rtol: float) -> float:
    """#{lambda_i > rtol lambda_1}."""
    return float(numerical_rank(lam, rtol))


@_metric("top1_share")
def _top1_share(lam: np.ndarray, k: int, rtol: float) -> float:
    """lambda_1 / sum lambda."""
    return top_share(lam, 1)


@_metric("topk_share")
def _topk_share(lam: np.ndarray, k: int, rtol: float) -> float:
    """sum_{i<=k} lambda_i / sum lambda."""
    return top_share(lam, k)


@_metric("tail_slope")
def _tail_slope(lam: np.ndarray, k: int, rtol: float) -> float:
    """alpha of lambda_i ~ i^(-alpha) over ranks 2..d/2 (`power_law_slope`)."""
    return power_law_slope(lam, rtol=rtol)


@_metric("sigma_max")
def _sigma_max(lam: np.ndarray, k: int, rtol: float) -> float:
    """sqrt(lambda_1): the operator norm ||J||_2 when lambda_i = sigma_i(J)^2."""
    return float(np.sqrt(lam[0]))


@_metric("frobenius_sq")
def _frobenius_sq(lam: np.ndarray, k: int, rtol: float) -> float:
    """sum lambda: ||J||_F^2 when lambda_i = sigma_i(J)^2, the total variance of a covariance."""
    return float(lam.sum())


METRIC_NAMES = tuple(METRICS)


def spectrum_metrics(eigs, k: int = 10, rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """Every metric of the registry `METRICS` for one spectrum, by name (logging, reports, the sweep)."""
    lam = as_spectrum(eigs)
    return {name: fn(lam, k, rtol) for name, fn in METRICS.items()}


def metric_table(spectra, k: int = 10, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """`spectrum_metrics` of each row of `spectra` (n, d) as an array (n, len(METRIC_NAMES))."""
    rows = [list(spectrum_metrics(row, k, rtol).values()) for row in np.asarray(spectra)]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(METRIC_NAMES))
