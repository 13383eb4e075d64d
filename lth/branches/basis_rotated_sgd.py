"""basis_rotated_sgd: the level's ticket found by one-shot magnitude pruning in a random orthogonal
basis, retrained with SGD (the basis-dependence test; `lth.branches._basis`)."""
from lth.branches._basis import basis_plan
from lth.branches.base import Branch, PlotStyle

BRANCH = Branch("basis_rotated_sgd", is_control=False, style=PlotStyle("C8", ">", ":"),
                plan=basis_plan(rotate=True, sgd=True))
