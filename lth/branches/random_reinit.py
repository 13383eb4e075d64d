"""random_reinit: the ticket's mask on a fresh random initialisation (Frankle & Carbin 2019).

Tests whether the ticket's initial values matter, beyond its mask.
"""
from __future__ import annotations

from lth.branches.base import Branch, BranchContext, JobPlan, PlotStyle
from lth.masks import apply_mask


def plan(ctx: BranchContext) -> JobPlan:
    return JobPlan(ctx.ticket, apply_mask(ctx.fresh_init(ctx.seed_of("init") % 2**32), ctx.ticket))


BRANCH = Branch("random_reinit", is_control=True, style=PlotStyle("C1", "s"), plan=plan)
