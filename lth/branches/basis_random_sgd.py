"""basis_random_sgd: a random mask at the ticket's per-tensor counts, retrained like the SGD basis arms
(the power check of the basis-dependence test; `lth.branches._basis`)."""
from lth.branches._basis import random_mask_plan
from lth.branches.base import Branch, PlotStyle

BRANCH = Branch("basis_random_sgd", is_control=False, style=PlotStyle("C9", "v", ":"), plan=random_mask_plan(sgd=True))
