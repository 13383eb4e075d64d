"""Random orthogonal matrices for the changes of basis (`lth.basis`, `lth.rotation`)."""
from __future__ import annotations

import math

import torch


def haar_orthogonal(d: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-random (d, d) orthogonal matrix (QR of a Gaussian with R's diagonal signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def random_rotation_fixing_ones(
    d: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A Haar-random orthogonal (d, d) matrix Q with Q @ 1 = 1 (it commutes with LayerNorm's centring).

    Q = u u^T + U R U^T, where u = 1 / sqrt(d), U is an orthonormal basis of the complement of u
    and R is Haar on O(d-1) (QR of a Gaussian matrix with the signs of R's diagonal fixed).
    """
    u = torch.full((d, 1), 1.0 / math.sqrt(d), dtype=torch.float64)
    complement = torch.linalg.qr(
        torch.cat([u, torch.eye(d, dtype=torch.float64)[:, : d - 1]], 1)
    ).Q[:, 1:]
    r = haar_orthogonal(d - 1, generator)
    return (u @ u.T + complement @ r @ complement.T).to(dtype)
