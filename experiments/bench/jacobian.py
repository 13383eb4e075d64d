"""Benchmark cases `jacobian`, `jacobian_chunks` and `precision`: residual-stream Jacobians of a
GPT-2-small-shaped model, each path timed side by side with its baseline in one process.

On a CPU shared with other jobs, `ltc bench --threads 1` (the default) avoids OpenMP stalls that
were measured to slow both sides 3-10x on 2 busy cores (ratios stay comparable, absolute times
do not). On a GPU, `ltc bench --device cuda` runs these at context 1024 (`suite.CUDA_FULL`);
``experiments/scripts/gpu_jacobian.sh OUT_DIR`` runs the `jacobian` case, then a short `ltc jacobian` sweep.

Model: 12 layers, 768 wide, 12 heads, random weights, eager attention, float32, eval mode.
J(t, s) = d resid_post.11[t] / d resid_pre.0[s] (768 x 768 blocks).

(a) All-pairs sweep, J(t, s) for all s <= t. Ours: `iter_sequence_jacobian`, one forward
    pass, then 768 VJPs per target t, each giving row j of J(t, s) for every s at once.
    Baseline: a loop of `torch.autograd.functional.jacobian` per (s, t) pair (default
    arguments: one forward, then one backward pass per output row). A full sweep takes hours
    on a CPU, so both sides time a measured subset of the work (``rows`` output rows of a
    few targets / pairs) and are EXTRAPOLATED to the full sweep as forward + rows x
    (time per row). Numbers are checked against each other on the measured pairs.
    Floating-point rate: estimated FLOPs of the measured forward + backward passes (see
    `sweep_flops`) over their time, against a float32 matmul timed in the same run.
(b) Top-32 singular values of J(t, t) at the last position: matrix-free block Krylov
    (`jacobian_operator` + `topk_singular`) against forming J exactly (768 VJPs) + SVD.
(c) `jacobian_chunks`: the same sweep at two VJP chunk sizes, the knob that bounds its peak
    memory (on CUDA a size of 0 is chosen from free memory, `chunk_from_free_memory`).
(d) `precision` (CUDA only): the top-k singular values of J(t, t) under TF32 and bf16 against
    float32, to see whether `--tf32` keeps the spectra accurate.
"""

from __future__ import annotations

import copy
import math
import os
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.autograd.functional import jacobian as autograd_jacobian
from transformers import GPT2Config, GPT2LMHeadModel

from channels.jacobian import iter_sequence_jacobian, jacobian_operator, topk_singular
from channels.sites import replace, run_sites
from experiments.bench.suite import BenchSettings, CaseResult, PeakMemory, row
from experiments.bench.timing import timed

SITE_A, SITE_B = "resid_pre.0", "resid_post.-1"
LAYERS, WIDTH, HEADS = 12, 768, 12


