"""The branch registry: every module of this package that defines `BRANCH` is a branch.

Adding a control is one file: a module here with `BRANCH = Branch(...)` (see `base.py`); modules
whose name starts with `_` hold code shared by several branches.
"""
from __future__ import annotations

import importlib
import pkgutil

from lth.branches.base import TICKET_STYLE, Branch, LineBranch, PlotStyle


def _discover() -> dict[str, Branch | LineBranch]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        branch = importlib.import_module(f"{__name__}.{info.name}").BRANCH
        found[branch.name] = branch
    return found


BRANCHES: dict[str, Branch | LineBranch] = _discover()
CONTROLS: tuple[str, ...] = tuple(name for name, b in BRANCHES.items() if b.is_control)


def style(line: str) -> PlotStyle:
    """The plot style of `ticket` or of a branch (a neutral one for names no branch has)."""
    if line == "ticket":
        return TICKET_STYLE
    branch = BRANCHES.get(line)
    return branch.style if branch is not None else PlotStyle("C5", "x")


__all__ = ["BRANCHES", "CONTROLS", "Branch", "LineBranch", "PlotStyle", "style"]
