"""The dial: one planted world moved from coordinate-aligned (alpha = 0, subcircuits) to dense
(alpha = 1, channels). A statistic that measures what it claims falls as alpha rises (each voting
statistic is on a 0 = channels .. 1 = subcircuits scale, or an accuracy gap that a privileged
basis opens), and the verdict moves from subcircuits through inconclusive to channels."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VOTING = ("T1", "T2", "T3", "T4")
SLACK = 0.05  # a rise smaller than this between neighbouring alphas is noise, not a reversal


def dial_summary(entries: Sequence[dict]) -> dict:
    """Per voting test and site: its mean effect at each alpha, and whether it never rises by more
    than `SLACK` as alpha grows; the verdict at each alpha."""
    dial = sorted((e for e in entries if e.get("family") == "dial"), key=lambda e: e["alpha"])
    if not dial:
        return {}
    alphas = [e["alpha"] for e in dial]
    series = {}
    for key in VOTING:
        sites = sorted({site for e in dial for site in e["tests"].get(key, {}).get("sites", {})})
        for site in sites:
            values = [e["tests"][key]["sites"].get(site, {}).get("effect") for e in dial]
            finite = [v for v in values if v is not None and np.isfinite(v)]
            steps = np.diff(finite)
            series[f"{key} {site}"] = {"values": values, "monotone": bool(len(finite) >= 2 and np.all(steps <= SLACK))}
    return {"alphas": alphas, "verdicts": [e["verdict"] for e in dial], "statistics": series,
            "monotone": bool(series) and all(s["monotone"] for s in series.values())}
