"""Calibration: how the battery reads planted worlds whose truth is known, site by site.

A world instance plants a truth at some sites (the input, the first hidden layer) and nothing at
the others; a few plant a verdict of their own (`no ticket`, `nothing learned`). Scoring:

- a site is read right when its reading is its planted truth (firm: two tests agree, none against);
- an instance is read right when its planted verdict is the verdict, or, for the rest, when every
  planted site is read right and the verdict is neither a precondition's nor inconclusive (a
  `mixed` verdict that names an unplanted site's reading beside the planted one is right: the
  hidden layers of a world that plants only its input are whatever the student made of them);
- an *opposite* reading is a planted site read as the other picture: the error that matters most.

The error rates carry exact (Clopper-Pearson) 95% intervals: zero errors in n instances bound the
rate only below 1 - 0.025^(1/n). Instances without truths (the dial's middle) are not scored.
"""
from __future__ import annotations

from collections.abc import Sequence

from channels.verdict.base import (
    CHANNELS,
    INCONCLUSIVE,
    MIXED,
    NO_TICKET,
    NOT_RUN,
    SUBCIRCUITS,
    TICKET,
)
from channels.verdict.battery import CONFLICT, VERDICTS
from channels.verdict.identity import NOT_SHARED, SHARED
from channels.verdict.learned import LEARNED, NOTHING_LEARNED
from channels.verdict.signature import KEPT_ALIKE, KEPT_BETTER
from channels.verdict.stats import binomial_interval

ORDER = (SUBCIRCUITS, CHANNELS, MIXED, TICKET, NO_TICKET, LEARNED, NOTHING_LEARNED, SHARED, NOT_SHARED, KEPT_BETTER,
         KEPT_ALIKE, CONFLICT, INCONCLUSIVE, NOT_RUN)
OPPOSITE = {SUBCIRCUITS: CHANNELS, CHANNELS: SUBCIRCUITS}
PRECONDITION_VERDICTS = (NO_TICKET, NOTHING_LEARNED)


def confusion(pairs: Sequence[tuple[str, str]], columns: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """truth -> reading -> count, every column present (0 where none), readings in a fixed order."""
    seen = set(columns) | {reading for _, reading in pairs}
    cols = [c for c in ORDER if c in seen] + sorted(seen - set(ORDER))
    table = {truth: {c: 0 for c in cols} for truth in dict.fromkeys(t for t, _ in pairs)}
    for truth, reading in pairs:
        table[truth][reading] += 1
    return table


def instance_entry(name: str, describe: dict, truths: dict[str, str], verdict_truth: str, result: dict) -> dict:
    """One instance's line of calibration.json, from its verdict dict (`battery.verdict`)."""
    sites = {site: s["reading"] for site, s in result["sites"].items()}
    tests = {key: {"reading": t["reading"], "provisional": t["provisional"],
                   "sites": {site: {"reading": s["reading"], "effect": s["effect"], "ci": s["ci"]}
                             for site, s in t["sites"].items()}}
             for key, t in result["tests"].items()}
    seeds = max((len(s["units"]) for t in result["tests"].values() for s in t["sites"].values()), default=0)
    scored = bool(truths) or verdict_truth in PRECONDITION_VERDICTS
    if verdict_truth in PRECONDITION_VERDICTS:
        right = result["verdict"] == verdict_truth
    else:
        right = result["verdict"] not in (*PRECONDITION_VERDICTS, INCONCLUSIVE) and \
            all(sites.get(site) == truth for site, truth in truths.items())
    opposite = [site for site, truth in truths.items() if sites.get(site) == OPPOSITE[truth]]
    return {"name": name, **describe, "truths": truths, "verdict_truth": verdict_truth, "verdict": result["verdict"],
            "why": result["why"], "provisional": result["provisional"], "seeds": seeds, "sites": sites,
            "tests": tests, "scored": scored, "right": right if scored else None, "opposite": opposite}


def _rate(wrong: int, total: int) -> dict:
    lo, hi = binomial_interval(wrong, total)
    return {"wrong": wrong, "total": total, "rate": wrong / total if total else float("nan"), "interval": [lo, hi]}


def calibration(entries: Sequence[dict]) -> dict:
    """The confusion matrices (verdict, each planted site, each test at planted sites), the error
    rates of the verdict and of the sites with their intervals, and the opposite readings."""
    scored = [e for e in entries if e["scored"]]
    site_pairs = [(truth, e["sites"].get(site, NOT_RUN)) for e in scored for site, truth in e["truths"].items()]
    tests = sorted({key for e in scored for key in e["tests"]})
    matrices = {"verdict": confusion([(e["verdict_truth"], e["verdict"]) for e in scored], VERDICTS),
                "sites": confusion(site_pairs)}
    for key in tests:
        matrices[key] = confusion([(truth, e["tests"][key]["sites"].get(site, {}).get("reading", NOT_RUN))
                                   for e in scored for site, truth in e["truths"].items()])
    errors = [e["name"] for e in scored if not e["right"]]
    verdict = _rate(len(errors), len(scored))
    sites = _rate(sum(reading != truth for truth, reading in site_pairs), len(site_pairs))
    return {"instances": list(entries), "confusion": matrices, "errors": errors,
            "error_rate": verdict["rate"], "error_interval": verdict["interval"], "verdict_errors": verdict,
            "site_errors": sites, "opposite": [f"{e['name']} ({', '.join(e['opposite'])})" for e in scored
                                               if e["opposite"]]}
