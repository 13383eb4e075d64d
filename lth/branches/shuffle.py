"""shuffle: the ticket's mask shuffled within each tensor, its surviving rewound values carried along.

Same values and per-tensor counts as the ticket, random places.
"""
from __future__ import annotations

from lth.branches.base import Branch, BranchContext, JobPlan, PlotStyle
from lth.controls import shuffle_within_tensors


def plan(ctx: BranchContext) -> JobPlan:
    theta_k = ctx.theta_k()
    mask, shuffled = shuffle_within_tensors(ctx.ticket, theta_k, ctx.generator())
    return JobPlan(mask, {**theta_k, **shuffled})


BRANCH = Branch("shuffle", is_control=True, style=PlotStyle("C3", "v"), plan=plan)
