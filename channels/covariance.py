"""Streaming centred covariance of activation rows, in float64 and O(d^2) memory.

Rows are samples, tokens or conv positions. Each batch is reduced to its count, mean and
centred scatter M2 = sum (x - mean)(x - mean)^T, then merged into the running totals with
the pairwise update of Chan, Golub & LeVeque (1979):

    n = n_a + n_b,   delta = mean_b - mean_a,
    mean = mean_a + delta * n_b / n,
    M2 = M2_a + M2_b + delta delta^T * n_a n_b / n.

Raw X^T X is never accumulated, so a large mean does not cancel away the variance.
"""

import torch
import torch.distributed as dist
from torch import Tensor

from lth.errors import LTCError

# Rows per internal chunk are chosen so one float64 working copy holds about this many values
# (32 MiB): the memory of an update stays bounded whatever the size of the batch handed in.
_CHUNK_VALUES = 1 << 22


def rows_from_activation(x: Tensor, channel_dim: int | None = None) -> Tensor:
    """Reshape an activation into rows of its channels, shape (rows, channels).

    channel_dim=None: the last axis holds the features, every other axis indexes rows
    ((batch, d) samples, (batch, tokens, d) tokens). channel_dim=1 for conv feature maps
    (B, C, H, W): C channels, one row per batch element and position.
    """
    if x.ndim == 0:
        raise LTCError("activation is a scalar; expected a tensor with a feature axis")
    if channel_dim is not None:
        x = x.movedim(channel_dim, -1)
    return x.reshape(-1, x.shape[-1])


class StreamingCovariance:
    """Running count, mean and centred scatter of d-dimensional rows (float64)."""

    def __init__(
        self, dim: int, device: torch.device | str | None = None, name: str = "activation"
    ):
        if dim < 1:
            raise LTCError(f"covariance at site '{name}' needs dim >= 1, got {dim}")
        self.dim = dim
        self.name = name
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=self.device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=self.device)

    def update(self, x: Tensor, step: int | None = None) -> None:
        """Add the rows of x, shape (..., dim); `step` only labels errors."""
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise LTCError(
                f"covariance at site '{self.name}' expects rows of width {self.dim}, "
                f"got a tensor of shape {tuple(x.shape)}; use rows_from_activation for conv maps"
            )
        rows = x.detach().reshape(-1, self.dim)
        chunk = max(1, _CHUNK_VALUES // self.dim)
        for start in range(0, rows.shape[0], chunk):
            self._update_rows(rows[start : start + chunk], step)

    def _update_rows(self, rows: Tensor, step: int | None) -> None:
        centred = rows.to(device=self.device, dtype=torch.float64, copy=True)
        batch_mean = centred.mean(dim=0)
        # A sum is non-finite exactly when one of its terms is: an O(d) check instead of O(nd).
        if not torch.isfinite(batch_mean).all():
            where = f" at step {step}" if step is not None else ""
            raise LTCError(
                f"non-finite activations (NaN or Inf) at site '{self.name}'{where}; "
                "the spectrum would be meaningless: check the learning rate and the inputs"
            )
        centred -= batch_mean
        batch_m2 = centred.T @ centred
        self._combine(rows.shape[0], batch_mean, batch_m2)

    def _combine(self, n_b: int, mean_b: Tensor, m2_b: Tensor) -> None:
        if n_b == 0:
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b
        self.m2.addr_(delta, delta, alpha=n_a * n_b / n)
        self.count = n

    def merge(self, other: "StreamingCovariance") -> "StreamingCovariance":
        """Fold another accumulator's rows into this one (as if all were seen here)."""
        if other.dim != self.dim:
            raise LTCError(
                f"cannot merge covariance of width {other.dim} into '{self.name}' of width {self.dim}"
            )
        self._combine(other.count, other.mean.to(self.device), other.m2.to(self.device))
        return self

    def all_reduce(self, group=None) -> None:
        """Combine the accumulators of all processes; every rank ends with the global totals.

        Exact pairwise merge written as two sums: N = sum n_r, mean = sum n_r mean_r / N,
        M2 = sum [M2_r + n_r (mean_r - mean)(mean_r - mean)^T]. A no-op unless
        torch.distributed is initialised. Call it once, after the last update.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        on_nccl = dist.get_backend(group) == "nccl"
        wire = torch.device("cuda", torch.cuda.current_device()) if on_nccl else torch.device("cpu")
        first = torch.cat(
            [
                torch.tensor([float(self.count)], dtype=torch.float64),
                self.count * self.mean.cpu(),
            ]
        ).to(wire)
        dist.all_reduce(first, group=group)
        total = int(first[0].item())
        if total == 0:
            return
        mean = first[1:] / total
        offset = self.mean.to(wire) - mean
        second = self.m2.to(wire, copy=True)
        second.addr_(offset, offset, alpha=float(self.count))
        dist.all_reduce(second, group=group)
        self.count = total
        self.mean = mean.to(self.device)
        self.m2 = second.to(self.device)

    def covariance(self, unbiased: bool = True) -> Tensor:
        """The (d, d) float64 covariance: M2 / (n - 1), or M2 / n when unbiased=False."""
        needed = 2 if unbiased else 1
        if self.count < needed:
            raise LTCError(
                f"covariance at site '{self.name}' has seen {self.count} rows; it needs at least "
                f"{needed}: feed more probe data"
            )
        return self.m2 / (self.count - 1 if unbiased else self.count)

    def eigh(self, k: int | None = None, unbiased: bool = True) -> tuple[Tensor, Tensor]:
        """Eigenvalues in descending order and the matching eigenvectors as columns (top k)."""
        k = self.dim if k is None else k
        if not 1 <= k <= self.dim:
            raise LTCError(f"top-k for site '{self.name}' must be in 1..{self.dim}, got {k}")
        values, vectors = torch.linalg.eigh(self.covariance(unbiased))
        return values.flip(0)[:k], vectors.flip(1)[:, :k]

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors that restore this accumulator exactly (for resuming a measurement)."""
        return {
            "count": torch.tensor(self.count, dtype=torch.int64),
            "mean": self.mean.clone(),
            "m2": self.m2.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the totals saved by state_dict; the width must match."""
        if tuple(state["mean"].shape) != (self.dim,) or tuple(state["m2"].shape) != (self.dim,) * 2:
            raise LTCError(
                f"saved covariance for site '{self.name}' has width {state['mean'].shape[-1]}, "
                f"expected {self.dim}: the site or model changed since it was saved"
            )
        self.count = int(state["count"])
        self.mean = state["mean"].to(self.device, torch.float64).clone()
        self.m2 = state["m2"].to(self.device, torch.float64).clone()
