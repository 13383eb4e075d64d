"""Did the dense network learn anything? The precondition before every other reading.

Statistic per seed: the dense network's test accuracy minus chance, chance being the accuracy of
always predicting the most frequent label (`test/chance` in the level's metrics, or else the
held-out labels' most frequent class). Null: 0. Rule: learned when the gap is credibly positive
(95% interval above 0) and at least one point (`ACC_MARGIN`); otherwise `nothing learned`, and
the verdict says so: there is no function for a ticket to be a channel or a subcircuit of.
Invariances: accuracies only, unchanged by any reparametrisation of the same function.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from channels.verdict import figures
from channels.verdict.base import (
    ACC_MARGIN,
    NETWORK,
    SiteResult,
    TestResult,
    TicketTest,
    bounds,
    read_sites,
)
from channels.verdict.rundata import RunData

LEARNED, NOTHING_LEARNED = "learned", "nothing learned"
CHANCE = "test/chance"


def chance(run: RunData, networks=None) -> float:
    """The accuracy of always predicting the most frequent label: from the dense level's metrics,
    else from the held-out labels (nan when neither is available)."""
    recorded = run.dense.test_metric(CHANCE)
    if math.isfinite(recorded) or networks is None:
        return recorded
    _, y = networks.evaluation_set(run)
    labels = y[y != -100].reshape(-1).numpy()
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else math.nan


def rule(site: SiteResult, values: list[float]) -> str:
    lo, _ = bounds(site)
    return LEARNED if lo > 0 and site.effect >= ACC_MARGIN else NOTHING_LEARNED


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    per_run = {}
    for run_ in runs:
        level = chance(run_, networks)
        accuracy = run_.dense.test_metric()
        if math.isfinite(level) and math.isfinite(accuracy):
            per_run[run_] = accuracy - level
            result.details.append({"run": run_.name, "accuracy": accuracy, "chance": level, "gap": per_run[run_]})
    return read_sites(result, {NETWORK: per_run} if per_run else {}, rule,
                      "no chance level: the runs record no test/chance and their networks cannot be rebuilt")


TEST = TicketTest(
    "L", "did the dense network learn?",
    "dense test acc - chance (the most frequent label's share)",
    "0: the network predicts no better than the most frequent label",
    "learned if the 95% interval is above 0 and the gap >= 1 point; else nothing learned (the verdict says so)",
    votes=True, run=run, figure=figures.accuracy_gap, columns=("run", "accuracy", "chance", "gap"))
