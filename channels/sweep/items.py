"""One item of a Jacobian sweep, exact or sketched: its file's arrays and its share of the sums.

Both methods run the forward and backward passes on the first t + 1 positions only when the
pair is causal (b[t] cannot see later positions), and return
- arrays for the item file: `sources`, `singular_values` (exact: the top `keep_singular_values`
  or all; sketch: the top `sketch_topk` at `sketch_topk_offsets`, NaN elsewhere), `metrics`
  (the registry's `METRIC_NAMES` per block; the sketch fills what it estimates, NaN elsewhere),
  `metric_se` (sketch: standard errors where it has them), `seconds` (Jacobian or sketch,
  spectra, sums), and for the exact method the full spectra of J(t, t) and J(t, t - 2);
- the item's contribution to every sum of `channels.sweep.state` (name -> (total, count)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from channels import sketch
from channels.jacobian import iter_sequence_jacobian
from channels.metrics import METRIC_NAMES, metric_table, stable_rank_of
from channels.sweep.plan import Pair, SweepSettings
from lth.seeds import derive_seed

SOURCE_CHUNK = 64  # blocks per SVD / Gram update call: bounds the working memory
FOUNDING = {"s_eq_t": 0, "s_eq_t_minus_2": 2}  # the founding plots: name -> offset t - s


@dataclass
class ItemInput:
    """What one item needs: the model, one context's ids (T,), the pair, t and its sources."""

    model: nn.Module
    ids: torch.Tensor
    pair: Pair
    context: int
    target: int
    sources: list[int]
    causal: bool
    settings: SweepSettings
    chunk_size: int
    cov_a: torch.Tensor  # Cov(a), float64 (d_a, d_a)
    width_b: int

    @property
    def window(self) -> torch.Tensor:
        """(1, L) ids the passes need: the first t + 1 positions when causal."""
        return self.ids[None, : self.target + 1] if self.causal else self.ids[None]

    @property
    def here(self) -> int:
        return self.sources.index(self.target)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings are the work's own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _split(blocks: torch.Tensor, here: int) -> dict[str, list[torch.Tensor]]:
    """The s = t block and the s != t blocks (slices, not copies) along dim 0 or 1."""
    return {"self": [blocks[here : here + 1]], "cross": [blocks[:here], blocks[here + 1 :]]}


def exact_item(job: ItemInput) -> tuple[dict[str, np.ndarray], dict]:
    """Every block J(t, s) from d_b VJPs, its singular values and metrics, and exact sums."""
    device = job.ids.device
    start = time.perf_counter()
    ((_, jacobian),) = iter_sequence_jacobian(
        job.model, job.window, job.pair.a, job.pair.b, targets=[job.target],
        sources=job.sources, chunk_size=job.chunk_size,
    )
    sync(device)
    middle = time.perf_counter()
    sigma = torch.cat([torch.linalg.svdvals(c) for c in jacobian.split(SOURCE_CHUNK)]).cpu().numpy()
    measured = metric_table(sigma.astype(np.float64) ** 2, job.settings.sketch_topk, job.settings.rtol)
    spectra_end = time.perf_counter()
    cov = job.cov_a.to(device)
    sums: dict[str, list] = {}
    for part, pieces in _split(jacobian, job.here).items():
        gram_in = gram_out = prop = 0.0
        count = 0
        for chunk in (c.double() for piece in pieces for c in piece.split(SOURCE_CHUNK)):
            if len(chunk) == 0:
                continue
            gram_in = gram_in + torch.einsum("sij,sik->jk", chunk, chunk)
            gram_out = gram_out + torch.einsum("sij,skj->ik", chunk, chunk)
            pushed = chunk @ cov
            prop = prop + torch.einsum("sij,skj->ik", pushed, chunk)
            count += len(chunk)
        if count:
            sums[f"gram/in/{part}"] = (gram_in, count)
            sums[f"gram/out/{part}"] = (gram_out, count)
            sums[f"prop/{part}"] = (prop, 1)
    if job.target >= job.settings.lens_skip_first:
        sums["lens"] = (jacobian[job.here].double(), 1)
    sync(device)
    out = {
        "sources": np.asarray(job.sources, dtype=np.int64),
        "singular_values": sigma[:, : job.settings.keep_singular_values].astype(np.float32),
        "metrics": measured,
        "seconds": np.asarray(
            [middle - start, spectra_end - middle, time.perf_counter() - spectra_end]
        ),
    }
    for name, offset in FOUNDING.items():
        if job.target - offset in job.sources:
            out[f"full/{name}"] = sigma[job.sources.index(job.target - offset)].astype(np.float32)
    return out, sums


