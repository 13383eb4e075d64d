"""Calibration: how the battery reads planted worlds whose truth is known.

Each world's runs (several seeds) get one verdict and one reading per test; the confusion matrix
counts truth x reading over the worlds, for the verdict and for every test. The error rate is
the fraction of worlds whose verdict is not their truth.
"""
from __future__ import annotations

from collections.abc import Sequence

from channels.verdict.base import (
    CHANNELS,
    INCONCLUSIVE,
    NETWORK,
    NO_TICKET,
    NOT_RUN,
    SUBCIRCUITS,
    TICKET,
)
from channels.verdict.battery import VERDICTS
from channels.verdict.identity import NOT_SHARED, SHARED
from channels.verdict.signature import KEPT_ALIKE, KEPT_BETTER

TRUTHS = (SUBCIRCUITS, CHANNELS, NO_TICKET)
ORDER = (SUBCIRCUITS, CHANNELS, TICKET, NO_TICKET, SHARED, NOT_SHARED, KEPT_BETTER, KEPT_ALIKE, INCONCLUSIVE, NOT_RUN)


def confusion(pairs: Sequence[tuple[str, str]], columns: Sequence[str]) -> dict[str, dict[str, int]]:
    """truth -> reading -> count, every truth and column present (0 where none), readings in a
    fixed order (`ORDER`, then any other)."""
    seen = set(columns) | {reading for _, reading in pairs}
    cols = [c for c in ORDER if c in seen] + sorted(seen - set(ORDER))
    table = {truth: {c: 0 for c in cols} for truth in dict.fromkeys([*TRUTHS, *(t for t, _ in pairs)])}
    for truth, reading in pairs:
        table[truth][reading] += 1
    return table


def world_entry(name: str, truth: str, result: dict) -> dict:
    """One world's line of calibration.json, from its verdict dict (`battery.verdict`)."""
    tests = {key: {"reading": t["reading"], "provisional": t["provisional"],
                   "sites": {site: s["reading"] for site, s in t["sites"].items()}}
             for key, t in result["tests"].items()}
    seeds = max((len(s["units"]) for t in result["tests"].values() for s in t["sites"].values()), default=0)
    return {"world": name, "truth": truth, "verdict": result["verdict"], "why": result["why"],
            "provisional": result["provisional"], "seeds": seeds, "tests": tests,
            "sites": {site: s["reading"] for site, s in result["sites"].items()}}


def calibration(entries: Sequence[dict]) -> dict:
    """The confusion matrices (verdict, then each test) and the verdict's error rate."""
    matrices = {"verdict": confusion([(e["truth"], e["verdict"]) for e in entries], VERDICTS)}
    for key in entries[0]["tests"] if entries else []:
        matrices[key] = confusion([(e["truth"], e["tests"][key]["reading"]) for e in entries], [])
    wrong = [e["world"] for e in entries if e["verdict"] != e["truth"]]
    return {"worlds": list(entries), "confusion": matrices, "errors": wrong,
            "error_rate": len(wrong) / len(entries) if entries else float("nan"),
            "diagonal": not wrong and bool(entries), "network_site": NETWORK}
