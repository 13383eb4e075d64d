"""Stability of each level's training (linear mode connectivity), read from the `instability` branch.

Frankle et al. (2020) found that IMP finds matching tickets only where training is *stable*: two
copies trained from the same weights with different data order end in the same linearly
connected basin. The barrier is the published error barrier height,

    barrier = max_alpha err(alpha) - (err(0) + err(1)) / 2,

on the straight line (1 - alpha) * copy_a + alpha * copy_b, in test error. They call a level
stable when it is about 0 and draw the line at 2 percentage points (STABLE_BARRIER). When the
copies' own errors differ, this height is at least half their difference even for a line
without a bump, so `rise_above_chord` (max_alpha of err(alpha) minus the straight line between
the end errors) is reported beside it: a bump shows in both, a mere difference of ends only in
the first. The ticket
tests T1..T6 are read beside this: a level that is unstable is not expected to hold a ticket,
whichever picture is right.
"""
from __future__ import annotations

from collections.abc import Sequence

from channels.verdict.rundata import RunData

BRANCH = "instability"
STABLE_BARRIER = 0.02


def stability_rows(runs: Sequence[RunData]) -> list[dict]:
    """One row per run and level with a finished instability branch, in run then level order."""
    rows = []
    for run in runs:
        for level, job in sorted(run.branches.get(BRANCH, {}).items()):
            line = job.metrics.get(BRANCH)
            if line is None:
                continue
            rows.append({
                "run": run.name, "level": level, "density": job.density,
                "start": "theta_0" if level == 0 else f"theta_{(run.config.get('imp') or {}).get('rewind_step', 0)}",
                "barrier": line["barrier_vs_mean"], "rise_above_chord": line["barrier"],
                "error_a": line["error_a"], "error_b": line["error_b"],
                "stable": line["barrier_vs_mean"] <= STABLE_BARRIER,
                "alphas": line["alphas"], "errors": line["errors"],
            })
    return rows


def stability_summary(rows: Sequence[dict]) -> str:
    """One sentence: which levels are stable, and what that means for reading the tickets."""
    if not rows:
        return "no instability branch in these runs (add `instability` to imp.branches to measure it)"
    threshold = f"{100 * STABLE_BARRIER:.0f} points"
    unstable = sorted({(r["level"], round(100 * r["density"], 1)) for r in rows if not r["stable"] and r["level"] > 0})
    parts = []
    if any(r["level"] == 0 for r in rows):
        dense_stable = all(r["stable"] for r in rows if r["level"] == 0)
        parts.append(f"the dense network trained from initialisation is {'' if dense_stable else 'un'}stable "
                     f"(level 0, barrier {'<=' if dense_stable else '>'} {threshold}"
                     f"{'' if dense_stable else ' in at least one run'})")
    if unstable:
        where = ", ".join(f"level {lvl} ({d}% remaining)" for lvl, d in unstable)
        parts.append(f"pruned levels unstable (barrier > {threshold} in at least one run): {where}; matching "
                     "tickets are not expected there (Frankle et al. 2020): try a later imp.rewind_step")
    elif any(r["level"] > 0 for r in rows):
        parts.append(f"every measured pruned level is stable from its rewound weights (barrier <= {threshold}): "
                     "tickets can be expected at all of them")
    return "; ".join(parts)
