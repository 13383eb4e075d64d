"""Sketched sequence Jacobians: every block J(t, s) summarised from m << d_b random VJPs.

For one target t, m Gaussian cotangents u_1..u_m at position t (rows of U, E[u u^T] = I) give,
from one batch of VJPs, y_i(s) = J(t, s)^T u_i for every source s at once. With A = J J^T and
M_ij = y_i . y_j = u_i^T A u_j (independent u_i):

    ||J||_F^2     = tr A    ~ (1/m) sum_i M_ii                    (Hutchinson; unbiased)
    ||J J^T||_F^2 = tr A^2  ~ (1/(m(m-1))) sum_{i != j} M_ij^2     (independent pairs; unbiased)
    participation ratio     = (tr A)^2 / tr A^2                  (`participation_ratio_of`,
                              with (tr A)^2 estimated without bias as f_1^2 - se_1^2; the
                              ratio's own bias is O(1/m), under 1% at m = 64 on the spectra tried)

Standard errors: sd(M_ii) / sqrt(m) for the trace; for the pair statistic the Hoeffding
variance 4 var(h_i) / m + 2 var(M_ij^2) / (m (m - 1)), h_i the mean of M_ij^2 over j != i; the
ratio's by the delete-one-cotangent jackknife, se^2 = (m - 1)/m sum_i (PR_(-i) - mean PR_(-i))^2
with PR_(-i) = f_1(-i)^2 / f_2(-i) from the other m - 1 cotangents (O(m) per source from the row
sums of M_ij^2). The jackknife keeps the positive correlation of numerator and denominator; the
delta method without it overstated the error about twice on high-rank spectra (measured on
synthetic spectra of participation ratio 350-700 in d = 768: jackknife 1.35x the true spread).
The same VJPs give unbiased matrices: E[J^T J] ~ (1/m) sum_i y_i y_i^T; J ~ (1/m) U^T Y (the
token-averaged J of the lens); and with the cotangents split into independent halves, J_1 and
J_2, E[J_1 X J_2^T] = J X J^T (the output-side Gram, X = I, and the propagated covariance,
X = Cov(a)), computed through the small m/2 x m/2 core Y_1 X Y_2^T summed over sources.
The relative error of the moments falls like 1/sqrt(m) (about 2/m for tr A^2 at large effective
rank), whatever the width: these are the numbers a sketch gives cheaply. The top-k singular
values of a block need products specific to that block; blocks at chosen offsets t - s get
them by block Krylov (`blocks_topk`: started from the sketch's own rows J^T u, stopped by its error
estimate, run on positions s..t only with the earlier ones cached), the others have none.
`moments` sizes nothing; the sweep (`channels.sweep.items.sketch_item`) adds cotangents until the
reported standard error of every block's participation ratio is small enough (`sized_sketch`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from channels.jacobian import batched_vjp, block_operators, cached_prefix, forward_with_graph, topk_singular_blocks
from channels.metrics import participation_ratio_of


class SketchMoments(NamedTuple):
    """Per-source estimates (arrays over s) of tr A, tr A^2, their ratio, and standard errors."""

    frobenius_sq: np.ndarray
    frobenius_sq_se: np.ndarray
    schatten4: np.ndarray
    schatten4_se: np.ndarray
    participation_ratio: np.ndarray
    participation_ratio_se: np.ndarray


def gaussian_cotangents(m: int, width: int, seed: int) -> Tensor:
    """m independent standard Gaussian rows (m, width), float64, drawn on the CPU from `seed`."""
    return torch.randn(m, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def vjp_sketch(
    model: nn.Module,
    ids: Tensor,
    site_a: str,
    site_b: str,
    t: int,
    cotangents: Tensor,
    chunk_size: int,
) -> Tensor:
    """Y[i, s] = J(t, s)^T u_i for every position s of `ids` (1, L): shape (m, L, d_a).

    One forward pass keeps the graph; the m cotangents go `chunk_size` per backward call.
    """
    a, b, act_a, act_b = forward_with_graph(model, ids, site_a, site_b)
    rows = []
    for part in cotangents.to(act_b).split(chunk_size):
        grads = act_b.new_zeros(len(part), *act_b.shape)
        grads[:, 0, t] = part
        rows.append(batched_vjp(act_b, act_a, grads, a, b, retain_graph=True)[:, 0])
    return torch.cat(rows)


def sized_sketch(
    model: nn.Module,
    ids: Tensor,
    site_a: str,
    site_b: str,
    t: int,
    sources: list[int],
    width: int,
    m: int,
    max_m: int,
    rel_se: float | None,
    chunk_size: int,
    seed: int,
) -> tuple[Tensor, Tensor, SketchMoments]:
    """(Y at `sources`, the cotangents, the moments) of at least `m` random VJPs at target t.

    While the largest relative standard error se(PR) / PR over the blocks exceeds `rel_se` (None:
    never), the sketch grows to m' = m (worst / rel_se)^2 cotangents (even, at most `max_m`): the
    error of a mean falls like 1/sqrt(m), so the worst block lands near `rel_se`. The cotangents are
    one seeded stream (the first m rows stay), so a grown sketch is the sketch of m' draws.
    """
    cotangents = gaussian_cotangents(m, width, seed)
    y = vjp_sketch(model, ids, site_a, site_b, t, cotangents, chunk_size)[:, sources]
    found = moments(y)
    while rel_se is not None and len(cotangents) < max_m:
        with np.errstate(divide="ignore", invalid="ignore"):
            worst = float(np.nanmax(found.participation_ratio_se / found.participation_ratio, initial=0.0))
        if worst <= rel_se:
            break
        grown = min(max_m, 2 * int(np.ceil(len(cotangents) * (worst / rel_se) ** 2 / 2)))
        more = gaussian_cotangents(grown, width, seed)[len(cotangents):]
        y = torch.cat([y, vjp_sketch(model, ids, site_a, site_b, t, more, chunk_size)[:, sources]])
        cotangents = torch.cat([cotangents, more])
        found = moments(y)
    return y, cotangents, found


def moments(sketch: Tensor) -> SketchMoments:
    """The estimates of the module docstring from Y of shape (m, n_sources, d_a)."""
    y = sketch.double()
    m = y.shape[0]
    gram = torch.einsum("isd,jsd->sij", y, y)  # (n_s, m, m): M_ij per source
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    trace = diag.mean(1)
    trace_se = diag.std(1) / m**0.5
    squares = gram**2 - torch.diag_embed(diag**2)
    per_row = squares.sum(2) / (m - 1)  # h_i
    schatten = per_row.mean(1)
    off = squares[:, ~torch.eye(m, dtype=torch.bool, device=y.device)]  # (n_s, m (m - 1))
    schatten_se = (4 * per_row.var(1) / m + 2 * off.var(1) / (m * (m - 1))) ** 0.5
    trace, trace_se = trace.cpu().numpy(), trace_se.cpu().numpy()
    schatten, schatten_se = schatten.cpu().numpy(), schatten_se.cpu().numpy()
    squared = np.sqrt(np.clip(trace**2 - trace_se**2, 0.0, None))  # (tr A)^2 unbiased
    ratio = np.array([participation_ratio_of(f, s) for f, s in zip(squared, schatten)])
    rows = squares.sum(2)  # sum_{j != i} M_ij^2
    leave_trace = (diag.sum(1, keepdim=True) - diag) / (m - 1)
    leave_pairs = (rows.sum(1, keepdim=True) - 2 * rows) / ((m - 1) * (m - 2))
    leave = leave_trace**2 / leave_pairs.clamp_min(torch.finfo(leave_pairs.dtype).tiny)
    ratio_se = ((m - 1) / m * ((leave - leave.mean(1, keepdim=True)) ** 2).sum(1)).sqrt().cpu().numpy()
    return SketchMoments(trace, trace_se, schatten, schatten_se, ratio, np.nan_to_num(ratio_se))


def input_gram_sum(sketch: Tensor) -> Tensor:
    """sum_s (1/m) sum_i y_i(s) y_i(s)^T: unbiased for sum_s J(t, s)^T J(t, s), (d_a, d_a) float64."""
    y = sketch.double()
    return torch.einsum("isd,ise->de", y, y) / y.shape[0]


def sandwich_sum(sketch: Tensor, cotangents: Tensor, middle: Tensor | None = None) -> Tensor:
    """Unbiased sum_s J(t, s) X J(t, s)^T (X = `middle`, identity if None), (d_b, d_b) float64.

    Split halves: J_h = (2/m) U_h^T Y_h(s); (J_1 X J_2^T + J_2 X J_1^T) / 2 summed over s, through
    the core K = sum_s Y_1(s) X Y_2(s)^T of size m/2 x m/2.
    """
    y, u = sketch.double(), cotangents.to(sketch.device).double()
    h = y.shape[0] // 2
    y1, y2 = y[:h], y[h : 2 * h]
    if middle is not None:
        y2 = y2 @ middle.to(y2)
    core = torch.einsum("isd,jsd->ij", y1, y2)
    estimate = u[:h].T @ core @ u[h : 2 * h] / h**2
    return (estimate + estimate.T) / 2


def block_estimate(sketch_at_s: Tensor, cotangents: Tensor) -> Tensor:
    """Unbiased J(t, s) ~ (1/m) U^T Y(s) from the rows at one source, (d_b, d_a) float64."""
    return cotangents.to(sketch_at_s.device).double().T @ sketch_at_s.double() / len(cotangents)


def blocks_topk(
    model: nn.Module,
    ids: Tensor,
    site_a: str,
    site_b: str,
    t: int,
    sources: list[int],
    k: int,
    block_size: int,
    max_steps: int,
    tol: float | None,
    chunk_size: int,
    seed: int,
    causal: bool,
    start: list[Tensor] | None = None,
) -> list[tuple[np.ndarray, int]]:
    """Top-k singular values (and power steps taken) of the blocks J(t, s), s in `sources`, by block
    Krylov on JVP/VJP products, every block's products in the same calls. In a causal model the
    products run on positions min(sources)..t only (`cached_prefix`); `start` (per block, rows
    J(t, s)^T u from the sketch's own VJPs) replaces the Gaussian start block."""
    first = min(sources) if causal else 0
    inputs = cached_prefix(model, ids[:, : t + 1] if causal else ids, first)
    ops = block_operators(model, inputs, site_a, site_b, target=t - first, sources=[s - first for s in sources],
                          chunk_size=chunk_size)
    dtype = next(model.parameters()).dtype
    found = topk_singular_blocks(ops, k, block_size, n_iter=max_steps, tol=tol, start=start, dtype=dtype,
                                 device=ids.device, seed=seed)
    return [(f.values.cpu().numpy(), f.steps) for f in found]
