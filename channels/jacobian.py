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
- `topk_singular`: randomized block Krylov SVD from JVP/VJP products only (Halko, Martinsson
  & Tropp 2011; Musco & Musco 2015), with `jacobian_operator` building those products for
  (model, inputs, site_a, site_b).
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


def jacobian_operator(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    target: int | None = None,
    source: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> JacobianOperator:
    """Matrix-free J of one example (batch 1), or J(target, source) of a sequence.

    One forward pass keeps the graph; a VJP is one backward pass through it. A JVP uses the
    double-backward trick: g(u) = u^T J is linear in u, so d(g . v)/du = J v, one backward
    pass through the graph of g (built once). ``chunk_size`` vectors go per backward call.
    """
    a, b, act_a, act_b = forward_with_graph(model, inputs, site_a, site_b)
    if act_a.shape[0] != 1 or act_b.shape[0] != 1:
        raise LTCError("jacobian_operator takes one example (batch size 1)")
    if (target is None) != (source is None):
        raise LTCError("give both target and source (sequence sites) or neither")
    slot_a = (0,) if source is None else (0, source)
    slot_b = (0,) if target is None else (0, target)
    dim_in, dim_out = act_a[slot_a].numel(), act_b[slot_b].numel()
    dummy = torch.zeros_like(act_b, requires_grad=True)
    (pullback,) = torch.autograd.grad(act_b, act_a, dummy, create_graph=True)

    def chunked(product: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        return lambda rows: torch.cat([product(part) for part in rows.split(chunk_size)])

    def vjp(rows: Tensor) -> Tensor:
        cotangents = act_b.new_zeros(len(rows), *act_b.shape)
        cotangents[(slice(None), *slot_b)] = rows.reshape(len(rows), *act_b[slot_b].shape)
        grads = batched_vjp(act_b, act_a, cotangents, a, b, retain_graph=True)
        return grads[(slice(None), *slot_a)].reshape(len(rows), dim_in)

    def jvp(rows: Tensor) -> Tensor:
        tangents = act_a.new_zeros(len(rows), *act_a.shape)
        tangents[(slice(None), *slot_a)] = rows.reshape(len(rows), *act_a[slot_a].shape)
        pushed = batched_vjp(pullback, dummy, tangents, a, b, retain_graph=True)
        return pushed[(slice(None), *slot_b)].reshape(len(rows), dim_out)

    return JacobianOperator(chunked(jvp), chunked(vjp), dim_in, dim_out)


class SingularTriplets(NamedTuple):
    """Top singular values (k,), left vectors (dim_out, k) and right vectors (dim_in, k)."""

    values: Tensor
    left: Tensor
    right: Tensor


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
) -> SingularTriplets:
    """Top-k singular triplets of J from products only: randomized block Krylov SVD.

    A random Gaussian block V_0 (dim_in x b, b = ``block_size`` or k + ``n_oversample``) and
    ``n_iter`` power steps V_{i+1} = orth(J^T J V_i), each orthogonalised against all earlier
    blocks, span the Krylov space K = [V_0, (J^T J) V_0, ..., (J^T J)^q V_0]: the randomized
    range finder with power iterations of Halko, Martinsson & Tropp (2011), keeping every
    iterate as in Musco & Musco (2015). The images J V_i come with the iteration, so
    J Q for the orthonormal basis Q of K costs nothing more, and SVD(J Q) = U S W^T gives
    J ~ U S (Q W)^T: Ritz values that converge much faster than plain subspace (power)
    iteration for slowly decaying spectra. Cost: b (2 q + 1) products. Small blocks with
    more steps win when the spectrum is flat near sigma_k. ``jvp_fn`` maps rows
    (n, dim_in) -> (n, dim_out) = rows J^T, ``vjp_fn`` rows (n, dim_out) -> (n, dim_in) = rows J;
    the dense algebra runs in float64.
    """
    block = block_size or k + n_oversample
    if not 0 < k <= min(block * (n_iter + 1), dim_in, dim_out):
        raise LTCError(
            f"k={k} must be between 1 and min(block_size*(n_iter+1), dim_in, dim_out)="
            f"{min(block * (n_iter + 1), dim_in, dim_out)}"
        )

    def forward(columns: Tensor) -> Tensor:  # J @ columns
        return jvp_fn(columns.T.to(dtype=dtype, device=device)).T.double()

    def backward(columns: Tensor) -> Tensor:  # J^T @ columns
        return vjp_fn(columns.T.to(dtype=dtype, device=device)).T.double()

    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(dim_in, min(block, dim_in), generator=generator, dtype=torch.float64)
    basis = [torch.linalg.qr(start.to(device)).Q]
    images = [forward(basis[0])]
    for _ in range(n_iter):
        found = torch.cat(basis, dim=1)
        if found.shape[1] >= dim_in:
            break
        new = backward(images[-1])[:, : dim_in - found.shape[1]]
        for _ in range(2):  # twice is enough for full reorthogonalisation
            new = torch.linalg.qr(new - found @ (found.T @ new)).Q
        basis.append(new)
        images.append(forward(new))
    left, values, right_small = torch.linalg.svd(torch.cat(images, dim=1), full_matrices=False)
    if not torch.isfinite(values).all():
        raise LTCError("non-finite products in topk_singular: the Jacobian has NaN or inf entries")
    right = torch.cat(basis, dim=1) @ right_small.T
    return SingularTriplets(values[:k], left[:, :k], right[:, :k])
