"""Benchmark case `jacobian_sketch`: the sketched sweep against the exact one, side by side in one process.

GPT-2-small shape (12 x 768, random weights), J(t, s) = d resid_post.11[t] / d resid_pre.0[s].
For the same targets t (all sources s <= t each), both item methods of `channels.sweep.items` run
in turn with the sweep's defaults: exact (768 VJPs, full SVD of every block), sketch (at least
`sketch_size` random VJPs, grown until every block's participation ratio has a reported relative
standard error <= 2%; moments of every block; top-8 of the blocks at t - s = 0 and 2 by block
Krylov on positions t - 2..t with the earlier ones cached, started from the sketch's own rows,
stopped by its error estimate) and the sketch's moments alone (no top-k).
Reported: time per summarised block and the ratios, the sketch's relative error on the participation
ratio (every block) and on the top-8 singular values (the Krylov blocks) against the exact sweep,
the cotangents m used per target, the Krylov steps taken, and peak memory.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from channels.metrics import METRIC_NAMES
from channels.sweep.items import ItemInput, exact_item, sketch_item
from channels.sweep.plan import Pair, SweepSettings, target_order
from experiments.bench import jacobian as shape
from experiments.bench.jacobian import SITE_B, gpt2_small, random_ids
from experiments.bench.suite import BenchSettings, CaseResult, PeakMemory, row
from experiments.bench.timing import timed

PAIR = Pair("resid_pre.0", SITE_B)


def run(context: int, n_targets: int, sketch_size: int, chunk_size: int, device: str) -> dict:
    """Both methods on `n_targets` targets of one random context; errors against the exact one."""
    where = torch.device(device)
    model = gpt2_small(context, where, 0)
    ids = random_ids(model, context, where, 0)[0]
    settings = SweepSettings(method="sketch", sketch_size=sketch_size, sketch_topk=8)
    moments_only = SweepSettings(method="sketch", sketch_size=sketch_size, sketch_topk=8, sketch_topk_offsets=[])
    names = list(METRIC_NAMES)
    out = {"context": context, "sketch_size": sketch_size, "exact_s": 0.0, "sketch_s": 0.0, "moments_s": 0.0,
           "blocks": 0, "pr_rel_err": [], "top8_rel_err": [], "m_used": [],
           "krylov_steps": []}
    for t in target_order(context, n_targets):
        job = ItemInput(model, ids, PAIR, 0, t, list(range(t + 1)), True, settings, chunk_size,
                        torch.eye(shape.WIDTH, dtype=torch.float64), shape.WIDTH)
        exact_s, (exact, _) = timed(lambda: exact_item(job), where)
        sketch_s, (sketched, _) = timed(lambda: sketch_item(job), where)
        moments = dataclasses.replace(job, settings=moments_only)
        moments_s, _ = timed(lambda: sketch_item(moments), where)
        out["exact_s"] += exact_s
        out["sketch_s"] += sketch_s
        out["moments_s"] += moments_s
        out["blocks"] += t + 1
        pr = names.index("participation_ratio")
        truth = exact["metrics"][:, pr]
        out["pr_rel_err"] += list(np.abs(sketched["metrics"][:, pr] - truth) / truth)
        out["m_used"].append(int(sketched["sketch_size"]))
        for offset in (0, 2):
            if t - offset >= 0:
                want = exact["singular_values"][t - offset, :8]
                got = sketched["singular_values"][t - offset, :8]
                out["top8_rel_err"].append(float(np.max(np.abs(got - want) / want)))
                out["krylov_steps"].append(int(sketched["krylov_steps"][t - offset]))
    out["speedup_per_block"] = out["exact_s"] / out["sketch_s"]
    out["moments_speedup_per_block"] = out["exact_s"] / out["moments_s"]
    out["pr_rel_err_median"] = float(np.median(out["pr_rel_err"]))
    out["pr_rel_err_max"] = float(np.max(out["pr_rel_err"]))
    out["top8_rel_err_max"] = float(np.max(out["top8_rel_err"]))
    out["m_mean"], out["m_max"] = float(np.mean(out["m_used"])), int(np.max(out["m_used"]))
    out["pr_rel_err"] = [float(v) for v in out["pr_rel_err"]]
    return out


def case(s: BenchSettings) -> CaseResult:
    """The suite's `jacobian_sketch` case (sizes: `sketch_context`, `sketch_targets`, `sketch_size`)."""
    z = s.sizes
    f = run(z.sketch_context, z.sketch_targets, z.sketch_size, z.jac_chunk, s.device)

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("jacobian_sketch", f"sketch vs exact sweep per block, context {f['context']}, m {f['sketch_size']}",
                    f["sketch_s"] / f["blocks"], f["exact_s"] / f["blocks"], f["speedup_per_block"],
                    "exact / sketch (speedup)", mem,
                    f"target >= 10; top-8 sigma max rel err {f['top8_rel_err_max']:.2%} (target 2%; Krylov steps "
                    f"{f['krylov_steps']}); participation ratio rel err median {f['pr_rel_err_median']:.1%}, max "
                    f"{f['pr_rel_err_max']:.1%} (target 5%); m per target {f['m_used']} (from {f['sketch_size']})"),
                row("jacobian_sketch", f"sketch moments only (no top-k) vs exact per block, context {f['context']}",
                    f["moments_s"] / f["blocks"], f["exact_s"] / f["blocks"], f["moments_speedup_per_block"],
                    "exact / moments (speedup)", mem,
                    "||J||_F^2 and participation ratio of every block; top-k singular values at no offset")]

    return f, rows
