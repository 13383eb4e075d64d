"""basis_rotated: the level's ticket found by one-shot magnitude pruning in a random orthogonal
basis, retrained with the recipe's optimiser (the basis-dependence test; `lth.branches._basis`)."""
from lth.branches._basis import basis_plan
from lth.branches.base import Branch, PlotStyle

BRANCH = Branch("basis_rotated", is_control=False, style=PlotStyle("C8", ">"),
                plan=basis_plan(rotate=True, sgd=False))
