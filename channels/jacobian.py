"""Jacobians between activation sites: exact blocks, their expected Gram, matrix-free top-k.

Every Jacobian here is J = d site_b / d site_a at the model's own forward pass: one forward
records both sites (keeping the graph, stopping after the later one), then batches of
vector-Jacobian products u -> u^T J (one backward pass each, ``chunk_size`` cotangents per
call, batched with ``is_grads_batched``) give rows of J.

- `site_jacobian`: per-example blocks (B, d_b, d_a). Examples of an eval-mode batch are
  independent, so one cotangent e_j on every example at once gives row j of all B blocks.
- `sequence_jacobian` / `iter_sequence_jacobian`: J(t, s) = d b[t] / d a[s]. A cotangent
  e_j at position t, differentiated w.r.t. the whole site_a tensor, gives row j of J(t, s)
  for every s at once: d_b products per target t, never one pass per (s, t) pair. In a
  causal model J(t, s) = 0 for s > t falls out of the backward pass.
- `GramAccumulator` / `expected_gram`: E[J^T J] in float64, streamed over inputs or tokens.
- `topk_singular` / `topk_singular_blocks`: randomized block Krylov SVD from JVP/VJP products only
  (Halko, Martinsson & Tropp 2011; Musco & Musco 2015), stopped by its own error estimate when asked,
  several blocks in lockstep; `jacobian_operator` / `block_operators` build those products for
  (model, inputs, site_a, site_b), and `cached_prefix` runs them on the positions from s on only
  (a causal model's earlier positions as cached keys and values).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from channels.sites import Site, replace, resolve_site, run_sites
from lth.errors import LTCError

Inputs = Tensor | Mapping[str, Any] | tuple
DEFAULT_MAX_BYTES = 2 * 2**30
DEFAULT_CHUNK = 32

_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _require_eval(model: nn.Module) -> None:
    """Dropout or batch norm in training mode make the Jacobian random and couple examples."""
    live = [
        name for name, m in model.named_modules() if m.training and isinstance(m, _MODE_DEPENDENT)
    ]
    if live:
        raise LTCError(
            f"Jacobians need the model in eval mode ({live[0]} is training): call model.eval()"
        )


def _require_finite(jacobian: Tensor, a: Site, b: Site) -> Tensor:
    if not torch.isfinite(jacobian).all():
        raise LTCError(f"Jacobian d {b.name} / d {a.name} has non-finite entries (NaN or inf)")
    return jacobian


def _require_budget(shape: tuple[int, ...], dtype: torch.dtype, max_bytes: int, what: str) -> None:
    size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    if size > max_bytes:
        raise LTCError(
            f"{what} of shape {shape} needs {size / 2**30:.2f} GiB, over max_bytes="
            f"{max_bytes / 2**30:.2f} GiB: select fewer examples/targets/sources, raise max_bytes, "
            "or use the matrix-free path (jacobian_operator + topk_singular)"
        )


def forward_with_graph(
    model: nn.Module, inputs: Inputs, site_a: str | Site, site_b: str | Site
) -> tuple[Site, Site, Tensor, Tensor]:
    """(Site a, Site b, activation a, activation b) from one forward pass keeping the graph.

    The activation at a is swapped for a detached leaf copy, so the graph starts at a (frozen
    parameters are fine) and the pass stops once b is recorded.
    """
    _require_eval(model)
    a, b = resolve_site(model, site_a), resolve_site(model, site_b)
    leaf = {}

    def as_leaf(activation: Tensor) -> Tensor:
        leaf[a.name] = activation.detach().requires_grad_()
        return leaf[a.name]

    with torch.enable_grad(), replace(model, a, as_leaf):
        act_b = run_sites(model, inputs, [b], keep_graph=True)[b.name]
    if a.name not in leaf or not act_b.requires_grad:
        raise LTCError(f"{b.name} does not depend on {a.name} (is {a.name} after {b.name}?)")
    return a, b, leaf[a.name], act_b


def batched_vjp(output: Tensor, wrt: Tensor, cotangents: Tensor, a: Site, b: Site, **kw) -> Tensor:
    """Stacked u^T d output / d wrt for the cotangents (n, *output.shape) -> (n, *wrt.shape)."""
    if len(cotangents) == 1:
        grad = torch.autograd.grad(output, wrt, cotangents[0], allow_unused=True, **kw)[0]
        grad = None if grad is None else grad.unsqueeze(0)
    else:
        grad = torch.autograd.grad(
            output, wrt, cotangents, is_grads_batched=True, allow_unused=True, **kw
        )[0]
    if grad is None:
        raise LTCError(f"{b.name} does not depend on {a.name} (is {a.name} after {b.name}?)")
    return grad


def site_jacobian(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    chunk_size: int = DEFAULT_CHUNK,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tensor:
    """Per-example Jacobians J_i = d b_i / d a_i of a batch, shape (B, d_b, d_a).

    Per-example activations are flattened (conv maps (C, H, W) -> C*H*W). Row j of every J_i
    comes from one backward pass of sum_i b_i[j], valid because eval-mode examples are
    independent; ``chunk_size`` rows go through each backward call.
    """
    a, b, act_a, act_b = forward_with_graph(model, inputs, site_a, site_b)
    batch = act_a.shape[0]
    if act_b.shape[0] != batch:
        raise LTCError(
            f"{a.name} and {b.name} have different batch sizes ({batch}, {act_b.shape[0]})"
        )
    d_a, d_b = act_a[0].numel(), act_b[0].numel()
    _require_budget((batch, d_b, d_a), act_a.dtype, max_bytes, f"Jacobian d {b.name} / d {a.name}")
    flat_b = act_b.reshape(batch, d_b)
    jacobian = act_a.new_empty(batch, d_b, d_a)
    for start in range(0, d_b, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, d_b), device=act_a.device)
        cotangents = act_b.new_zeros(len(rows), batch, d_b)
        cotangents[torch.arange(len(rows), device=rows.device), :, rows] = 1
        grads = batched_vjp(flat_b, act_a, cotangents, a, b, retain_graph=True)
        jacobian[:, rows] = grads.reshape(len(rows), batch, d_a).transpose(0, 1)
    return _require_finite(jacobian, a, b)


def _source_positions(
    t: int, length: int, sources: Sequence[int] | None, offsets: Sequence[int] | None
) -> list[int]:
    """Source positions s for target t: all, a fixed set, or s = t - offset."""
    if sources is not None and offsets is not None:
        raise LTCError("give sources or offsets, not both")
    if offsets is not None:
        positions = [t - offset for offset in offsets]
    else:
        positions = list(range(length)) if sources is None else [int(s) for s in sources]
    bad = [s for s in positions if not 0 <= s < length]
    if bad:
        raise LTCError(
            f"source positions {bad} (target {t}) lie outside the sequence of length {length}"
        )
    return positions


def iter_sequence_jacobian(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    targets: Sequence[int] | None = None,
    sources: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    rows: Sequence[int] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[tuple[int, Tensor]]:
    """Yield (t, J_t) per target, J_t[i] = d b[t] / d a[s_i] of shape (n_sources, n_rows, d_a).

    ``inputs`` hold one sequence (batch 1): input ids, or a mapping such as
    ``{"inputs_embeds": ...}``; both sites must be (1, T, d). Sources are all positions,
    ``sources`` (absolute) or ``offsets`` (s = t - offset); ``rows`` picks coordinates of
    site_b (default all d_b). One forward pass serves all targets; each backward call takes
    ``chunk_size`` cotangents e_j at position t (they may span targets) and returns the
    gradient w.r.t. every source position at once. Memory: one J_t plus a chunk of gradients
    (chunk_size, T, d_a) at a time.
    """
    a, b, act_a, act_b = forward_with_graph(model, inputs, site_a, site_b)
    if act_a.dim() != 3 or act_b.dim() != 3 or act_a.shape[0] != 1 or act_b.shape[0] != 1:
        raise LTCError(
            f"sequence Jacobians need one sequence with sites of shape (1, T, d); got {a.name} "
            f"{tuple(act_a.shape)} and {b.name} {tuple(act_b.shape)} (use site_jacobian otherwise)"
        )
    length, d_b = act_b.shape[1], act_b.shape[2]
    rows = list(range(d_b)) if rows is None else [int(j) for j in rows]
    if not all(0 <= j < d_b for j in rows):
        raise LTCError(f"rows must lie in 0..{d_b - 1} (the width of {b.name})")
    targets = list(range(length)) if targets is None else [int(t) for t in targets]
    bad = [t for t in targets if not 0 <= t < length]
    if bad:
        raise LTCError(f"targets {bad} lie outside the sequence of length {length}")
    device = act_a.device
    positions = {
        t: torch.tensor(_source_positions(t, act_a.shape[1], sources, offsets), device=device)
        for t in targets
    }
    work = [(t, i, j) for t in targets for i, j in enumerate(rows)]  # ordered by target, then row
    pending: dict[int, Tensor] = {}
    for start in range(0, len(work), chunk_size):
        chunk = work[start : start + chunk_size]
        cotangents = act_b.new_zeros(len(chunk), *act_b.shape)
        chunk_t = torch.tensor([t for t, _, _ in chunk], device=device)
        chunk_j = torch.tensor([j for _, _, j in chunk], device=device)
        cotangents[torch.arange(len(chunk), device=device), 0, chunk_t, chunk_j] = 1
        grads = batched_vjp(act_b, act_a, cotangents, a, b, retain_graph=True)[:, 0]  # (n, T, d_a)
        for t in dict.fromkeys(t for t, _, _ in chunk):  # each target's rows are one run
            ks = [k for k, item in enumerate(chunk) if item[0] == t]
            first, last = chunk[ks[0]][1], chunk[ks[-1]][1]
            if first == 0:
                pending[t] = act_a.new_empty(len(rows), len(positions[t]), act_a.shape[2])
            pending[t][first : last + 1] = grads[ks[0] : ks[-1] + 1][:, positions[t]]
            if last == len(rows) - 1:
                yield t, _require_finite(pending.pop(t).transpose(0, 1).contiguous(), a, b)


def sequence_jacobian(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    targets: Sequence[int] | None = None,
    sources: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    rows: Sequence[int] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tensor:
    """J[i, k] = d b[t_i] / d a[s_k], shape (T_targets, T_sources, d_b, d_a) (d_b: len(rows)).

    See `iter_sequence_jacobian` for the arguments; with ``offsets``, s_k = t_i - offsets[k].
    For long sweeps iterate instead of stacking everything.
    """
    a, b = resolve_site(model, site_a), resolve_site(model, site_b)
    with torch.no_grad():
        shapes = run_sites(model, inputs, [a, b])
    length, d_a, d_b = shapes[b.name].shape[1], shapes[a.name].shape[-1], shapes[b.name].shape[-1]
    n_targets = length if targets is None else len(targets)
    n_sources = len(
        offsets if offsets is not None else sources if sources is not None else range(length)
    )
    shape = (n_targets, n_sources, d_b if rows is None else len(rows), d_a)
    _require_budget(shape, shapes[a.name].dtype, max_bytes, f"Jacobian d {b.name} / d {a.name}")
    blocks = iter_sequence_jacobian(
        model, inputs, a, b, targets, sources, offsets, rows, chunk_size
    )
    return torch.stack([block for _, block in blocks])


class GramAccumulator:
    """Streaming expected Gram G = E[J^T J] = (1/N) sum_n J_n^T J_n over N Jacobian blocks.

    Accumulated in float64 (memory d_a x d_a whatever N); partial accumulators merge, e.g.
    across processes or chunks of a sweep.
    """

    def __init__(self, dim: int, device: torch.device | str | None = None) -> None:
        self.total = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.count = 0

    def update(self, jacobians: Tensor) -> None:
        """Add blocks of shape (..., d_b, d_a): the sum of J^T J is one matmul of stacked rows."""
        rows = jacobians.reshape(-1, jacobians.shape[-1]).to(self.total)
        self.total += rows.T @ rows
        self.count += jacobians[..., 0, 0].numel()

    def merge(self, other: GramAccumulator) -> None:
        """Fold another accumulator's blocks into this one."""
        self.total += other.total.to(self.total)
        self.count += other.count

    def mean(self) -> Tensor:
        """E[J^T J], shape (d_a, d_a), float64."""
        if self.count == 0:
            raise LTCError("expected Gram of no Jacobians: update the accumulator first")
        return self.total / self.count


