"""Benchmark: residual-stream Jacobians of a GPT-2-small-shaped model, side by side in one process.

    python -m experiments.bench.jacobian [--context 128] [--quick] [--device cuda] [--threads 1]

On a CPU shared with other jobs, ``--threads 1`` avoids OpenMP stalls that were measured to
slow both sides 3-10x on 2 busy cores (ratios stay comparable, absolute times do not).
On a GPU: ``--device cuda --context 1024 --svd-context 1024 --rows 256 --chunk-size 64``;
``experiments/scripts/gpu_jacobian.sh OUT_DIR`` runs that (with --pairs 2), then a short `ltc jacobian` sweep.

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
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.autograd.functional import jacobian as autograd_jacobian
from transformers import GPT2Config, GPT2LMHeadModel

from channels.jacobian import iter_sequence_jacobian, jacobian_operator, topk_singular
from channels.sites import replace, run_sites

SITE_A, SITE_B = "resid_pre.0", "resid_post.-1"
LAYERS, WIDTH, HEADS = 12, 768, 12


def gpt2_small(context: int, device: torch.device, seed: int) -> GPT2LMHeadModel:
    """GPT-2-small shape with random weights (no download)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=LAYERS,
        n_embd=WIDTH,
        n_head=HEADS,
        n_positions=max(1024, context),
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(config).to(device).eval()


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


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def matmul_rate(device: torch.device, repeats: int = 5) -> float:
    """Best float32 FLOP/s of a (4096 x 768) @ (768 x 3072) matmul, the MLP's shape."""
    left, right = (
        torch.randn(4096, WIDTH, device=device),
        torch.randn(WIDTH, 4 * WIDTH, device=device),
    )
    left @ right
    seconds = min(_timed(lambda: left @ right, device)[0] for _ in range(repeats))
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
    forward_s, _ = _timed(lambda: run_sites(model, ids, [SITE_A, SITE_B], keep_graph=True), device)
    ours_s, blocks = _timed(
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
        seconds, reference = _timed(baseline, device)
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

    exact_s, values = _timed(exact, device)
    free_s, approx = _timed(matrix_free, device)
    truth = values[:k].cpu()
    approx = approx.cpu()
    return {
        "context": ids.shape[1],
        "k": k,
        "block_size": block_size,
        "n_iter": n_iter,
        "products": block_size * (2 * n_iter + 1),
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
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=generator).to(where)
    with torch.no_grad():
        run_sites(model, ids, [SITE_B])  # warm-up: first calls pay one-off set-up costs
    figures = {"device": str(where), "threads": torch.get_num_threads(), "quick": quick}
    figures["matmul_flops_per_s"] = matmul_rate(where)
    figures["all_pairs"] = all_pairs(model, ids, where, rows, pairs, chunk_size)
    figures["topk"] = top_singular(
        model, ids[:, :svd_context], where, k, block_size, n_iter, chunk_size
    )
    return figures


def format_report(figures: dict) -> str:
    """The figures as plain text, saying what is measured and what is extrapolated."""
    a, b = figures["all_pairs"], figures["topk"]
    tflops = 1e12
    quick = " (quick)" if figures["quick"] else ""
    lines = [
        (
            f"GPT-2-small shape (12 x 768, random weights) on {figures['device']}, "
            f"{figures['threads']} CPU threads{quick}"
        ),
        f"(a) all-pairs J(t, s) = d {SITE_B}[t] / d {SITE_A}[s], s <= t, context {a['context']}",
        (
            f"    measured: ours 1 target x {a['measured_rows']} rows in {a['ours_measured_s']:.2f} s; "
            f"baseline pairs {a['measured_pairs']} x {a['measured_rows']} rows in "
            f"{a['baseline_measured_s']:.2f} s; forward {a['forward_s']:.2f} s"
        ),
        (
            f"    per row: ours {a['ours_row_s'] * 1e3:.1f} ms (all {a['context']} sources at once), "
            f"baseline {a['baseline_row_s'] * 1e3:.1f} ms (one pair)"
        ),
        (
            f"    full sweep EXTRAPOLATED from the measured subset: ours "
            f"{a['ours_full_sweep_s_extrapolated']:.0f} s, baseline "
            f"{a['baseline_full_sweep_s_extrapolated']:.0f} s, speedup "
            f"{a['speedup_extrapolated']:.1f}x (target >= 20x)"
        ),
        f"    max relative difference on measured pairs: {a['max_rel_diff']:.1e} (target <= 1e-4)",
        (
            f"    achieved {a['ours_flops_per_s'] / tflops:.3f} TFLOP/s (estimated FLOPs) vs float32 "
            f"matmul {figures['matmul_flops_per_s'] / tflops:.3f} TFLOP/s "
            f"({a['ours_flops_per_s'] / figures['matmul_flops_per_s']:.0%})"
        ),
        (
            f"(b) top-{b['k']} singular values of J(t, t), context {b['context']}, "
            f"sigma_{b['k']}/sigma_1 = {b['sigma_k_over_sigma_1']:.2f}"
        ),
        (
            f"    exact (768 VJPs + SVD) {b['exact_s']:.2f} s; matrix-free block Krylov "
            f"(block {b['block_size']}, {b['n_iter']} steps, {b['products']} products) "
            f"{b['matrix_free_s']:.2f} s: {b['speedup']:.2f}x faster (target >= 5x)"
        ),
        (
            f"    relative error: max over top-{b['k']} {b['max_rel_err']:.2%}, of the vector "
            f"{b['norm_rel_err']:.2%} (target <= 1%)"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--context", type=int, default=128, help="sweep context (1024 for the full setting)"
    )
    parser.add_argument("--rows", type=int, default=16, help="output rows timed on each side")
    parser.add_argument("--pairs", type=int, default=2, help="(t, s) pairs timed for the baseline")
    parser.add_argument(
        "--svd-context", type=int, default=16, help="context of the top-k benchmark"
    )
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--n-iter", type=int, default=12)
    parser.add_argument("--chunk-size", type=int, default=32, help="VJPs per backward call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="about a minute on 2 CPU cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = run(
        args.context,
        args.rows,
        args.pairs,
        args.svd_context,
        args.k,
        args.block_size,
        args.n_iter,
        args.chunk_size,
        args.device,
        args.quick,
    )
    print(format_report(figures))


if __name__ == "__main__":
    main()
