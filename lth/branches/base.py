"""What a branch is: a job trained beside a level of the ticket line (or a whole second line),
built from that level's ticket.

A branch says how it builds its job (`plan`: mask, start weights, data order, what it measures
at the end), how it is named (its directory under `branches/`), how it is drawn in figures
(`style`), and whether it counts as a control of the ticket (`is_control`: the ticket tests
compare the ticket with it at equal sparsity). One file per branch in this package; the registry
(`lth.branches.BRANCHES`) finds them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lth.basis import BasisChange
from lth.masks import Mask
from lth.seeds import derive_seed, generator

State = dict[str, torch.Tensor]
# finish(task, trainer, logger) -> what the branch measured, stored in metrics.json under its name
Finish = Callable[[object, object, object], dict]


@dataclass(frozen=True)
class PlotStyle:
    """How a line is drawn in the report's figures (matplotlib colour, marker, line style)."""

    color: str
    marker: str
    linestyle: str = "none"


TICKET = "ticket"  # the ticket line's name where it sits beside branches (tables, figures, W&B)
TICKET_STYLE = PlotStyle("C0", "o", "-")


@dataclass
class JobPlan:
    """One branch job: its mask, its start weights (None = theta_0), its data order (None = the
    run's), an optional measurement of the trained job, optimiser settings that replace the
    recipe's (`task_overrides`, e.g. SGD for the basis test) and `prepare(net)`, called on the
    freshly built net before training (e.g. the input hook of a change of basis)."""

    mask: Mask
    start: State | None
    data_order_seed: int | None = None
    finish: Finish | None = None
    task_overrides: dict | None = None
    prepare: Callable[[torch.nn.Module], None] | None = None


@dataclass
class BranchContext:
    """What the driver hands a branch at one level."""

    name: str
    level: int
    seed: int
    data_order_seed: int
    ticket: Mask                           # the level's ticket mask
    theta_k: Callable[[], State]           # the rewind weights
    ticket_weights: Callable[[], State]    # the level's trained ticket
    dense_weights: Callable[[], State]     # the trained dense network (level 0)
    fresh_init: Callable[[int], State]     # a new random initialisation from a seed
    test_error: Callable[[object, torch.device], float]
    basis_change: Callable[[int, bool], BasisChange]  # (seed, rotate) -> a function-preserving change of basis
    instability_points: int
    sgd_lr: float
    sgd_weight_decay: float

    def seed_of(self, *parts: int | str) -> int:
        """The branch's own seed at this level (`lth.seeds.derive_seed`)."""
        return derive_seed(self.seed, self.name, self.level, *parts)

    def generator(self) -> torch.Generator:
        return generator(self.seed, self.name, self.level)


@dataclass(frozen=True)
class Branch:
    """A branch run at chosen levels of the ticket line.

    Args:
        name: its directory under `branches/` and its name in `imp.branches`.
        is_control: the ticket is compared with it at equal sparsity (the LTH controls).
        style: how figures draw it.
        at_dense: it also runs at level 0.
    """

    name: str
    is_control: bool
    style: PlotStyle
    plan: Callable[[BranchContext], JobPlan]
    at_dense: bool = False
    is_line: bool = field(default=False, init=False)


@dataclass(frozen=True)
class LineBranch:
    """A whole secondary IMP line (levels 0..L of its own, laid out like a run under
    `branches/<name>/`), started from a transformed theta_0.

    `transform(env, net, generator)` changes the freshly initialised net in place; `enabled(cfg)`
    says whether an `ImpConfig` asks for the line.
    """

    name: str
    style: PlotStyle
    transform: Callable[[object, torch.nn.Module, torch.Generator], None]
    enabled: Callable[[object], bool]
    is_control: bool = field(default=False, init=False)
    is_line: bool = field(default=True, init=False)