def expected_gram(jacobians: Tensor) -> Tensor:
    """E[J^T J] over all leading dimensions of blocks (..., d_b, d_a), in float64."""
    accumulator = GramAccumulator(jacobians.shape[-1], device=jacobians.device)
    accumulator.update(jacobians)
    return accumulator.mean()


@dataclass
class JacobianOperator:
    """A Jacobian J (dim_out x dim_in) known only through products on rows of vectors.

    jvp(X) = X J^T maps (n, dim_in) -> (n, dim_out); vjp(Y) = Y J maps (n, dim_out) -> (n, dim_in).
    """

    jvp: Callable[[Tensor], Tensor]
    vjp: Callable[[Tensor], Tensor]
    dim_in: int
    dim_out: int


@dataclass
class BlockOperators:
    """Blocks J_1 .. J_n (each dim_out x dim_in) of one forward pass, known through products that run
    together: jvp([X_1, .., X_n]) = [X_i J_i^T], vjp([Y_1, .., Y_n]) = [Y_i J_i]. The rows of every
    block share the same batched backward calls, so n blocks cost about one block's calls."""

    jvp: Callable[[list[Tensor]], list[Tensor]]
    vjp: Callable[[list[Tensor]], list[Tensor]]
    dim_in: int
    dim_out: int
    count: int

    def block(self, index: int) -> JacobianOperator:
        """Block `index` alone."""
        def one(product: Callable[[list[Tensor]], list[Tensor]], width: int) -> Callable[[Tensor], Tensor]:
            def apply(rows: Tensor) -> Tensor:
                empty = rows.new_zeros(0, width)
                return product([rows if i == index else empty for i in range(self.count)])[index]
            return apply

        return JacobianOperator(one(self.jvp, self.dim_in), one(self.vjp, self.dim_out), self.dim_in, self.dim_out)

    @classmethod
    def of(cls, op: JacobianOperator) -> BlockOperators:
        """One operator as a family of one block."""
        return cls(lambda xs: [op.jvp(xs[0])], lambda ys: [op.vjp(ys[0])], op.dim_in, op.dim_out, 1)


