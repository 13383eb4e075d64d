"""instability: a second copy of a level, trained from the same weights and mask with another data
order, and the error barrier on the straight line between the copies (Frankle et al. 2020).

The level's ticket is copy a, so each measurement costs one extra training. It runs at the dense
level 0 too (stability from initialisation). The result lands in the copy's `metrics.json`
under `instability`, and in W&B as `instability/*` with the line as a table.
"""
from __future__ import annotations

from lth.branches.base import Branch, BranchContext, JobPlan, PlotStyle
from lth.connectivity import error_barrier
from lth.masks import apply_mask
from lth.seeds import derive_seed

LOGGED = ("barrier", "barrier_vs_mean", "error_a", "error_b")


def data_order(data_order_seed: int) -> int:
    """The copy's data order: another stream than the ticket line's."""
    return derive_seed(data_order_seed, "instability") % 2**31


def plan(ctx: BranchContext) -> JobPlan:
    start = None if ctx.level == 0 else apply_mask(ctx.theta_k(), ctx.ticket)

    def finish(task, trainer, logger) -> dict:
        copy_a = ctx.ticket_weights()
        copy_b = {k: v.detach().cpu().clone() for k, v in task.net.state_dict().items()}
        device = trainer.strategy.root_device
        result = error_barrier(task.net, copy_a, copy_b, lambda net: ctx.test_error(task, device),
                               ctx.instability_points)
        if logger is not None:
            logger.log_metrics({f"instability/{k}": result[k] for k in LOGGED}, step=trainer.global_step)
            if hasattr(logger, "log_table"):
                logger.log_table("instability/line", columns=["alpha", "test_error"],
                                 data=[list(p) for p in zip(result["alphas"], result["errors"])])
        return result

    return JobPlan(ctx.ticket, start, data_order(ctx.data_order_seed), finish)


BRANCH = Branch("instability", is_control=False, style=PlotStyle("C6", "P"), plan=plan, at_dense=True)
