"""The dial: one planted world moved from coordinate-aligned (alpha = 0, subcircuits) to dense
(alpha = 1, channels). A statistic that measures what it claims falls as alpha rises (each voting
statistic is on a 0 = channels .. 1 = subcircuits scale, or an accuracy gap that a privileged
basis opens), and the verdict moves from subcircuits through inconclusive to channels."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

VOTING = ("T1", "T2", "T3", "T4")
SLACK = 0.05  # a rise smaller than this between neighbouring alphas is noise, not a reversal


def _interval(site: dict) -> tuple[float, float]:
    """A site's 95% interval (its effect when it has none)."""
    lo, hi = site.get("ci") or (None, None)
    effect = site.get("effect")
    return (lo, hi) if lo is not None and hi is not None and np.isfinite([lo, hi]).all() else (effect, effect)


def dial_summary(entries: Sequence[dict]) -> dict:
    """Per voting test and site: its mean effect at each alpha; `monotone` when it never rises by
    more than `SLACK` as alpha grows; `reversals`, the steps between read alphas where it rises by
    more than SLACK *and* the two 95% intervals (over seeds) are disjoint, a rise the seeds cannot
    put down to noise; `planted` when the dial's ends plant a truth at the site (input, act.0).
    The verdict at each alpha."""
    dial = sorted((e for e in entries if e.get("family") == "dial"), key=lambda e: e["alpha"])
    if not dial:
        return {}
    alphas = [e["alpha"] for e in dial]
    planted = {site for e in dial for site in e.get("truths", {})}
    series = {}
    for key in VOTING:
        sites = sorted({site for e in dial for site in e["tests"].get(key, {}).get("sites", {})})
        for site in sites:
            found = [e["tests"][key]["sites"].get(site, {}) for e in dial]
            values = [f.get("effect") for f in found]
            read = [(a, f) for a, f in zip(alphas, found) if f.get("effect") is not None and np.isfinite(f["effect"])]
            steps = np.diff([f["effect"] for _, f in read])
            reversals = [[a0, a1] for (a0, f0), (a1, f1) in pairwise(read)
                         if f1["effect"] - f0["effect"] > SLACK and _interval(f1)[0] > _interval(f0)[1]]
            series[f"{key} {site}"] = {"values": values, "planted": site in planted, "reversals": reversals,
                                       "monotone": bool(len(read) >= 2 and np.all(steps <= SLACK))}
    planted_series = [s for s in series.values() if s["planted"]]
    return {"alphas": alphas, "verdicts": [e["verdict"] for e in dial], "statistics": series,
            "monotone": bool(series) and all(s["monotone"] for s in series.values()),
            "planted_without_reversal": bool(planted_series) and not any(s["reversals"] for s in planted_series)}
