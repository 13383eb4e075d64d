"""T0, is there a ticket? The precondition of every other reading (Frankle & Carbin 2019).

Statistic per seed, at the sparsest level where the positional controls ran: test accuracy of the
ticket minus the mean of random_prune (a random mask with the ticket's per-layer counts) and
shuffle (the ticket's mask and values shuffled within each tensor). Null: 0, any sparse network of
this per-layer sparsity does as well. Rule: a ticket when the gap is credibly positive (95%
interval above 0) and at least one point (`ACC_MARGIN`: below it accuracies "match" in the
lottery-ticket literature); no ticket when the whole interval lies below one point (the ticket is
no better, or worse, than random sparse networks); inconclusive otherwise. Without a ticket there
is nothing to be a channel or a subcircuit: the verdict is `no ticket`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from channels.verdict import figures
from channels.verdict.base import (
    ACC_MARGIN,
    INCONCLUSIVE,
    NETWORK,
    NO_TICKET,
    TICKET,
    SiteResult,
    TestResult,
    TicketTest,
    bounds,
    read_sites,
)
from channels.verdict.rundata import RunData

POSITIONAL = ("random_prune", "shuffle")
METRIC = "test/acc"


def sparsest_common(run: RunData, branches: Sequence[str]) -> int | None:
    """The highest pruned level where the ticket and every one of `branches` that ran are finished."""
    ran = [b for b in branches if run.line(b)]
    levels = [lvl for lvl in run.levels if lvl >= 1 and ran and all(lvl in run.line(b) for b in ran)]
    return max(levels) if levels else None


def rule(site: SiteResult, values: list[float]) -> str:
    lo, hi = bounds(site)
    if lo > 0 and site.effect >= ACC_MARGIN:
        return TICKET
    return NO_TICKET if hi < ACC_MARGIN else INCONCLUSIVE


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    per_run = {}
    for run_ in runs:
        level = sparsest_common(run_, POSITIONAL)
        if level is None:
            continue
        controls = {b: run_.line(b)[level].test_metric(METRIC) for b in POSITIONAL if level in run_.line(b)}
        ticket = run_.levels[level].test_metric(METRIC)
        per_run[run_] = ticket - float(np.mean(list(controls.values())))
        result.details.append({"run": run_.name, "level": level, "density": run_.levels[level].density,
                               "ticket": ticket, **controls, "gap": per_run[run_]})
    return read_sites(result, {NETWORK: per_run} if per_run else {}, rule,
                      "no random_prune or shuffle control: add them to imp.branches")


TEST = TicketTest(
    "T0", "is there a ticket?",
    "test acc of the ticket - mean(random_prune, shuffle) at the sparsest control level",
    "0: a random sparse net of the ticket's per-layer sparsity does as well",
    "ticket if the 95% interval is above 0 and the gap >= 1 point; no ticket if the interval lies below "
    "1 point; else inconclusive. No ticket: the verdict is `no ticket`",
    votes=True, run=run, figure=figures.accuracy_gap, columns=("run", "level", "density", "ticket", *POSITIONAL, "gap"))
