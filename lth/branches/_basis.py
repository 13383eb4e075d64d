"""The plan shared by the basis-dependence branches (`basis_*`): a ticket found in another basis.

At level L the trained dense network (level 0) is written in a new basis (`lth.basis`: a random
rotation, or the identity for the control arm, which goes through the same change with Q = I: a
transformer's norms are folded in both arms), pruned there by magnitude in one shot to the
level-L ticket's per-tensor counts (`prune_to_counts`), rewound to theta_k written in the same
basis, and retrained: with the recipe's optimiser, or with SGD (momentum 0.9, a constant rate
`imp.basis_sgd_lr` after the recipe's warm-up, decoupled weight decay `imp.basis_sgd_weight_decay`,
none by default: the recipe's weight decay and schedule, tuned for Adam, would be a coupled L2
under SGD and a decay that stops SGD before it has learned).
Both arms start from the same dense weights and go through the same one-shot procedure (the
ticket's own iterative masks, already sparse in the original basis, would favour that basis), so
their accuracy gap is the cost of the basis alone; under SGD, training the dense network in the
rotated basis would have given exactly the rotated weights, so the gap is what magnitude pruning
sees in the coordinates and nothing else. A third arm (`basis_random`, `basis_random_sgd`) retrains a
random mask at the same counts the same way: the accuracy a mask that knows nothing reaches, below which the
identity arm must sit for the two arms' equivalence to say anything.
"""
from __future__ import annotations

from collections.abc import Callable

from lth.branches.base import BranchContext, JobPlan
from lth.controls import random_mask_like
from lth.masks import apply_mask
from lth.pruning import prune_to_counts

SGD_MOMENTUM = 0.9


def sgd_overrides(ctx: BranchContext) -> dict:
    """The basis arms' SGD: momentum, a constant rate after the warm-up, decoupled weight decay."""
    return {"optimizer": "sgdw", "lr": ctx.sgd_lr, "momentum": SGD_MOMENTUM,
            "weight_decay": ctx.sgd_weight_decay, "scheduler": "constant"}


def basis_plan(rotate: bool, sgd: bool) -> Callable[[BranchContext], JobPlan]:
    def plan(ctx: BranchContext) -> JobPlan:
        change = ctx.basis_change(ctx.seed_of("basis"), rotate)
        mask = prune_to_counts(change.weights(ctx.dense_weights()), ctx.ticket)
        start = apply_mask(change.weights(ctx.theta_k()), mask)
        return JobPlan(mask, start, task_overrides=sgd_overrides(ctx) if sgd else None, prepare=change.attach)

    return plan


def random_mask_plan(sgd: bool) -> Callable[[BranchContext], JobPlan]:
    """The arms' power check: a uniformly random mask at the same per-tensor counts, through the
    identity arm's change (Q = I: the same folding) and the same retraining. Where it retrains as
    well as the identity arm, no mask could have failed, and the arms' equivalence means nothing."""
    def plan(ctx: BranchContext) -> JobPlan:
        change = ctx.basis_change(ctx.seed_of("basis"), False)
        mask = random_mask_like(ctx.ticket, ctx.generator())
        start = apply_mask(change.weights(ctx.theta_k()), mask)
        return JobPlan(mask, start, task_overrides=sgd_overrides(ctx) if sgd else None, prepare=change.attach)

    return plan
