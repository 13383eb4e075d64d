"""random_prune_module: a uniformly random mask with the ticket's count per module (a layer's
weight and bias drawn together as one vector), on the rewound weights.

The random baseline of work that prunes each layer's parameters as one vector, such as the MNIST-1D
lottery-ticket notebook: unlike random_prune it does not inherit how the ticket split a layer's
count between its weight and its bias (a magnitude ticket keeps most biases).
"""
from __future__ import annotations

from lth.branches.base import Branch, BranchContext, JobPlan, PlotStyle
from lth.controls import random_mask_per_module
from lth.masks import apply_mask


def plan(ctx: BranchContext) -> JobPlan:
    mask = random_mask_per_module(ctx.ticket, ctx.generator())
    return JobPlan(mask, apply_mask(ctx.theta_k(), mask))


BRANCH = Branch("random_prune_module", is_control=True, style=PlotStyle("C1", "s"), plan=plan)