def cached_prefix(model: nn.Module, ids: Tensor, start: int) -> Inputs:
    """Inputs that run positions `start`.. of `ids` (1, L) on top of the cached keys and values of
    positions < start (a Hugging Face causal model's cache).

    In a causal model the later positions see a[s < start] only through those keys and values, which
    do not depend on a[s >= start]: every block J(t, s) with s >= start is the same as on the whole
    sequence, at the cost of L - start positions instead of L (the prefix runs once, without a graph).
    """
    if start <= 0:
        return ids
    base = getattr(model, "base_model", model)
    with torch.no_grad():
        cache = base(input_ids=ids[:, :start], use_cache=True).cache
    return {"input_ids": ids[:, start:], "cache": cache, "use_cache": True}


def block_operators(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    target: int | None = None,
    sources: Sequence[int] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> BlockOperators:
    """Matrix-free blocks of one example (batch 1): J(target, s) for each s of `sources` in a
    sequence, or the one Jacobian d b / d a when both are None.

    One forward pass keeps the graph; a VJP is one backward pass through it. A JVP uses the
    double-backward trick: g(u) = u^T J is linear in u, so d(g . v)/du = J v, one backward pass
    through the graph of g (built once). ``chunk_size`` rows of all blocks together go per call.
    """
    a, b, act_a, act_b = forward_with_graph(model, inputs, site_a, site_b)
    if act_a.shape[0] != 1 or act_b.shape[0] != 1:
        raise LTCError("block_operators takes one example (batch size 1)")
    if (target is None) != (sources is None):
        raise LTCError("give both target and sources (sequence sites) or neither")
    slots_a = [(0,)] if sources is None else [(0, int(s)) for s in sources]
    slot_b = (0,) if target is None else (0, int(target))
    dim_in, dim_out = act_a[slots_a[0]].numel(), act_b[slot_b].numel()
    dummy = torch.zeros_like(act_b, requires_grad=True)
    (pullback,) = torch.autograd.grad(act_b, act_a, dummy, create_graph=True)

    def run(blocks: list[Tensor], into: Tensor, at: list[tuple], out_of: Tensor, wrt: Tensor, read: list[tuple],
            width: int) -> list[Tensor]:
        """Place each block's rows at its slot of `into`-shaped seeds, differentiate, read its slot back."""
        rows = torch.cat(blocks)
        owner = torch.cat([torch.full((len(x),), i, dtype=torch.long) for i, x in enumerate(blocks)])
        parts = []
        for first in range(0, len(rows), chunk_size):
            chunk, whose = rows[first : first + chunk_size], owner[first : first + chunk_size]
            seeds = into.new_zeros(len(chunk), *into.shape)
            for i in whose.unique().tolist():
                mine = (whose == i).nonzero().flatten().to(into.device)
                seeds[(mine, *at[i])] = chunk[whose == i].to(into).reshape(len(mine), *into[at[i]].shape)
            grads = batched_vjp(out_of, wrt, seeds, a, b, retain_graph=True)
            parts.append(torch.stack([grads[(k, *read[int(i)])].reshape(width) for k, i in enumerate(whose)])
                         if len(chunk) else grads.new_zeros(0, width))
        done = torch.cat(parts) if parts else rows.new_zeros(0, width)
        return list(done.split([len(x) for x in blocks]))

    def vjp(blocks: list[Tensor]) -> list[Tensor]:
        return run(blocks, act_b, [slot_b] * len(slots_a), act_b, act_a, slots_a, dim_in)

    def jvp(blocks: list[Tensor]) -> list[Tensor]:
        return run(blocks, act_a, slots_a, pullback, dummy, [slot_b] * len(slots_a), dim_out)

    return BlockOperators(jvp, vjp, dim_in, dim_out, len(slots_a))


def jacobian_operator(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    target: int | None = None,
    source: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> JacobianOperator:
    """Matrix-free J of one example (batch 1), or J(target, source) of a sequence (`block_operators`)."""
    if (target is None) != (source is None):
        raise LTCError("give both target and source (sequence sites) or neither")
    sources = None if source is None else [source]
    return block_operators(model, inputs, site_a, site_b, target, sources, chunk_size).block(0)


class SingularTriplets(NamedTuple):
    """Top singular values (k,), left vectors (dim_out, k), right vectors (dim_in, k), the power steps
    the block Krylov took, and each value's error bound ||J^T u_i - s_i v_i|| / s_i (k,)."""

    values: Tensor
    left: Tensor
    right: Tensor
    steps: int = 0
    error: Tensor | None = None


def topk_singular_blocks(
    ops: BlockOperators,
    k: int,
    block_size: int | None = None,
    n_oversample: int = 10,
    n_iter: int = 4,
    tol: float | None = None,
    start: list[Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> list[SingularTriplets]:
    """Top-k singular triplets of each block of `ops` by randomized block Krylov, all blocks in lockstep.

    A start block V_0 (dim_in x b, b = ``block_size`` or k + ``n_oversample``: Gaussian, or the
    columns of ``start[i]`` when given, e.g. J^T U from VJPs already made) and power steps
    V_{q+1} = orth(J^T J V_q), each orthogonalised against all earlier blocks, span the Krylov space
    K = [V_0, (J^T J) V_0, ..., (J^T J)^q V_0]: the randomized range finder with power iterations of
    Halko, Martinsson & Tropp (2011), keeping every iterate as in Musco & Musco (2015). The images
    J V_q come with the iteration, so SVD(J Q) = U S W^T for the orthonormal basis Q of K gives
    J ~ U S (Q W)^T: Ritz values s_i <= sigma_i that converge much faster than plain subspace
    iteration for slowly decaying spectra.

    Steps: at most ``n_iter``; with ``tol`` a block stops after the step that moved none of its
    top-k Ritz values by more than ``tol`` relative (the Ritz values rise monotonically to the
    singular values, so the last move estimates the error left). Error bound: the products
    J^T J V_q that make the next block also give J^T u_i = (J^T J Q) w_i / s_i, hence the residual
    r_i = J^T u_i - s_i v_i of each Ritz triplet (J v_i = s_i u_i holds exactly) and
    `error` = ||r_i|| / s_i: a singular value of J lies within ||r_i|| of s_i (Weyl, on J^T J).
    Cost: b (2 q + 2) products per block, every block's products in the same calls; the dense
    algebra runs in float64.
    """
    block = block_size or k + n_oversample
    cap = min(block * (n_iter + 1), ops.dim_in, ops.dim_out)
    if not 0 < k <= cap:
        raise LTCError(f"k={k} must be between 1 and min(block_size*(n_iter+1), dim_in, dim_out)={cap}")

    def product(fn: Callable[[list[Tensor]], list[Tensor]], columns: list[Tensor | None], width: int) -> list:
        rows = [c.T.to(dtype=dtype, device=device) if c is not None else torch.zeros(0, width, dtype=dtype,
                                                                                       device=device)
                for c in columns]
        return [o.T.double() if c is not None else None for o, c in zip(fn(rows), columns)]

    generator = torch.Generator().manual_seed(seed)
    first = []
    for i in range(ops.count):
        cols = start[i].double().T if start is not None else torch.randn(ops.dim_in, min(block, ops.dim_in),
                                                                         generator=generator, dtype=torch.float64)
        first.append(torch.linalg.qr(cols.to(device)).Q)
    basis = [[q] for q in first]
    images = [[img] for img in product(ops.jvp, first, ops.dim_in)]
    backs: list[list[Tensor]] = [[] for _ in range(ops.count)]  # J^T J V_q, one per basis block
    ritz: list[Tensor | None] = [None] * ops.count
    active = list(range(ops.count))
    while active:
        back = product(ops.vjp, [images[i][-1] if i in active else None for i in range(ops.count)], ops.dim_out)
        grow = [None] * ops.count
        for i in active:
            backs[i].append(back[i])
            values = torch.linalg.svdvals(torch.cat(images[i], dim=1))[:k]
            before, ritz[i] = ritz[i], values
            found = torch.cat(basis[i], dim=1)
            settled = tol is not None and before is not None and len(before) == len(values) == k and \
                float(((values - before).abs() / values.clamp_min(1e-300)).max()) <= tol
            if settled or len(basis[i]) > n_iter or found.shape[1] >= ops.dim_in:
                continue
            new = back[i][:, : ops.dim_in - found.shape[1]]
            for _ in range(2):  # twice is enough for full reorthogonalisation
                new = torch.linalg.qr(new - found @ (found.T @ new)).Q
            basis[i].append(new)
            grow[i] = new
        pushed = product(ops.jvp, grow, ops.dim_in)
        active = [i for i in range(ops.count) if grow[i] is not None]
        for i in active:
            images[i].append(pushed[i])
    out = []
    for i in range(ops.count):
        left, values, right_small = torch.linalg.svd(torch.cat(images[i], dim=1), full_matrices=False)
        if not torch.isfinite(values).all():
            raise LTCError("non-finite products in topk_singular: the Jacobian has NaN or inf entries")
        w = right_small[:k].T
        right = torch.cat(basis[i], dim=1) @ w
        top = values[:k].clamp_min(1e-300)
        residual = torch.cat(backs[i], dim=1) @ w / top - right * top
        out.append(SingularTriplets(values[:k], left[:, :k], right, len(basis[i]) - 1,
                                    residual.norm(dim=0) / top))
    return out


def topk_singular(
    jvp_fn: Callable[[Tensor], Tensor],
    vjp_fn: Callable[[Tensor], Tensor],
    dim_in: int,
    dim_out: int,
    k: int,
    n_oversample: int = 10,
    n_iter: int = 4,
    block_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    seed: int = 0,
    tol: float | None = None,
) -> SingularTriplets:
    """Top-k singular triplets of one J from products only (`topk_singular_blocks` with one block).

    ``jvp_fn`` maps rows (n, dim_in) -> (n, dim_out) = rows J^T, ``vjp_fn`` rows (n, dim_out) ->
    (n, dim_in) = rows J. Small blocks with more steps win when the spectrum is flat near sigma_k.
    """
    ops = BlockOperators.of(JacobianOperator(jvp_fn, vjp_fn, dim_in, dim_out))
    (found,) = topk_singular_blocks(ops, k, block_size, n_oversample, n_iter, tol, dtype=dtype, device=device,
                                    seed=seed)
    return found