def gpt2_small(
    context: int, device: torch.device, seed: int, layers: int | None = None, width: int | None = None
) -> GPT2LMHeadModel:
    """GPT-2-small shape with random weights (no download); `layers` and `width` (None: the module's
    LAYERS, WIDTH) shrink it, with heads of 64."""
    torch.manual_seed(seed)
    layers, width = layers or LAYERS, width or WIDTH
    config = GPT2Config(
        n_layer=layers,
        n_embd=width,
        n_head=HEADS if width == WIDTH else max(1, width // 64),
        n_positions=max(1024, context),
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(config).to(device).eval()


def random_ids(model: GPT2LMHeadModel, length: int, device: torch.device, seed: int) -> torch.Tensor:
    """(1, length) random token ids for `model`, drawn on the CPU from `seed` (the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (1, length), generator=generator).to(device)


def sweep_flops(context: int) -> tuple[float, float]:
    """Estimated FLOPs of (one forward pass, one input-gradient backward pass) over the blocks.

    Forward per layer: 2 T (4 d^2 + 8 d^2) for the attention and MLP projections plus 4 T^2 d
    for QK^T and AV. A backward pass that only needs gradients w.r.t. activations (weights
    are constants) does one matmul per projection (same FLOPs) and four per attention
    product pair (twice the forward's attention FLOPs). Elementwise work is left out.
    """
    projections = 2 * context * 12 * WIDTH**2
    attention = 4 * context**2 * WIDTH
    return LAYERS * (projections + attention), LAYERS * (projections + 2 * attention)


def matmul_rate(device: torch.device, repeats: int = 5) -> float:
    """Best float32 FLOP/s of a (4096 x 768) @ (768 x 3072) matmul, the MLP's shape."""
    left, right = (
        torch.randn(4096, WIDTH, device=device),
        torch.randn(WIDTH, 4 * WIDTH, device=device),
    )
    left @ right
    seconds = min(timed(lambda: left @ right, device)[0] for _ in range(repeats))
    return 2 * 4096 * WIDTH * 4 * WIDTH / seconds


def pair_jacobian(model, ids, source_act, t: int, s: int, rows: list[int]) -> torch.Tensor:
    """Baseline: autograd.functional.jacobian of b[t, rows] w.r.t. the one vector a[s]."""

    def f(vector: torch.Tensor) -> torch.Tensor:
        act = torch.cat([source_act[:, :s], vector[None, None], source_act[:, s + 1 :]], dim=1)
        with replace(model, SITE_A, act):
            return run_sites(model, ids, [SITE_B], keep_graph=True)[SITE_B][0, t, rows]

    return autograd_jacobian(f, source_act[0, s])


def all_pairs(model, ids, device, rows: int, pairs: int, chunk_size: int) -> dict:
    """(a): time both sides on a measured subset, extrapolate to the full sweep, compare."""
    context = ids.shape[1]
    t = context - 1
    measured_rows = list(range(rows))
    forward_s, _ = timed(lambda: run_sites(model, ids, [SITE_A, SITE_B], keep_graph=True), device)
    ours_s, blocks = timed(
        lambda: dict(
            iter_sequence_jacobian(
                model, ids, SITE_A, SITE_B, targets=[t], rows=measured_rows, chunk_size=chunk_size
            )
        ),
        device,
    )
    ours_row_s = max(ours_s - forward_s, 0.0) / rows
    with torch.no_grad():
        source_act = run_sites(model, ids, [SITE_A])[SITE_A]
    sources = [t - 2 * i for i in range(pairs)]
    base_s, worst = 0.0, 0.0
    for s in sources:
        baseline = partial(pair_jacobian, model, ids, source_act, t, s, measured_rows)
        seconds, reference = timed(baseline, device)
        base_s += seconds
        worst = max(worst, float((blocks[t][s] - reference).abs().max() / reference.abs().max()))
    base_row_s = max(base_s / pairs - forward_s, 0.0) / rows
    n_pairs = context * (context + 1) // 2
    ours_full = forward_s + context * WIDTH * ours_row_s
    base_full = n_pairs * (forward_s + WIDTH * base_row_s)
    fwd_flops, bwd_flops = sweep_flops(context)
    return {
        "context": context,
        "measured_rows": rows,
        "measured_pairs": [(t, s) for s in sources],
        "chunk_size": chunk_size,
        "forward_s": forward_s,
        "ours_measured_s": ours_s,
        "ours_row_s": ours_row_s,
        "baseline_measured_s": base_s,
        "baseline_row_s": base_row_s,
        "ours_full_sweep_s_extrapolated": ours_full,
        "baseline_full_sweep_s_extrapolated": base_full,
        "speedup_extrapolated": base_full / ours_full,
        "max_rel_diff": worst,
        "ours_flops_per_s": (fwd_flops + rows * bwd_flops) / ours_s,
    }


def top_singular(model, ids, device, k: int, block_size: int, n_iter: int, chunk_size: int) -> dict:
    """(b): matrix-free top-k of J(t, t) against exact J + SVD."""
    t = ids.shape[1] - 1

    def exact() -> torch.Tensor:
        ((_, block),) = iter_sequence_jacobian(
            model, ids, SITE_A, SITE_B, [t], [t], chunk_size=chunk_size
        )
        return torch.linalg.svdvals(block[0].double())

    def matrix_free() -> torch.Tensor:
        op = jacobian_operator(
            model, ids, SITE_A, SITE_B, target=t, source=t, chunk_size=chunk_size
        )
        return topk_singular(
            op.jvp,
            op.vjp,
            op.dim_in,
            op.dim_out,
            k,
            block_size=block_size,
            n_iter=n_iter,
            device=device,
        ).values

    exact_s, values = timed(exact, device)
    free_s, approx = timed(matrix_free, device)
    truth = values[:k].cpu()
    approx = approx.cpu()
    return {
        "context": ids.shape[1],
        "k": k,
        "block_size": block_size,
        "n_iter": n_iter,
        "products": block_size * (2 * n_iter + 2),  # the last VJPs give the error bound
        "exact_s": exact_s,
        "matrix_free_s": free_s,
        "speedup": exact_s / free_s,
        "max_rel_err": float(((approx - truth).abs() / truth).max()),
        "norm_rel_err": float((approx - truth).norm() / truth.norm()),
        "sigma_1": float(truth[0]),
        "sigma_k": float(truth[-1]),
        "sigma_k_over_sigma_1": float(truth[-1] / truth[0]),
    }


def run(
    context: int = 128,
    rows: int = 16,
    pairs: int = 2,
    svd_context: int = 16,
    k: int = 32,
    block_size: int = 8,
    n_iter: int = 12,
    chunk_size: int = 32,
    device: str = "cpu",
    quick: bool = False,
    seed: int = 0,
) -> dict:
    """Both benchmarks; ``quick`` shrinks them to about a minute on 2 CPU cores (1 thread)."""
    if quick:
        context, rows, pairs, svd_context = min(context, 64), min(rows, 8), 1, min(svd_context, 8)
    where = torch.device(device)
    model = gpt2_small(max(context, svd_context), where, seed)
    ids = random_ids(model, context, where, seed)
    with torch.no_grad():
        run_sites(model, ids, [SITE_B])  # warm-up: first calls pay one-off set-up costs
    figures = {"device": str(where), "threads": torch.get_num_threads(), "quick": quick}
    figures["matmul_flops_per_s"] = matmul_rate(where)
    figures["all_pairs"] = all_pairs(model, ids, where, rows, pairs, chunk_size)
    figures["topk"] = top_singular(
        model, ids[:, :svd_context], where, k, block_size, n_iter, chunk_size
    )
    return figures


def case(s: BenchSettings) -> CaseResult:
    """The suite's `jacobian` case: (a) the sweep's extrapolated speedup and FLOP rate, (b) top-k SVD."""
    z = s.sizes
    f = run(z.jac_context, z.jac_rows, z.jac_pairs, z.svd_context, z.top_k, z.block_size, z.n_iter,
            z.jac_chunk, s.device)
    a, b = f["all_pairs"], f["topk"]
    fwd, bwd = sweep_flops(a["context"])
    matmul_equivalent_s = (fwd + a["measured_rows"] * bwd) / f["matmul_flops_per_s"]

    def rows(mem: PeakMemory) -> list[dict]:
        model_note = "peak includes the model"
        return [
            row("jacobian", f"all-pairs J sweep, context {a['context']}",
                a["ours_full_sweep_s_extrapolated"], a["baseline_full_sweep_s_extrapolated"],
                a["speedup_extrapolated"], "per-pair / sweep (speedup)", mem,
                f"EXTRAPOLATED; target >= 20; max rel diff {a['max_rel_diff']:.0e}; {model_note}"),
            row("jacobian", f"sweep FLOP rate vs matmul, {a['measured_rows']} rows",
                a["ours_measured_s"], matmul_equivalent_s, matmul_equivalent_s / a["ours_measured_s"],
                "sweep rate / matmul rate", mem, "baseline = the same FLOPs at the matmul's rate"),
            row("jacobian", f"top-{b['k']} SVD of J(t, t), context {b['context']}",
                b["matrix_free_s"], b["exact_s"], b["speedup"], "exact SVD / matrix-free (speedup)", mem,
                f"target >= 5; max rel err {b['max_rel_err']:.1%}"),
        ]

    return f, rows


def _sweep(model: GPT2LMHeadModel, ids: torch.Tensor, rows: int, chunk_size: int) -> None:
    """The all-pairs sweep of the last target over its first `rows` output rows, results dropped."""
    for _ in iter_sequence_jacobian(model, ids, SITE_A, SITE_B, targets=[ids.shape[1] - 1],
                                    rows=list(range(rows)), chunk_size=chunk_size):
        pass


def chunk_from_free_memory(model: GPT2LMHeadModel, ids: torch.Tensor, rows: int, fraction: float = 0.5) -> int:
    """The largest power-of-two VJP chunk whose sweep fits in `fraction` of free CUDA memory.

    Peak memory is affine in the chunk size c: fixed + c * per_vjp; both are measured from two
    small sweeps (c = 2 and 8), then c = (fraction * free - fixed) / per_vjp, capped at `rows`.
    """
    peaks = {}
    for c in (2, 8):
        with PeakMemory("cuda") as mem:
            _sweep(model, ids, c, c)
        peaks[c] = mem.bytes
    per_vjp = max((peaks[8] - peaks[2]) / 6, 1.0)
    fixed = max(peaks[2] - 2 * per_vjp, 0.0)
    free, _ = torch.cuda.mem_get_info()
    fits = max(int((fraction * free - fixed) / per_vjp), 1)
    return min(2 ** int(math.log2(fits)), rows)


def chunks_case(s: BenchSettings) -> CaseResult:
    """The suite's `jacobian_chunks` case: one sweep per chunk size, each with its own peak memory."""
    z = s.sizes
    where = torch.device(s.device)
    model = gpt2_small(z.chunk_context, where, 0)
    ids = random_ids(model, z.chunk_context, where, 0)
    _sweep(model, ids, 1, 1)  # warm-up: first calls pay one-off costs
    sizes = [c or chunk_from_free_memory(model, ids, z.chunk_rows) for c in z.chunk_sizes]
    timed_runs = []
    for c in sizes:
        with PeakMemory(s.device) as mem:
            seconds, _ = timed(partial(_sweep, model, ids, z.chunk_rows, c), where)
        timed_runs.append({"chunk_size": c, "seconds": seconds, "peak_bytes": mem.bytes,
                           "memory_method": mem.method})
    figures = {"context": z.chunk_context, "rows": z.chunk_rows, "auto": [c == 0 for c in z.chunk_sizes],
               "runs": timed_runs}

    def rows(_: PeakMemory) -> list[dict]:
        first = timed_runs[0]
        out = []
        for t, auto in zip(timed_runs, figures["auto"]):
            chosen = " (from free memory)" if auto else ""
            out.append(row("jacobian_chunks", f"J sweep {z.chunk_rows} rows, context {z.chunk_context}, "
                           f"chunk {t['chunk_size']}{chosen}", t["seconds"], first["seconds"],
                           t["seconds"] / first["seconds"], f"time / chunk {first['chunk_size']}",
                           t["peak_bytes"], "peak excludes the model", t["memory_method"]))
        return out

    return figures, rows


def precision_case(s: BenchSettings) -> CaseResult:
    """The suite's `precision` case (CUDA): time and relative error of the top-k singular values of
    J(t, t) under TF32 and bf16, against float32."""
    z = s.sizes
    where = torch.device(s.device)
    model = gpt2_small(z.svd_context, where, 0)
    ids = random_ids(model, z.svd_context, where, 0)
    t = z.svd_context - 1

    def singular_values(net: GPT2LMHeadModel) -> tuple[float, torch.Tensor]:
        def top_k() -> torch.Tensor:
            ((_, block),) = iter_sequence_jacobian(net, ids, SITE_A, SITE_B, [t], [t], chunk_size=z.jac_chunk)
            return torch.linalg.svdvals(block[0].double())[: z.top_k].cpu()

        return timed(top_k, where)

    before = torch.get_float32_matmul_precision()
    try:
        singular_values(model)  # warm-up
        torch.set_float32_matmul_precision("highest")
        fp32_s, truth = singular_values(model)
        torch.set_float32_matmul_precision("high")
        tf32_s, tf32 = singular_values(model)
        torch.set_float32_matmul_precision("highest")
        bf16_s, bf16 = singular_values(copy.deepcopy(model).to(torch.bfloat16))
    finally:
        torch.set_float32_matmul_precision(before)
    err = {name: float(((v - truth).abs() / truth).max()) for name, v in (("tf32", tf32), ("bf16", bf16))}
    figures = {"context": z.svd_context, "k": z.top_k, "fp32_s": fp32_s, "tf32_s": tf32_s, "bf16_s": bf16_s,
               "tf32_max_rel_err": err["tf32"], "bf16_max_rel_err": err["bf16"]}

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("precision", f"J(t, t) + SVD in {name}, context {z.svd_context}", sec, fp32_s,
                    fp32_s / sec, "float32 / this (speedup)", mem,
                    f"max rel err of top-{z.top_k} {err[name]:.2%} ({'keeps' if err[name] <= 0.01 else 'LOSES'} "
                    "spectra to 1%)")
                for name, sec in (("tf32", tf32_s), ("bf16", bf16_s))]

    return figures, rows