def sketch_item(job: ItemInput) -> tuple[dict[str, np.ndarray], dict]:
    """Moments of every block from `sketch_size` random VJPs, top-k at the chosen offsets."""
    s = job.settings
    device = job.ids.device
    start = time.perf_counter()
    seed = derive_seed("sketch", job.pair.name, job.context, job.target)
    window = job.window
    y, cotangents, mom = sketch.sized_sketch(
        job.model, window, job.pair.a, job.pair.b, job.target, job.sources, job.width_b, s.sketch_size,
        s.sketch_max_size, s.sketch_pr_rel_se, job.chunk_size, seed, s.sketch_probes,
    )
    frame = sketch.frame_width(s.sketch_probes, job.width_b)
    sync(device)
    middle = time.perf_counter()
    names = list(METRIC_NAMES)
    n = len(job.sources)
    metrics = np.full((n, len(names)), np.nan)
    metric_se = np.full((n, len(names)), np.nan)
    for name, value, se in (
        ("frobenius_sq", mom.frobenius_sq, mom.frobenius_sq_se),
        ("participation_ratio", mom.participation_ratio, mom.participation_ratio_se),
    ):
        metrics[:, names.index(name)] = value
        metric_se[:, names.index(name)] = se
    singular = np.full((n, s.sketch_topk), np.nan, dtype=np.float32)
    steps = np.zeros(n, dtype=np.int64)
    rows = [job.sources.index(job.target - o) for o in s.sketch_topk_offsets if job.target - o in job.sources]
    if rows:
        start_rows = [y[: s.krylov_block, row] for row in rows]  # J(t, s)^T u: a free first half-step
        found = sketch.blocks_topk(
            job.model, window, job.pair.a, job.pair.b, job.target, [job.sources[r] for r in rows], s.sketch_topk,
            s.krylov_block, s.krylov_iters, s.krylov_tol, job.chunk_size, seed + 1, job.causal, start_rows,
        )
        for row, (top, taken) in zip(rows, found):
            singular[row, : len(top)] = top
            steps[row] = taken
            lam, total = top.astype(np.float64) ** 2, mom.frobenius_sq[row]
            metrics[row, names.index("sigma_max")] = top[0]
            metrics[row, names.index("stable_rank")] = stable_rank_of(total, lam[0])
            metrics[row, names.index("top1_share")] = lam[0] / total if total > 0 else 0.0
            metrics[row, names.index("topk_share")] = lam.sum() / total if total > 0 else 0.0
    spectra_end = time.perf_counter()
    sums = {}
    cov = job.cov_a.to(device)
    for part, pieces in _split(y.transpose(0, 1), job.here).items():  # split along sources
        blocks = torch.cat(pieces).transpose(0, 1)  # (m, n_part, d_a)
        if blocks.shape[1] == 0:
            continue
        sums[f"gram/in/{part}"] = (sketch.input_gram_sum(blocks), blocks.shape[1])
        sums[f"gram/out/{part}"] = (sketch.sandwich_sum(blocks, cotangents, frame=frame), blocks.shape[1])
        sums[f"prop/{part}"] = (sketch.sandwich_sum(blocks, cotangents, cov, frame), 1)
    if job.target >= s.lens_skip_first:
        sums["lens"] = (sketch.block_estimate(y[:, job.here], cotangents), 1)
    sync(device)
    out = {
        "sources": np.asarray(job.sources, dtype=np.int64),
        "singular_values": singular,
        "metrics": metrics,
        "metric_se": metric_se,
        "sketch_size": np.asarray(len(cotangents)),
        "krylov_steps": steps,
        "seconds": np.asarray(
            [middle - start, spectra_end - middle, time.perf_counter() - spectra_end]
        ),
    }
    return out, sums


ITEM_METHODS = {"exact": exact_item, "sketch": sketch_item}
