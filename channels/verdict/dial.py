"""The dial: one planted world moved from coordinate-aligned (alpha = 0, subcircuits) to dense
(alpha = 1, channels). A statistic that measures what it claims falls as alpha rises (each voting
statistic is on a 0 = channels .. 1 = subcircuits scale, or an accuracy gap that a privileged
basis opens), and the verdict moves from subcircuits through inconclusive to channels.

Each point is a mean over seeds, so "falls" is read against the seeds' noise. A step from alpha_0
to alpha_1 is a **reversal** when the statistic rises by more than `SLACK` plus the 95% margin of
the difference of the two means, sqrt(h_0^2 + h_1^2) with h the half-widths of the two 95%
t-intervals (two independent means: the margin of their difference). A series is **monotone**
when no step is a reversal and **strictly monotone** when no step rises by more than `SLACK` at
all. The verdict moves monotonically when it never steps back along subcircuits -> mixed or
inconclusive -> channels. Only the sites where the dial plants a truth (input, act.0) decide; a
hidden layer the dial plants nothing in has no direction to move in and is shown, not scored."""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

VOTING = ("T1", "T2", "T3", "T4")
SLACK = 0.05  # a rise smaller than this between neighbouring alphas is no reversal, whatever the seeds say
VERDICT_ORDER = {"subcircuits": 0, "mixed": 1, "inconclusive": 1, "channels": 2}  # from alpha 0's truth to alpha 1's


def _half_width(site: dict) -> float:
    """Half the width of a site's 95% interval over seeds (0 when it has none: one seed)."""
    lo, hi = site.get("ci") or (None, None)
    return (hi - lo) / 2 if lo is not None and hi is not None and np.isfinite([lo, hi]).all() else 0.0


def is_reversal(before: dict, after: dict) -> bool:
    """The statistic rises from `before` to `after` (neighbouring alphas) by more than SLACK plus
    the 95% margin of the difference of the two means."""
    margin = math.hypot(_half_width(before), _half_width(after))
    return after["effect"] - before["effect"] > SLACK + margin


def dial_summary(entries: Sequence[dict]) -> dict:
    """Per voting test and site: its mean effect and interval at each alpha, `reversals` (the steps
    between read alphas that are reversals), `monotone` (none), `strict` (no rise above SLACK),
    `planted` (the dial plants a truth at the site). Overall `monotone` and `strict` over the
    planted series; the verdict at each alpha and whether it moves monotonically."""
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
            read = [(a, f) for a, f in zip(alphas, found) if f.get("effect") is not None and np.isfinite(f["effect"])]
            steps = np.diff([f["effect"] for _, f in read])
            reversals = [[a0, a1] for (a0, f0), (a1, f1) in pairwise(read) if is_reversal(f0, f1)]
            series[f"{key} {site}"] = {"values": [f.get("effect") for f in found], "ci": [f.get("ci") for f in found],
                                       "planted": site in planted, "reversals": reversals,
                                       "monotone": len(read) >= 2 and not reversals,
                                       "strict": bool(len(read) >= 2 and np.all(steps <= SLACK))}
    scored = [s for s in series.values() if s["planted"]]
    verdicts = [e["verdict"] for e in dial]
    ranks = [VERDICT_ORDER.get(v.split(" (")[0]) for v in verdicts]
    verdict_monotone = None not in ranks and all(r0 <= r1 for r0, r1 in pairwise(ranks))
    return {"alphas": alphas, "verdicts": verdicts, "verdict_monotone": verdict_monotone, "statistics": series,
            "monotone": bool(scored) and all(s["monotone"] for s in scored),
            "strict": bool(scored) and all(s["strict"] for s in scored)}
