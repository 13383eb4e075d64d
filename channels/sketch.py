"""Sketched sequence Jacobians: every block J(t, s) summarised from m << d_b random VJPs.

For one target t, m random cotangents u_1..u_m at position t (rows of U, E[u u^T] = I) give,
from one batch of VJPs, y_i(s) = J(t, s)^T u_i for every source s at once. With A = J J^T
(d = d_b wide) and M_ij = y_i . y_j = u_i^T A u_j, the participation ratio is
(tr A)^2 / tr A^2 (`participation_ratio_of`, with (tr A)^2 estimated without bias as f_1^2 - se_1^2).

Probes (`PROBES`). `orthogonal` (the default): the rows of a Haar-random orthonormal frame scaled
by sqrt(d) (QR of a seeded Gaussian, m <= d), i.e. m of the d vectors of a random basis drawn
without replacement. Given the basis, tr A and tr A^2 = sum_kl a_kl^2 (a_kl = M_kl / d) are sums
over a finite population, so

    ||J||_F^2     = tr A    ~ (1/m) sum_i M_ii
    ||J J^T||_F^2 = tr A^2  ~ (1/d) (1/m) sum_i M_ii^2 + ((d - 1)/d) (1/(m(m-1))) sum_{i != j} M_ij^2

are unbiased, exact at m = d, and every variance carries the finite-population factor 1 - m/d.
`gaussian`: independent N(0, I) rows, the same formulas with 1/d -> 0 (Hutchinson; the pair
statistic over independent pairs) and no factor. The frame removes the chi-square spread of
the probes' norms and their chance overlaps: on random GPT-2 blocks its worst-block error of the
participation ratio is below the Gaussian one at the same m (`ltc bench --cases '[jacobian_sketch]'`).

Standard errors, with f = 1 - m/d (orthogonal) or 1 (gaussian): f sd(M_ii)^2 / m for the trace;
for the pair statistic f times the Hoeffding variance 4 var(h_i) / m + 2 var(M_ij^2) / (m (m - 1)),
h_i the mean of M_ij^2 over j != i; the ratio's by the delete-one-cotangent jackknife,
se^2 = f (m - 1)/m sum_i (PR_(-i) - mean PR_(-i))^2 with PR_(-i) = f_1(-i)^2 / f_2(-i) from the
other m - 1 cotangents (O(m) per source from the row sums of M_ij^2; f is the usual correction
of the jackknife for sampling without replacement). The jackknife keeps the positive
correlation of numerator and denominator; the delta method without it overstated the error
about twice on high-rank spectra. Since se^2 ~ f / m = 1/m - 1/d, the sweep sizes m from it
(`sized_sketch`): m' = 1 / (1/d + (rel_se / worst)^2 (1/m - 1/d)).
The same VJPs give unbiased matrices: E[J^T J] ~ (1/m) sum_i y_i y_i^T; J ~ (1/m) U^T Y (the
token-averaged J of the lens); and with the cotangents split into halves, J_1 X J_2^T estimates
B = J X J^T (the output-side Gram, X = I, and the propagated covariance, X = Cov(a)), computed
through the small m/2 x m/2 core Y_1 X Y_2^T summed over sources (independent Gaussian halves:
E = B; one orthonormal frame: E = c (B - (tr B / d) I), c = d^2 / ((d - 1)(d + 2)), undone in
`sandwich_sum`). The top-k singular values of a block need products specific to that block;
blocks at chosen offsets t - s get them by block Krylov (`blocks_topk`: started from the sketch's
own rows J^T u, stopped by its error estimate, run on positions s..t only with the earlier ones
cached), the others have none. `moments` sizes nothing; the sweep
(`channels.sweep.items.sketch_item`) adds cotangents until the reported standard error of every
block's participation ratio is small enough (`sized_sketch`).
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


PROBES = ("orthogonal", "gaussian")


def gaussian_cotangents(m: int, width: int, seed: int) -> Tensor:
    """m independent standard Gaussian rows (m, width), float64, drawn on the CPU from `seed`."""
    return torch.randn(m, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal_cotangents(m: int, width: int, seed: int) -> Tensor:
    """m <= width rows of a Haar-random orthonormal frame scaled by sqrt(width), (m, width) float64.

    Gram-Schmidt (QR, signs fixed by diag R) of the seeded Gaussian rows: row i depends on the first
    i + 1 Gaussian rows only, so the first m rows of a longer draw are the m-row draw.
    """
    if m > width:
        raise ValueError(f"an orthonormal frame has at most width = {width} rows, asked for {m}")
    q, r = torch.linalg.qr(gaussian_cotangents(m, width, seed).T)
    return (q * torch.sign(torch.diagonal(r))).T * width**0.5


def probe_cotangents(probes: str, m: int, width: int, seed: int) -> Tensor:
    """The m cotangents of the named kind (`PROBES`)."""
    draw = {"orthogonal": orthogonal_cotangents, "gaussian": gaussian_cotangents}[probes]
    return draw(m, width, seed)


def frame_width(probes: str, width: int) -> int | None:
    """The d of the finite-population formulas for `probes` (None: independent probes)."""
    return width if probes == "orthogonal" else None


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
    probes: str = "orthogonal",
) -> tuple[Tensor, Tensor, SketchMoments]:
    """(Y at `sources`, the cotangents, the moments) of at least `m` random VJPs at target t.

    While the largest relative standard error se(PR) / PR over the blocks exceeds `rel_se` (None:
    never), the sketch grows to m' = 1 / (1/d + (rel_se / worst)^2 (1/m - 1/d)) cotangents (even,
    at most `max_m`; 1/d = 0 for Gaussian probes, where this is m (worst / rel_se)^2): the variance
    falls like 1/m - 1/d, so the worst block lands near `rel_se`. Orthogonal probes stop at m = d,
    where the moments are exact. The cotangents are one seeded stream (the first m rows stay), so
    a grown sketch is the sketch of m' draws.
    """
    frame = frame_width(probes, width)
    if frame is not None:
        m, max_m = min(m, frame), min(max_m, frame)
    inv_d = 0.0 if frame is None else 1.0 / frame
    cotangents = probe_cotangents(probes, m, width, seed)
    y = vjp_sketch(model, ids, site_a, site_b, t, cotangents, chunk_size)[:, sources]
    found = moments(y, frame)
    while rel_se is not None and len(cotangents) < max_m:
        with np.errstate(divide="ignore", invalid="ignore"):
            worst = float(np.nanmax(found.participation_ratio_se / found.participation_ratio, initial=0.0))
        if worst <= rel_se:
            break
        wanted = 1.0 / (inv_d + (rel_se / worst) ** 2 * (1.0 / len(cotangents) - inv_d))
        grown = min(max_m, 2 * int(np.ceil(wanted / 2)))
        more = probe_cotangents(probes, grown, width, seed)[len(cotangents):]
        y = torch.cat([y, vjp_sketch(model, ids, site_a, site_b, t, more, chunk_size)[:, sources]])
        cotangents = torch.cat([cotangents, more])
        found = moments(y, frame)
    return y, cotangents, found


def moments(sketch: Tensor, frame: int | None = None) -> SketchMoments:
    """The estimates of the module docstring from Y of shape (m, n_sources, d_a).

    `frame`: d when the cotangents are m rows of one scaled orthonormal frame of width d (the
    finite-population formulas), None when they are independent Gaussians.
    """
    y = sketch.double()
    m = y.shape[0]
    inv_d = 0.0 if frame is None else 1.0 / frame
    fpc = 1.0 - m * inv_d  # finite-population factor of every variance
    gram = torch.einsum("isd,jsd->sij", y, y)  # (n_s, m, m): M_ij per source
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    trace = diag.mean(1)
    trace_se = (fpc * diag.var(1) / m) ** 0.5
    squares = gram**2 - torch.diag_embed(diag**2)
    per_row = squares.sum(2) / (m - 1)  # h_i
    diag_sq = diag**2
    schatten = inv_d * diag_sq.mean(1) + (1 - inv_d) * per_row.mean(1)
    off = squares[:, ~torch.eye(m, dtype=torch.bool, device=y.device)]  # (n_s, m (m - 1))
    schatten_se = (fpc * (1 - inv_d) ** 2 * (4 * per_row.var(1) / m + 2 * off.var(1) / (m * (m - 1)))) ** 0.5
    trace, trace_se = trace.cpu().numpy(), trace_se.cpu().numpy()
    schatten, schatten_se = schatten.cpu().numpy(), schatten_se.cpu().numpy()
    squared = np.sqrt(np.clip(trace**2 - trace_se**2, 0.0, None))  # (tr A)^2 unbiased
    ratio = np.array([participation_ratio_of(f, s) for f, s in zip(squared, schatten)])
    rows = squares.sum(2)  # sum_{j != i} M_ij^2
    leave_trace = (diag.sum(1, keepdim=True) - diag) / (m - 1)
    leave_pairs = (rows.sum(1, keepdim=True) - 2 * rows) / ((m - 1) * (m - 2))
    leave_diag = (diag_sq.sum(1, keepdim=True) - diag_sq) / (m - 1)
    leave_schatten = inv_d * leave_diag + (1 - inv_d) * leave_pairs
    leave = leave_trace**2 / leave_schatten.clamp_min(torch.finfo(leave_schatten.dtype).tiny)
    spread = ((leave - leave.mean(1, keepdim=True)) ** 2).sum(1)
    ratio_se = (fpc * (m - 1) / m * spread).sqrt().cpu().numpy()
    return SketchMoments(trace, trace_se, schatten, schatten_se, ratio, np.nan_to_num(ratio_se))


def input_gram_sum(sketch: Tensor) -> Tensor:
    """sum_s (1/m) sum_i y_i(s) y_i(s)^T: unbiased for sum_s J(t, s)^T J(t, s), (d_a, d_a) float64."""
    y = sketch.double()
    return torch.einsum("isd,ise->de", y, y) / y.shape[0]


def sandwich_sum(
    sketch: Tensor, cotangents: Tensor, middle: Tensor | None = None, frame: int | None = None
) -> Tensor:
    """Unbiased B = sum_s J(t, s) X J(t, s)^T (X = `middle`, identity if None), (d_b, d_b) float64.

    Split halves: J_h = (2/m) U_h^T Y_h(s); S = (J_1 X J_2^T + J_2 X J_1^T) / 2 summed over s, through
    the core K = sum_s Y_1(s) X Y_2(s)^T of size m/2 x m/2. Independent Gaussian halves (`frame`
    None): E[S] = B. Halves of one orthonormal frame of width d = `frame`: E[S] = c (B - (tr B / d) I)
    with c = d^2 / ((d - 1)(d + 2)), so B ~ S / c + (t / d) I, t = (1/m) sum_i sum_s y_i X y_i^T
    (unbiased for tr B).
    """
    y, u = sketch.double(), cotangents.to(sketch.device).double()
    h = y.shape[0] // 2
    y1, y2 = y[:h], y[h : 2 * h]
    if middle is not None:
        y2 = y2 @ middle.to(y2)
    core = torch.einsum("isd,jsd->ij", y1, y2)
    estimate = u[:h].T @ core @ u[h : 2 * h] / h**2
    estimate = (estimate + estimate.T) / 2
    if frame is None:
        return estimate
    weighted = y if middle is None else y @ middle.to(y)
    trace = torch.einsum("isd,isd->", y, weighted) / y.shape[0]
    c = frame**2 / ((frame - 1) * (frame + 2))
    return estimate / c + trace / frame * torch.eye(estimate.shape[0], dtype=estimate.dtype, device=estimate.device)


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
