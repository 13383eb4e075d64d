"""Shape metrics of a spectrum: how many channels carry the signal, and how unevenly.

Input: eigenvalues lambda_i >= 0 (of a covariance or a Jacobian Gram, or squared singular
values), numpy or torch, any order. Tiny negatives from round-off are clipped to 0 and the
spectrum is sorted descending. Throughout, p_i = lambda_i / sum_j lambda_j.

An all-zero spectrum (a dead site) has no channels: every metric returns 0.0, never NaN.
"""

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
    squares = (lam**2).sum()
    return float(lam.sum() ** 2 / squares) if squares > 0 else 0.0


def stable_rank(eigs) -> float:
    """sum_i lambda_i / max_i lambda_i (= ||A||_F^2 / ||A||_2^2 for singular values s_i^2)."""
    lam = as_spectrum(eigs)
    return float(lam.sum() / lam[0]) if lam[0] > 0 else 0.0


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


def spectrum_metrics(eigs, k: int = 10, rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """All metrics of one spectrum under stable key names (used for logging and reports)."""
    lam = as_spectrum(eigs)
    return {
        "effective_rank": entropy_effective_rank(lam),
        "participation_ratio": participation_ratio(lam),
        "stable_rank": stable_rank(lam),
        "numerical_rank": float(numerical_rank(lam, rtol)),
        "top1_share": top_share(lam, 1),
        "topk_share": top_share(lam, k),
        "tail_slope": power_law_slope(lam, rtol=rtol),
    }
