"""rotated: a whole IMP line on the network with a random orthogonal change of basis folded into
theta_0 (the function is unchanged; `Environment.rotate`), in `branches/rotated/`.

Enabled by `imp.rotation: true`. Its levels are compared with the ticket line's at equal sparsity.
"""
from __future__ import annotations

from lth.branches.base import LineBranch, PlotStyle

BRANCH = LineBranch("rotated", style=PlotStyle("C4", "D", "-"),
                    transform=lambda env, net, generator: env.rotate(net, generator),
                    enabled=lambda cfg: bool(cfg.rotation))
