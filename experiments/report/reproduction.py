"""A published result set beside ours: the report section of a reproduction.

A recipe whose `experiment` names a reference (`REFERENCES`) gets one more report section: the
final test accuracy of our ticket line and random prunes against the weights remaining, mean
over seeds with its 95% t-interval (`channels.verdict.stats.t_interval`), the reference's
published points overlaid, and a table at the reference's marked densities, ours beside theirs.

References are the published numbers themselves (JSON beside this module), never re-derived:
`mnist1d_notebook.json` holds the saved outputs of the MNIST-1D lottery-ticket notebook (final
test accuracy of every round of both trials, ticket and random prune).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from channels.plotting import plt, save_figure
from channels.verdict.rundata import RunData
from channels.verdict.stats import t_interval
from experiments.report.document import Figure, Section, Table
from lth.branches import style
from lth.layout import ReportFiles

# our random baselines, each set beside the reference's random line: per layer (weight and bias drawn
# together, as the notebook draws) is the like-for-like one; per tensor inherits the ticket's split
RANDOMS = {"random_prune_module": "random prune per layer", "random_prune": "random prune per tensor"}
CLOSE = 2.0  # points: a reproduction matches where our mean is this close to theirs


@dataclass(frozen=True)
class Reference:
    """Published final test accuracies (%) by round: `ticket` and `random` hold one list per trial.

    Round r keeps `density(r)` of each layer; `marks` are the rounds its table compares at."""

    title: str
    source: str
    rounds: list[int]
    ticket: list[list[float]]
    random: list[list[float]]
    rounds_to_zero: int
    marks: list[int]

    @classmethod
    def load(cls, path: Path) -> Reference:
        raw = json.loads(path.read_text())
        return cls(raw["title"], raw["source"], raw["rounds"], raw["ticket"], raw["random"],
                   raw["rounds_to_zero"], raw["marks"])

    def density(self, round_: int) -> float:
        """The fraction of each layer a round keeps: 1 - (r - 1) / rounds_to_zero."""
        return 1 - (round_ - 1) / self.rounds_to_zero

    def values(self, line: str, round_: int) -> list[float]:
        """Every trial's accuracy at `round_` on the `ticket` or `random` line."""
        trials = self.ticket if line == "ticket" else self.random
        return [trial[self.rounds.index(round_)] for trial in trials]


REFERENCES = {"mnist1d_notebook": Path(__file__).with_name("mnist1d_notebook.json")}


def reference_for(runs: Sequence[RunData]) -> Reference | None:
    """The published reference of these runs' experiment, if it has one."""
    path = REFERENCES.get(runs[0].experiment)
    return None if path is None else Reference.load(path)


@dataclass
class Point:
    """One line at one level over seeds: the weights remaining (%) and each seed's accuracy (%)."""

    level: int
    remaining: float
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def interval(self) -> tuple[float, float]:
        return t_interval(self.values)


def line_points(runs: Sequence[RunData], branch: str | None) -> list[Point]:
    """The ticket line (None) or a branch by level: accuracies in % of every run that has the level."""
    levels = sorted({lvl for run in runs for lvl in run.line(branch)})
    points = []
    for level in levels:
        jobs = [run.line(branch)[level] for run in runs if level in run.line(branch)]
        points.append(Point(level, 100 * float(np.mean([j.density for j in jobs])),
                            [100 * j.test_metric("test/acc") for j in jobs]))
    return points


def _nearest(points: Sequence[Point], remaining: float) -> Point | None:
    near = min(points, key=lambda p: abs(p.remaining - remaining), default=None)
    return near if near is not None and abs(near.remaining - remaining) < 0.5 else None


def _cell(values: Sequence[float], interval: Sequence[float] | None = None) -> str:
    """`mean [lo, hi] (v1, v2, ...)`, the interval when there is one."""
    if not values:
        return "-"
    text = f"{np.mean(values):.1f}"
    if interval is not None and not math.isnan(interval[0]):
        text += f" [{interval[0]:.1f}, {interval[1]:.1f}]"
    return text + f" ({', '.join(f'{v:.1f}' for v in values)})"


