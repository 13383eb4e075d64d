"""Benchmark case `jacobian_sketch`: the sketched sweep against the exact one, side by side in one process.

GPT-2-small shape (12 x 768, random weights), J(t, s) = d resid_post.11[t] / d resid_pre.0[s].
For the same targets t (all sources s <= t each), the item methods of `channels.sweep.items` run in
turn: exact (768 VJPs, full SVD of every block) and four sketches, each giving the moments of
every block (||J||_F^2, participation ratio) and the top-8 singular values of the blocks at
t - s = 0 and 2 (block Krylov on positions t - 2..t with the earlier ones cached, started from the
sketch's own rows, stopped by its error estimate):
- `sized`: the sweep's default, orthogonal probes, m grown from `sketch_size` until every block's
  participation ratio has a reported (jackknife) relative standard error <= 2%, at most 256;
- `fixed`: orthogonal probes, m = `sketch_size` cotangents, no sizing;
- `sized gaussian`, `fixed gaussian`: the same with independent Gaussian probes (the estimator
  before the orthogonal frame), so the two estimators' errors stand side by side.
Beside them, the top-8 alone: the block Krylov of the two blocks against the exact path to the
same numbers (the item's 768 VJPs over the window plus two SVDs; its time is the exact item's
Jacobian time plus its SVD time for two blocks, from the item's own split timing).
Reported: time per summarised block and the ratios; the relative errors of the participation
ratio (every block; also in units of the reported jackknife standard error, whose rms is about 1
when that error is honest) and of the top-8 singular values against the exact sweep; m per target; the
Krylov steps taken; peak memory.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from channels.metrics import METRIC_NAMES
from channels import sketch
from channels.sweep.items import ItemInput, exact_item, sketch_item
from channels.sweep.plan import Pair, SweepSettings, target_order
from experiments.bench import jacobian as shape
from experiments.bench.jacobian import SITE_B, gpt2_small, random_ids
from experiments.bench.suite import BenchSettings, CaseResult, PeakMemory, row
from experiments.bench.timing import timed
from lth.seeds import derive_seed

PAIR = Pair("resid_pre.0", SITE_B)
TOP = 8
OFFSETS = (0, 2)


def _errors(exact: dict, sketched: dict, t: int) -> tuple[list[float], list[float], list[float]]:
    """Relative errors of the participation ratio (every block), the same errors in units of the
    reported standard error, and the relative errors of the top-8 (Krylov blocks)."""
    pr = list(METRIC_NAMES).index("participation_ratio")
    truth = exact["metrics"][:, pr]
    pr_err = list(np.abs(sketched["metrics"][:, pr] - truth) / truth)
    se = sketched["metric_se"][:, pr]
    in_se = list(np.abs(sketched["metrics"][:, pr] - truth) / np.where(se > 0, se, np.nan))  # NaN: exact (m = d)
    top = []
    for offset in OFFSETS:
        if t - offset >= 0 and np.isfinite(sketched["singular_values"][t - offset, 0]):
            want = exact["singular_values"][t - offset, :TOP]
            top.append(float(np.max(np.abs(sketched["singular_values"][t - offset, :TOP] - want) / want)))
    return pr_err, in_se, top


def run(context: int, n_targets: int, sketch_size: int, chunk_size: int, device: str) -> dict:
    """Exact and the three sketches on `n_targets` targets of one random context, side by side."""
    where = torch.device(device)
    model = gpt2_small(context, where, 0)
    ids = random_ids(model, context, where, 0)[0]
    base = SweepSettings(method="sketch", sketch_size=sketch_size, sketch_topk=TOP, sketch_topk_offsets=list(OFFSETS))
    gaussian = dataclasses.replace(base, sketch_probes="gaussian")
    variants = {"sized": base, "fixed": dataclasses.replace(base, sketch_pr_rel_se=None),
                "sized gaussian": gaussian, "fixed gaussian": dataclasses.replace(gaussian, sketch_pr_rel_se=None)}
    out = {"context": context, "sketch_size": sketch_size, "blocks": 0, "exact_s": 0.0, "exact_top8_s": 0.0,
           "top8_s": 0.0, "top8_blocks": 0, "krylov_steps": []}
    out |= {name: {"seconds": 0.0, "pr_rel_err": [], "pr_err_in_se": [], "top8_rel_err": [], "m_used": []}
            for name in variants}
    for t in target_order(context, n_targets):
        job = ItemInput(model, ids, PAIR, 0, t, list(range(t + 1)), True, base, chunk_size,
                        torch.eye(shape.WIDTH, dtype=torch.float64), shape.WIDTH)
        exact_s, (exact, _) = timed(lambda: exact_item(job), where)
        out["exact_s"] += exact_s
        out["blocks"] += t + 1
        sources = [t - o for o in OFFSETS if t - o >= 0]
        jacobian_s, spectra_s, _ = exact["seconds"]
        out["exact_top8_s"] += jacobian_s + spectra_s * len(sources) / (t + 1)
        seed = derive_seed("bench-sketch", t)
        top_s, found = timed(lambda: sketch.blocks_topk(model, ids[None], PAIR.a, PAIR.b, t, sources, TOP, 12, 6,
                                                        base.krylov_tol, chunk_size, seed, True), where)
        out["top8_s"] += top_s
        out["top8_blocks"] += len(sources)
        out["krylov_steps"] += [steps for _, steps in found]
        for name, settings in variants.items():
            seconds, (sketched, _) = timed(lambda: sketch_item(dataclasses.replace(job, settings=settings)), where)
            pr_err, in_se, top_err = _errors(exact, sketched, t)
            entry = out[name]
            entry["seconds"] += seconds
            entry["pr_rel_err"] += [float(v) for v in pr_err]
            entry["pr_err_in_se"] += [float(v) for v in in_se]
            entry["top8_rel_err"] += top_err
            entry["m_used"].append(int(sketched["sketch_size"]))
    for name in variants:
        entry = out[name]
        entry["speedup_per_block"] = out["exact_s"] / entry["seconds"]
        entry["pr_rel_err_median"] = float(np.median(entry["pr_rel_err"]))
        entry["pr_rel_err_max"] = float(np.max(entry["pr_rel_err"]))
        in_se = np.asarray(entry["pr_err_in_se"])
        in_se = in_se[np.isfinite(in_se)] if np.isfinite(in_se).any() else np.full(1, np.nan)
        entry["pr_err_in_se_rms"] = float(np.sqrt(np.mean(np.square(in_se))))  # ~1: honest se
        entry["pr_err_in_se_max"] = float(np.max(in_se))
        entry["top8_rel_err_max"] = float(np.max(entry["top8_rel_err"])) if entry["top8_rel_err"] else float("nan")
    out["top8_speedup"] = (out["exact_top8_s"] / out["top8_blocks"]) / (out["top8_s"] / out["top8_blocks"])
    return out


def case(s: BenchSettings) -> CaseResult:
    """The suite's `jacobian_sketch` case (sizes: `sketch_context`, `sketch_targets`, `sketch_size`)."""
    z = s.sizes
    f = run(z.sketch_context, z.sketch_targets, z.sketch_size, z.jac_chunk, s.device)
    blocks = f["blocks"]

    def note(entry: dict, top: bool) -> str:
        top8 = f"top-8 max rel err {entry['top8_rel_err_max']:.2%} (target 2%); " if top else ""
        return (f"{top8}participation ratio rel err median {entry['pr_rel_err_median']:.1%}, max "
                f"{entry['pr_rel_err_max']:.1%} (target 5%), in reported se rms {entry['pr_err_in_se_rms']:.2f} "
                f"max {entry['pr_err_in_se_max']:.1f}; m per target {entry['m_used']}")

    def rows(mem: PeakMemory) -> list[dict]:
        sized, fixed = f["sized"], f["fixed"]
        return [
            row("jacobian_sketch", f"sketch (m sized, top-8 at t - s = 0, 2) vs exact per block, context "
                f"{f['context']}", sized["seconds"] / blocks, f["exact_s"] / blocks, sized["speedup_per_block"],
                "exact / sketch (speedup)", mem, "target >= 10; " + note(sized, True)),
            row("jacobian_sketch", f"sketch (m = {f['sketch_size']} fixed, top-8) vs exact per block",
                fixed["seconds"] / blocks, f["exact_s"] / blocks, fixed["speedup_per_block"],
                "exact / sketch (speedup)", mem, note(fixed, True)),
            *[row("jacobian_sketch", f"{name}: Gaussian probes (the estimator before), top-8, vs exact per block",
                  f[name]["seconds"] / blocks, f["exact_s"] / blocks, f[name]["speedup_per_block"],
                  "exact / sketch (speedup)", mem, note(f[name], True)) for name in ("sized gaussian", "fixed gaussian")],
            row("jacobian_sketch", f"top-8 of J(t, t), J(t, t - 2): Krylov on positions t-2..t vs exact, per block",
                f["top8_s"] / f["top8_blocks"], f["exact_top8_s"] / f["top8_blocks"], f["top8_speedup"],
                "exact / Krylov (speedup)", mem,
                f"target >= 10 at <= 2%: max rel err {sized['top8_rel_err_max']:.2%}; Krylov steps "
                f"{f['krylov_steps']}; exact = the item's VJPs + 2 SVDs"),
        ]

    return f, rows
