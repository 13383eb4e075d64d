"""T0, is there a ticket? The precondition of every other reading (Frankle & Carbin 2019).

Statistic per seed, at the sparsest level where the positional controls ran: the log error ratio
    r = log(mean_c err_c / err_ticket),   err = max(1 - test acc, ERROR_FLOOR),
over the controls c = random_prune (a random mask with the ticket's per-layer counts) and shuffle
(the ticket's mask and values shuffled within each tensor); beside it the accuracy gap
    g = acc_ticket - mean_c acc_c.
Null: r = 0 and g = 0, any sparse network of this per-layer sparsity does as well.

Why a ratio of errors and not the gap alone: a random sparse network fails by chance, when its
mask happens to cut what the function needs (an input coordinate the label reads, a hidden unit
that carries it). Those failures are rare and large, so the gap's seeds are heavy-tailed (four
seeds at +2 points and one at +25 give a t-interval across 0, though every seed favours the
ticket), while the ratio counts "how many times more errors" and keeps a seed at the ceiling on
the same footing as one in the middle. The gap still guards the size: near the ceiling a ratio of
7 can be 0.6 points (0.999 against 0.993), which is no ticket.

Rule: a ticket when the 95% interval of r lies above 0 and the gap is at least one point
(`ACC_MARGIN`: below it accuracies "match" in the lottery-ticket literature); no ticket when the
gap's whole interval lies below one point (the ticket is no better, or worse, than random sparse
networks); inconclusive otherwise. Without a ticket there is nothing to be a channel or a
subcircuit: the verdict is `no ticket`. An inconclusive T0 stops nothing (`battery.verdict`): the
sparsity read does not separate the ticket from a random sparse network, and the verdict says so
beside the sites' reading.

Invariances: r and g read test accuracies only, so every reparametrisation that keeps the
trained functions keeps them; r is unchanged when the test set is replaced by copies of itself.
"""
from __future__ import annotations

import math
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
    summarise,
)
from channels.verdict.rundata import RunData

POSITIONAL = ("random_prune", "shuffle")
METRIC = "test/acc"
ERROR_FLOOR = 1e-3  # an error rate under 0.1% counts as 0.1%: one error in the 1000-2000 test examples used here


def sparsest_common(run: RunData, branches: Sequence[str]) -> int | None:
    """The highest pruned level where the ticket and every one of `branches` that ran are finished."""
    ran = [b for b in branches if run.line(b)]
    levels = [lvl for lvl in run.levels if lvl >= 1 and ran and all(lvl in run.line(b) for b in ran)]
    return max(levels) if levels else None


def log_error_ratio(ticket: float, controls: Sequence[float]) -> float:
    """log(mean control error / ticket error), errors floored at `ERROR_FLOOR`: > 0 when the ticket errs less."""
    control_error = max(1.0 - float(np.mean(controls)), ERROR_FLOOR)
    return math.log(control_error / max(1.0 - ticket, ERROR_FLOOR))


def reading(ratio: SiteResult, gap: SiteResult) -> str:
    """The rule of the module docstring, from the ratio's and the gap's intervals."""
    if bounds(ratio)[0] > 0 and gap.effect >= ACC_MARGIN:
        return TICKET
    return NO_TICKET if bounds(gap)[1] < ACC_MARGIN else INCONCLUSIVE


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    ratios, gaps = {}, {}
    for run_ in runs:
        level = sparsest_common(run_, POSITIONAL)
        if level is None:
            continue
        controls = {b: run_.line(b)[level].test_metric(METRIC) for b in POSITIONAL if level in run_.line(b)}
        ticket = run_.levels[level].test_metric(METRIC)
        ratios[run_] = log_error_ratio(ticket, list(controls.values()))
        gaps[run_] = ticket - float(np.mean(list(controls.values())))
        result.details.append({"run": run_.name, "level": level, "density": run_.levels[level].density,
                               "ticket": ticket, **controls, "gap": gaps[run_], "log_error_ratio": ratios[run_]})
    if not ratios:
        result.note = "no random_prune or shuffle control: add them to imp.branches"
        return result
    gap = summarise(gaps, lambda site, values: "")
    lo, hi = gap.ci
    note = f"accuracy gap {gap.effect:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else "")
    result.sites[NETWORK] = summarise(ratios, lambda ratio, values: reading(ratio, gap), note)
    return result


TEST = TicketTest(
    "T0", "is there a ticket?",
    "log(mean error of random_prune, shuffle / error of the ticket) at the sparsest control level, errors "
    f"floored at {ERROR_FLOOR:g}; beside it the accuracy gap ticket - mean(controls)",
    "0: a random sparse net of the ticket's per-layer sparsity does as well",
    "ticket if the ratio's 95% interval is above 0 and the gap >= 1 point; no ticket if the gap's interval lies "
    "below 1 point; else inconclusive. No ticket: the verdict is `no ticket`; inconclusive: the sites still read, "
    "and the verdict says the ticket is unclear",
    votes=True, run=run, figure=figures.error_ratio,
    columns=("run", "level", "density", "ticket", *POSITIONAL, "gap", "log_error_ratio"))
