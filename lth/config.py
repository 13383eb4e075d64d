"""How tickets are found (`ImpConfig`), and the tags that say which config fields are part of a
run's identity.

A run directory is named by the hash of its resolved config minus the *run-only* fields: those
that change how a run is executed or observed, not what it computes (more levels extend a run,
another device resumes it). Fields are tagged where they are declared:

- `run_only(default)`: never part of the identity;
- `added(default)`: a field introduced after run directories existed: left out of the identity
  while it holds its default, so older runs (which lacked it, and behaved as the default says)
  keep their hash.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lth.errors import LTCError
from lth.pruning import check_fraction

RUN_ONLY = "run_only"
ADDED = "added"


def run_only(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING):
    """A dataclass field left out of the run's identity."""
    return field(default=default, default_factory=default_factory, metadata={RUN_ONLY: True})


def added(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING):
    """A dataclass field left out of the run's identity while it equals its default."""
    return field(default=default, default_factory=default_factory, metadata={ADDED: True})


def identity_tags(cls: type) -> tuple[list[str], dict[str, object]]:
    """(run-only field names, {added field name: default}) of a config dataclass."""
    run, new = [], {}
    for f in dataclasses.fields(cls):
        if f.metadata.get(RUN_ONLY):
            run.append(f.name)
        elif f.metadata.get(ADDED):
            new[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return run, new


@dataclass
class ImpConfig:
    """How tickets are found.

    Args:
        levels: pruning levels after the dense level 0 (the run has levels 0..levels).
        prune_fraction: fraction of the *remaining* prunable weights removed at each level.
        rewind_step: k, the optimiser step whose weights survivors are rewound to (0 = init).
        strategy: `global` (one magnitude threshold across tensors) or `layerwise`.
        rate_overrides: glob pattern -> rate, pruned layerwise at that rate (e.g. `out.*: 0.1`).
        include: glob patterns of extra parameters to prune (biases, embeddings...).
        ignore: glob patterns of default-prunable parameters to leave dense.
        branches: branches run beside the ticket (`lth.branches`): the controls random_reinit,
            random_prune, shuffle, and `instability` (a second copy of the level trained with
            another data order, and the error barrier between the two copies; it runs at level 0 too).
        branch_levels: pruned levels at which the branches run (default: every pruned level);
            negative levels count from the last (-1 = the last level); levels beyond the run's are
            clipped to the last one (`resolved_branch_levels`), so any `levels` works with a recipe.
        instability_points: points on the line between the two copies where the error is measured.
        checkpoint_every_n_steps: how often an unfinished level saves a resumable checkpoint.
        rotation: also run a whole IMP line on the network with its basis rotated at init
            (function unchanged; `Environment.rotate`), in `branches/rotated/`.
        basis_sgd_lr: learning rate of the `basis_*_sgd` branches (SGD, momentum 0.9).
        basis_sgd_weight_decay: decoupled weight decay of the `basis_*_sgd` branches (each step
            w <- w (1 - lr * wd), as AdamW; 0 = none). The recipe's weight decay is not used there:
            tuned for Adam, it would be a coupled L2 under SGD.
    """

    levels: int = run_only(5)
    prune_fraction: float = 0.2
    rewind_step: int = 0
    strategy: str = "global"
    rate_overrides: dict[str, float] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    branches: list[str] = run_only(default_factory=lambda: ["random_reinit", "random_prune", "shuffle"])
    branch_levels: list[int] | None = run_only(None)
    instability_points: int = 11
    checkpoint_every_n_steps: int = run_only(200)
    rotation: bool = False
    basis_sgd_lr: float = added(0.05)
    basis_sgd_weight_decay: float = added(0.0)

    def resolved_branch_levels(self) -> tuple[list[int], str | None]:
        """The pruned levels the branches run at, and a note when `branch_levels` named levels this
        run lacks (clipped to 1..levels) or none remain."""
        if self.branch_levels is None:
            return list(range(1, self.levels + 1)), None
        wanted = [lvl + self.levels + 1 if lvl < 0 else lvl for lvl in self.branch_levels]
        if self.levels == 0:
            resolved = []
        else:
            resolved = sorted({min(max(lvl, 1), self.levels) for lvl in wanted})
        if all(1 <= lvl <= self.levels for lvl in wanted):
            return resolved, None
        where = f"levels {resolved}" if resolved else "no pruned level (imp.levels is 0)"
        return resolved, (f"note: imp.branch_levels {self.branch_levels} reach past the pruned levels "
                          f"1..{self.levels}; the branches run at {where}")

    def validate(self, max_steps: int) -> None:
        from lth.branches import BRANCHES

        if self.levels < 0:
            raise LTCError(f"imp.levels must be >= 0, got {self.levels}")
        check_fraction(self.prune_fraction, "imp.prune_fraction")
        if self.strategy not in ("global", "layerwise"):
            raise LTCError(f"unknown imp.strategy {self.strategy!r}: use global or layerwise")
        if self.rewind_step < 0:
            raise LTCError(f"imp.rewind_step must be >= 0, got {self.rewind_step}")
        if max_steps <= 0:
            raise LTCError("trainer.max_steps must be set (> 0): IMP levels are measured in optimiser steps")
        if self.rewind_step > max_steps:
            raise LTCError(f"imp.rewind_step={self.rewind_step} is beyond the training length "
                           f"trainer.max_steps={max_steps}; choose a step in [0, {max_steps}]")
        per_level = [name for name, b in BRANCHES.items() if not b.is_line]
        unknown = [b for b in self.branches if b not in per_level]
        if unknown:
            raise LTCError(f"unknown branch {unknown[0]!r}: use any of {per_level}")
        if 0 in (self.branch_levels or []):
            raise LTCError("imp.branch_levels holds 0, the dense level: list pruned levels (1, 2, ... or -1 for "
                           "the last); the branches that belong at level 0 (instability) run there anyway")
        if self.checkpoint_every_n_steps < 1:
            raise LTCError("imp.checkpoint_every_n_steps must be >= 1")
        if self.basis_sgd_lr <= 0:
            raise LTCError(f"imp.basis_sgd_lr must be positive, got {self.basis_sgd_lr}")
        if not 0 <= self.basis_sgd_lr * self.basis_sgd_weight_decay < 1:
            raise LTCError(f"imp.basis_sgd_weight_decay must be >= 0 with basis_sgd_lr * weight decay < 1, "
                           f"got {self.basis_sgd_weight_decay}")
        if self.instability_points < 2:
            raise LTCError(f"imp.instability_points must be >= 2 (both copies), got {self.instability_points}")
