"""random_prune: a uniformly random mask with the ticket's per-tensor counts, on the rewound weights.

Tests whether the ticket's positions matter at its per-layer sparsity.
"""
from __future__ import annotations

from lth.branches.base import Branch, BranchContext, JobPlan, PlotStyle
from lth.controls import random_mask_like
from lth.masks import apply_mask


def plan(ctx: BranchContext) -> JobPlan:
    mask = random_mask_like(ctx.ticket, ctx.generator())
    return JobPlan(mask, apply_mask(ctx.theta_k(), mask))


BRANCH = Branch("random_prune", is_control=True, style=PlotStyle("C2", "^"), plan=plan)
