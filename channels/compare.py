"""Compare channels: subspace angles and linear CKA (matrix comparisons: `channels.agreement`)."""

import numpy as np
import torch

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
