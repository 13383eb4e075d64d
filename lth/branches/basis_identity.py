"""basis_identity: the level's ticket found by one-shot magnitude pruning in the original basis,
retrained with the recipe's optimiser (the basis-dependence test; `lth.branches._basis`)."""
from lth.branches._basis import basis_plan
from lth.branches.base import Branch, PlotStyle

BRANCH = Branch("basis_identity", is_control=False, style=PlotStyle("C7", "<"),
                plan=basis_plan(rotate=False, sgd=False))
