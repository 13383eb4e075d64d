"""The tests' figures: per-seed values and their interval at each site, against the rule's
thresholds (one figure per test; each test's `TicketTest.figure` names its kind)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from channels.plotting import plt, save_figure
from channels.verdict.base import ACC_MARGIN, EQUIVALENCE_MARGIN, MIDPOINT, TestResult


def site_intervals(result: TestResult, path: Path, thresholds: dict[str, float], ylabel: str) -> Path | None:
    """Per site: each seed's value (dots), the mean and its 95% t-interval (bar), threshold lines."""
    if not result.sites:
        return None
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(result.sites), 3.6))
    for i, (site, found) in enumerate(result.sites.items()):
        values = list(found.units.values())
        ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=14, color="C0",
                   alpha=0.7)
        lo, hi = found.ci
        if np.isfinite(lo):
            ax.errorbar([i], [found.effect], yerr=[[found.effect - lo], [hi - found.effect]], fmt="o", color="k",
                        capsize=4)
        ax.annotate(found.reading, (i, max(values) if values else 0), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=7)
    for label, y in thresholds.items():
        ax.axhline(y, color="grey", linestyle="--", linewidth=0.8)
        ax.text(len(result.sites) - 0.5, y, label, fontsize=7, va="bottom", ha="right", color="grey")
    ax.set_xticks(range(len(result.sites)), list(result.sites), fontsize=8)
    ax.set_xlim(-0.6, len(result.sites) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{result.test} {result.title}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def accuracy_gap(result: TestResult, path: Path) -> Path | None:
    """An accuracy-difference test: the per-seed gaps against 0, the 1-point and the 2-point margins."""
    return site_intervals(result, path, {"0": 0.0, f"+{ACC_MARGIN:.2f}": ACC_MARGIN,
                                         f"+-{EQUIVALENCE_MARGIN:.2f}": EQUIVALENCE_MARGIN,
                                         "": -EQUIVALENCE_MARGIN}, "accuracy gap")


def error_ratio(result: TestResult, path: Path) -> Path | None:
    """T0: the per-seed log error ratios (control errors / the ticket's) against 0, no difference."""
    return site_intervals(result, path, {"0: the controls err as often": 0.0},
                          "log(control error / ticket error)")


def score(result: TestResult, path: Path) -> Path | None:
    """A 0 (channels) .. 1 (subcircuits) score against the midpoint rule."""
    return site_intervals(result, path, {"subcircuits above / channels below": MIDPOINT, "": 0.0},
                          "score (0 channels .. 1 subcircuits)")
