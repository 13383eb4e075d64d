"""Compare channels: subspace angles, linear CKA, and Jacobian versus covariance at one site."""

import numpy as np
import torch

from channels.metrics import DEFAULT_RTOL, as_spectrum, spectrum_metrics
from lth.errors import LTCError


def _as_matrix(x, what: str) -> np.ndarray:
    """A 2-D float64 numpy array (a 1-D vector becomes one column)."""
    values = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else x
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.size == 0:
        raise LTCError(f"{what} must be a non-empty 2-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise LTCError(f"{what} holds NaN or Inf")
    return values


def _basis_cosines(A, B) -> np.ndarray:
    """Cosines of the principal angles between the column spaces of A and B, descending."""
    a, b = _as_matrix(A, "first basis"), _as_matrix(B, "second basis")
    if a.shape[0] != b.shape[0]:
        raise LTCError(f"bases live in different spaces: {a.shape[0]} vs {b.shape[0]} rows")
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def principal_angles(A, B) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of A (d, k) and B (d, m).

    cos theta_i are the singular values of Q_A^T Q_B, with Q the orthonormal QR factors.
    min(k, m) angles; 0 = a shared direction, pi/2 = orthogonal.
    """
    return np.arccos(_basis_cosines(A, B))


def subspace_overlap(A, B) -> float:
    """Mean squared cosine of the principal angles: ||Q_A^T Q_B||_F^2 / min(k, m).

    1 for the same subspace, 0 for orthogonal ones, about max(k, m) / d for random subspaces
    of R^d (k / d when both have k columns).
    """
    return float(np.mean(_basis_cosines(A, B) ** 2))


def linear_cka(X, Y) -> float:
    """Linear CKA (Kornblith et al. 2019) between representations X (n, d1) and Y (n, d2).

    With columns centred: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). In [0, 1]; invariant to
    orthogonal transforms and isotropic scaling of either side. 0.0 if either side is constant.
    """
    x, y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise LTCError(f"CKA needs the same rows on both sides, got {x.shape[0]} and {y.shape[0]}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    scale = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / scale) if scale > 0 else 0.0


def jacobian_vs_covariance(
    jac_gram_eigs, jac_gram_vecs, cov_eigs, cov_vecs, k: int, rtol: float = DEFAULT_RTOL
) -> dict[str, float]:
    """Does the matrix of derivatives show the same channels as the covariance at one site?

    Both sides live in the same space (the site's width d): eigenvalues of the Jacobian Gram
    E[J^T J] and of the activation covariance, descending, and eigenvector columns for the top
    m >= k of them. Metrics are of the eigenvalues given: pass the full spectra where known,
    a truncated one shifts every p_i. Returns:
    - `jac/<metric>`, `cov/<metric>`: spectrum_metrics of each side, side by side;
    - `log_spectrum_corr`: Pearson correlation of log p_i^jac and log p_i^cov over the top-k
      ranks where both are above rtol of their largest (1 = same shape up to scale; 0.0 when
      either side is constant there or fewer than 2 ranks remain);
    - `log_spectrum_gap`: mean |log p_i^jac - log p_i^cov| over those ranks (0 = same shape;
      0.0 when there are none, e.g. an all-zero side);
    - `topk_overlap`: subspace_overlap of the top-k eigenvectors, and `topk_overlap_chance`
      = k / d, its expected value for random subspaces.
    """
    jac_lam, jac_vec = _descending_pairs(jac_gram_eigs, jac_gram_vecs, "Jacobian Gram")
    cov_lam, cov_vec = _descending_pairs(cov_eigs, cov_vecs, "covariance")
    dim = cov_vec.shape[0]
    if jac_vec.shape[0] != dim:
        raise LTCError(
            f"Jacobian Gram vectors have width {jac_vec.shape[0]} but the covariance has {dim}: "
            "compare them at the same site"
        )
    if not 1 <= k <= min(jac_vec.shape[1], cov_vec.shape[1]):
        raise LTCError(
            f"k={k} but only {jac_vec.shape[1]} Jacobian and {cov_vec.shape[1]} covariance "
            "eigenvectors were given"
        )
    result = {f"jac/{key}": value for key, value in spectrum_metrics(jac_lam, k, rtol).items()}
    result |= {f"cov/{key}": value for key, value in spectrum_metrics(cov_lam, k, rtol).items()}
    result |= _shape_agreement(jac_lam, cov_lam, k, rtol)
    result["topk_overlap"] = subspace_overlap(jac_vec[:, :k], cov_vec[:, :k])
    result["topk_overlap_chance"] = k / dim
    return result


def _descending_pairs(eigs, vecs, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum (clipped at 0) and the top eigenvector columns, checked for consistency."""
    values = _as_matrix(eigs, f"{what} eigenvalues")
    vectors = _as_matrix(vecs, f"{what} eigenvectors")
    if values.shape[1] != 1 or np.any(np.diff(values[:, 0]) > 0):
        raise LTCError(f"{what} eigenvalues must be 1-D and descending (as eigh here returns them)")
    if vectors.shape[1] > values.shape[0]:
        raise LTCError(f"{values.shape[0]} {what} eigenvalues but {vectors.shape[1]} eigenvectors")
    return as_spectrum(values[:, 0]), vectors


def _shape_agreement(jac: np.ndarray, cov: np.ndarray, k: int, rtol: float) -> dict[str, float]:
    """Correlation and mean gap of log p_i on both sides over the comparable top-k ranks."""
    top_jac, top_cov = jac[:k], cov[:k]
    both = (top_jac > rtol * jac[0]) & (top_cov > rtol * cov[0])  # none if a side is all zero
    a = np.log(top_jac[both] / jac.sum())
    b = np.log(top_cov[both] / cov.sum())
    gap = float(np.abs(a - b).mean()) if a.size else 0.0
    comparable = a.size >= 2 and a.std() > 0 and b.std() > 0
    corr = float(np.corrcoef(a, b)[0, 1]) if comparable else 0.0
    return {"log_spectrum_corr": corr, "log_spectrum_gap": gap}