def comparison(runs: Sequence[RunData], files: ReportFiles) -> dict | None:
    """Ours beside the published reference of the runs' experiment (None when it has none), for
    verdict.json and `reproduction_section`: one row per marked round and line (ticket and random
    prune; the dense network alone at full density) with our level nearest its density, each
    seed's and each trial's accuracy, our mean's 95% t-interval, ours minus theirs and whether
    that is within CLOSE points; and the figure."""
    ref = reference_for(runs)
    if ref is None:
        return None
    ticket = line_points(runs, None)
    randoms = {b: points for b in RANDOMS if (points := line_points(runs, b))}
    rows = []
    for round_ in ref.marks:
        remaining = 100 * ref.density(round_)
        lines = [("dense", ticket, "ticket")] if ref.density(round_) == 1 else \
            [("ticket", ticket, "ticket"), *((RANDOMS[b], points, "random") for b, points in randoms.items())]
        for name, points, line in lines:
            ours, theirs = _nearest(points, remaining), ref.values(line, round_)
            diff = None if ours is None else ours.mean - float(np.mean(theirs))
            rows.append({"remaining": remaining, "line": name, "round": round_, "theirs": theirs,
                         "level": None if ours is None else ours.level,
                         "our_remaining": None if ours is None else ours.remaining,
                         "ours": [] if ours is None else ours.values,
                         "interval": None if ours is None else list(ours.interval),
                         "difference": diff, "within": None if diff is None else abs(diff) <= CLOSE})
    figure = comparison_figure(ticket, randoms, ref, files.figure(FIGURE))
    return {"title": ref.title, "source": ref.source, "experiment": runs[0].experiment, "seeds": len(runs),
            "close": CLOSE, "rows": rows, "figure": figure.name, "caption": figure.caption}


COMPARISON_HEADERS = ["% remaining", "line", "our level", "ours: mean [95% CI] (seeds)", "their round",
                      "theirs: mean (trials)", "ours - theirs", "close"]
CONSOLE_HEADERS = ["% remaining", "line", "ours: mean [95% CI] (seeds)", "theirs: mean (trials)", "ours - theirs",
                   "close"]
FIGURE = "reproduction"


def comparison_table(found: dict) -> Table:
    rows = [[f"{r['remaining']:.1f}", r["line"], "-" if r["level"] is None else str(r["level"]),
             _cell(r["ours"], r["interval"]), str(r["round"]), _cell(r["theirs"]),
             "-" if r["difference"] is None else f"{r['difference']:+.1f}",
             "-" if r["within"] is None else ("yes" if r["within"] else "no")] for r in found["rows"]]
    return Table("ours beside theirs (final test accuracy, %)", COMPARISON_HEADERS, rows, CONSOLE_HEADERS,
                 styles={"yes": "green", "no": "red"})


def reproduction_section(found: dict, figures: Sequence[Figure]) -> Section:
    """The report section of `comparison(...)`: what is compared, the table, the figure."""
    return Section(f"Reproduction: {found['title']}", [
        f"Ours: {found['seeds']} seed(s) of `{found['experiment']}`; theirs: {found['source']}. A row is close "
        f"when our mean is within {found['close']:.0f} points of theirs; our level is the one nearest their density."],
        tables=[comparison_table(found)], figures=[f for f in figures if f.name == found["figure"]], console=True)


def comparison_figure(ticket: Sequence[Point], randoms: dict[str, Sequence[Point]], ref: Reference,
                      path: Path) -> Figure:
    """Final test accuracy against % of weights remaining: ours as mean and 95% t-interval over
    seeds (solid: a band along the ticket line, error bars where the random prune ran), theirs as
    the mean of their trials (dashed) and each trial (dots); blue tickets, red random prunes."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.array([100 * ref.density(r) for r in ref.rounds])
    drawn = x > 0  # their last round keeps nothing: off a log axis
    for trials, color, label in ((np.array(ref.ticket), "C0", "ticket"), (np.array(ref.random), "C3", "random prune")):
        ax.plot(x[drawn], trials.mean(0)[drawn], "--", color=color, alpha=0.6, linewidth=1,
                label=f"notebook: {label} (mean of {len(trials)} trials; dots: each)")
        for trial in trials:
            ax.plot(x[drawn], trial[drawn], ".", color=color, alpha=0.35, markersize=3)
    ours = [(ticket, "ticket", "C0", None)] + [(points, RANDOMS[b], c, b) for (b, points), c in zip(randoms.items(), ("C3", "C1"))]
    for points, name, color, branch in ours:
        remaining = np.array([p.remaining for p in points])
        mean = np.array([p.mean for p in points])
        lo, hi = (np.array(v) for v in zip(*(p.interval for p in points)))
        label = f"ours: {name} (mean of {max(len(p.values) for p in points)} seeds, 95% CI)"
        if branch is None:
            ax.plot(remaining, mean, color=color, linewidth=2, label=label)
            ax.fill_between(remaining, lo, hi, color=color, alpha=0.25)
        else:
            ax.errorbar(remaining, mean, yerr=[mean - lo, hi - mean], fmt=style(branch).marker, color=color,
                        capsize=3, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(ref.title, fontsize=9)
    return Figure(FIGURE, save_figure(fig, path),
                  f"Final test accuracy against % of weights remaining: ours (mean over seeds, 95% t-interval) "
                  f"beside the published points of {ref.source}.")
