"""Do two matrices tell the same story? Comparisons of a measured and a predicted matrix that can fail.

For symmetric PSD matrices M (measured) and P (predicted) of one width d, with eigenvalues
mu_i, pi_i (descending) and p_i = mu_i / sum mu, q_i = pi_i / sum pi:
- `relative_frobenius` = ||P - M||_F / ||M||_F (0: equal; 1: P = 0), and `relative_frobenius_scaled`
  = min_c ||c P - M||_F / ||M||_F = sqrt(1 - cos^2) (the same, blind to an overall scale);
- `matrix_cosine` cos = <M, P>_F / (||M||_F ||P||_F), against its null over random matrices
  of P's spectrum, Q P Q^T with Q Haar-random: `matrix_cosine_null_mean`, `_null_q95` and the
  p-value (1 + #{null >= cos}) / (1 + n_null). Beating the null says the eigenvectors agree
  beyond what the spectra alone give;
- `topk_overlap`: subspace_overlap of the top-k eigenvectors, chance k / d;
- `spectrum_tv` = (1/2) sum_i |p_i - q_i|, the distance between the spectra's shapes (0: same
  shape up to scale; the rotation null leaves it unchanged, so it judges shape, the cosine
  judges directions);
- `agrees`: 1.0 when the cosine beats its null (p <= ALPHA) and the top-k overlap is at least
  MIN_OVERLAP, else 0.0 (`reading` turns it into words).

`jacobian_vs_covariance` applies them at one site: the Jacobian Gram E[J^T J] (sensitivity)
and the whitened Gram Cov(a)^(1/2) E[J^T J] Cov(a)^(1/2) (the variance b receives from a, by
direction) against the covariance Cov(a).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from channels.compare import subspace_overlap
from channels.metrics import DEFAULT_RTOL, as_spectrum, eigh_desc, spectrum_metrics
from lth.errors import LTCError

ALPHA = 0.05
MIN_OVERLAP = 0.5
N_NULL = 32


def _symmetric(x, what: str) -> np.ndarray:
    values = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise LTCError(f"{what} must be a square matrix, got shape {values.shape}")
    return (values + values.T) / 2


@lru_cache(maxsize=2)
def _haar_squares(d: int, n: int, seed: int) -> np.ndarray:
    """R_ij^2 of n Haar-random (d, d) orthogonal R (float32): the same draws serve every
    measurement of one width (the SpectraCallback measures many), so they are drawn once.

    R = Q of the QR of a Gaussian matrix; the sign fix of Q's columns that makes it Haar
    leaves the squares unchanged, so it is not applied."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d, d), dtype=np.float32)
    for i in range(n):
        out[i] = np.linalg.qr(rng.standard_normal((d, d)))[0] ** 2
    return out


def rotation_null(mu: np.ndarray, predicted_eigs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """cos(M, Q P Q^T) for n Haar-random Q: P's spectrum with random eigenvectors.

    `mu` and `predicted_eigs` are the eigenvalues of M and P, descending (`eigh_desc`). In M's
    eigenbasis, <M, Q P Q^T> = sum_ij mu_i pi_j R_ij^2 with R Haar-orthogonal.
    """
    norm = np.linalg.norm(mu) * np.linalg.norm(predicted_eigs)
    if norm == 0:
        return np.zeros(n)
    return np.einsum("i,nij,j->n", mu, _haar_squares(len(mu), n, seed), predicted_eigs) / norm


def matrix_agreement(measured, predicted, k: int, n_null: int = N_NULL, seed: int = 0) -> dict:
    """The comparisons of the module docstring of M = `measured` against P = `predicted`."""
    m, p = _symmetric(measured, "measured"), _symmetric(predicted, "predicted")
    if m.shape != p.shape:
        raise LTCError(f"matrices of different widths: {m.shape} and {p.shape}")
    dim = m.shape[0]
    k = max(1, min(k, dim))
    mu, m_vec = eigh_desc(m)
    pi, p_vec = eigh_desc(p)
    norm_m, norm_p = np.linalg.norm(m), np.linalg.norm(p)
    cos = float(np.sum(m * p) / (norm_m * norm_p)) if norm_m > 0 and norm_p > 0 else 0.0
    null = rotation_null(mu, pi, n_null, seed)
    p_value = float((1 + np.sum(null >= cos)) / (1 + n_null))
    overlap = subspace_overlap(m_vec[:, :k], p_vec[:, :k])
    shares_m = as_spectrum(mu) / mu.sum() if mu.sum() > 0 else mu
    shares_p = as_spectrum(pi) / pi.sum() if pi.sum() > 0 else pi
    agree = p_value <= ALPHA and overlap >= MIN_OVERLAP
    return {
        "k": k,
        "relative_frobenius": float(np.linalg.norm(p - m) / norm_m) if norm_m > 0 else 0.0,
        "relative_frobenius_scaled": float(np.sqrt(max(0.0, 1 - cos**2))),
        "matrix_cosine": cos,
        "matrix_cosine_null_mean": float(null.mean()),
        "matrix_cosine_null_q95": float(np.quantile(null, 0.95)),
        "matrix_cosine_p": p_value,
        "topk_overlap": overlap,
        "topk_overlap_chance": k / dim,
        "spectrum_tv": float(0.5 * np.abs(shares_m - shares_p).sum()),
        "agrees": float(agree),
    }


def reading(result: dict) -> str:
    """`agree` or `disagree` from a `matrix_agreement` result."""
    return "agree" if result["agrees"] else "disagree"


def whitened_gram(gram, cov) -> np.ndarray:
    """Cov(a)^(1/2) E[J^T J] Cov(a)^(1/2): the output variance E||J x||^2 of x ~ Cov(a), by direction.

    Its trace is E||J x||^2; it matches Cov(a) in shape and directions when J passes every
    direction alike, and loses a high-variance direction that J ignores.
    """
    c = _symmetric(cov, "covariance")
    values, vectors = np.linalg.eigh(c)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    return root @ _symmetric(gram, "Jacobian Gram") @ root


def jacobian_vs_covariance(gram, cov, k: int, rtol: float = DEFAULT_RTOL, seed: int = 0) -> dict:
    """Does the matrix of derivatives show the same channels as the covariance at site a?

    `gram` = E[J^T J] and `cov` = Cov(a), both (d_a, d_a). Returns `jac/<metric>` and
    `cov/<metric>` (the registry's metrics of each spectrum), `sensitivity/<comparison>`
    (`matrix_agreement` of the Gram itself against Cov(a): sensitivity against variance
    directions, where a high-variance direction that b ignores counts as disagreement), and
    `whitened/<comparison>` (the whitened Gram against Cov(a)).
    """
    g, c = _symmetric(gram, "Jacobian Gram"), _symmetric(cov, "covariance")
    if g.shape != c.shape:
        raise LTCError(
            f"Jacobian Gram has width {g.shape[0]} but the covariance has {c.shape[0]}: "
            "compare them at the same site"
        )
    result = {f"jac/{key}": v for key, v in spectrum_metrics(np.linalg.eigvalsh(g), k, rtol).items()}
    result |= {f"cov/{key}": v for key, v in spectrum_metrics(np.linalg.eigvalsh(c), k, rtol).items()}
    for name, predicted in (("sensitivity", g), ("whitened", whitened_gram(g, c))):
        agreement = matrix_agreement(c, predicted, k, seed=seed)
        result |= {f"{name}/{key}": value for key, value in agreement.items()}
    return result
