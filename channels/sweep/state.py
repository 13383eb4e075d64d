"""A sweep's running totals: one shard's finished items and its sums, and the covariance at every site.

Per pair (by slug) a shard keeps, in float64, sums and counts of
- `gram/<side>/<part>`: J^T J (side `in`, d_a x d_a) and J J^T (side `out`, d_b x d_b) over the
  blocks with s = t (`self`) and s != t (`cross`);
- `prop/<part>`: the propagated covariance sum_s J(t, s) Cov(a) J(t, s)^T per target, the s = t
  term and the s != t terms apart (first order, positions taken as independent);
- `lens`: the self block J(t, t) over targets t >= lens_skip_first (the Jacobian lens).
The covariance at every site is computed once, before any item (the propagated covariance needs
Cov(a)), and stored apart from the shards: every shard computes the same one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from channels.covariance import StreamingCovariance
from channels.sweep.plan import Pair
from lth.errors import LTCError

SIDES = ("in", "out")
PARTS = ("self", "cross")


class Mean:
    """A float64 running sum of matrices and how many were added; mergeable."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | None = None) -> None:
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, total: torch.Tensor, count: int) -> None:
        self.total += total.to(self.total)
        self.count += count

    def merge(self, other: Mean) -> None:
        self.add(other.total, other.count)

    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)


def accumulator_shapes(pair: Pair, widths: dict[str, int]) -> dict[str, tuple[int, int]]:
    """The sums kept for one pair, by name (see the module docstring)."""
    d_a, d_b = widths[pair.a], widths[pair.b]
    shapes = {f"gram/in/{part}": (d_a, d_a) for part in PARTS}
    shapes |= {f"gram/out/{part}": (d_b, d_b) for part in PARTS}
    shapes |= {f"prop/{part}": (d_b, d_b) for part in PARTS}
    shapes["lens"] = (d_b, d_a)
    return shapes


class ShardState:
    """One shard's finished items and its sums per (pair slug, accumulator name)."""

    def __init__(
        self, pairs: list[Pair], widths: dict[str, int], device: torch.device | None = None
    ) -> None:
        self.items: list[tuple[int, int, int]] = []
        self.sums = {
            (p.slug, name): Mean(shape, device)
            for p in pairs
            for name, shape in accumulator_shapes(p, widths).items()
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"items": np.asarray(self.items, dtype=np.int64).reshape(-1, 3)}
        for (slug, name), acc in self.sums.items():
            out[f"{slug}/{name}/total"] = acc.total.cpu().numpy()
            out[f"{slug}/{name}/count"] = np.asarray(acc.count, dtype=np.int64)
        return out

    def load(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        try:
            self.items = [tuple(int(v) for v in row) for row in arrays["items"]]
            for (slug, name), acc in self.sums.items():
                total = torch.from_numpy(arrays[f"{slug}/{name}/total"])
                if total.shape != acc.total.shape:
                    raise RuntimeError(f"{slug}/{name} has shape {tuple(total.shape)}")
                acc.total = total.to(acc.total)
                acc.count = int(arrays[f"{slug}/{name}/count"])
        except (KeyError, RuntimeError) as exc:
            raise LTCError(
                f"{path} does not fit this sweep ({exc}): it belongs to other pairs or "
                "another model; use another --out or delete the file"
            ) from exc

    def merge(self, other: ShardState) -> None:
        self.items += other.items
        for key, acc in self.sums.items():
            acc.merge(other.sums[key])


def covariance_arrays(covs: dict[str, StreamingCovariance]) -> dict[str, np.ndarray]:
    """The covariance file's arrays: `<site>/<count|mean|m2>`."""
    return {
        f"{site}/{key}": value.cpu().numpy()
        for site, cov in covs.items()
        for key, value in cov.state_dict().items()
    }


def load_covariances(
    arrays: dict[str, np.ndarray], widths: dict[str, int], path: Path, device=None
) -> dict[str, StreamingCovariance]:
    """The covariance at every site from `covariance_arrays`, or one LTCError line."""
    covs = {}
    try:
        for site, width in widths.items():
            cov = StreamingCovariance(width, device, name=site)
            cov.load_state_dict(
                {k: torch.from_numpy(arrays[f"{site}/{k}"]) for k in ("count", "mean", "m2")}
            )
            covs[site] = cov
    except (KeyError, RuntimeError) as exc:
        raise LTCError(f"{path} does not fit this sweep ({exc}): delete it and re-run") from exc
    return covs
