"""Figures of the ticket report (matplotlib, Agg backend): PNG files plus a caption each."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator, PercentFormatter

from channels.compare import subspace_overlap
from channels.plotting import plt, save_figure
from channels.verdict.base import TestResult
from channels.verdict.battery import TESTS
from channels.verdict.rundata import RunData, final_eigenvalues, spectrum_keys, top_vectors
from channels.verdict.stability import STABLE_BARRIER, stability_rows
from experiments.report.document import Figure
from lth.branches import BRANCHES, style
from lth.layout import ReportFiles

SPECTRUM_FLOOR = 1e-6  # normalised eigenvalues drawn down to here (below: numerical zeros)


def _percent(value: float, _position=None) -> str:
    """A tick label in percent: `100%`, `46.2%`, `6.9%` (at most three significant digits)."""
    return f"{value:.3g}%"


def _remaining_axis(ax, remaining: Sequence[float]) -> None:
    """x = % of weights remaining on a log scale, sparsest on the right, ticked at the levels'
    own densities (`remaining`, in %) in plain percent (no `6x10^1`); a light grid."""
    ax.set_xscale("log")
    ticks = sorted({round(float(x), 1) for x in remaining if x > 0})
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) > 1:
        ax.set_xlim(ticks[-1] * 1.08, ticks[0] / 1.08)  # inverted: dense on the left
    else:
        ax.invert_xaxis()
    ax.set_xlabel("weights remaining")
    ax.grid(alpha=0.3)


def _lines(runs: Sequence[RunData]) -> list[str]:
    """The ticket line, then its controls and secondary lines (the instability copy is not drawn)."""
    drawn = {name for name, b in BRANCHES.items() if b.is_control or b.is_line}
    return ["ticket", *sorted({b for run in runs for b in run.branches if b in drawn})]


def accuracy_figure(runs: Sequence[RunData], path: Path, metric: str = "test/acc") -> Figure:
    """The standard LTH plot: test accuracy against % of weights remaining, seed bands (min-max)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for line in _lines(runs):
        by_level: dict[int, list[tuple[float, float]]] = {}
        for run in runs:
            for level, job in run.line(None if line == "ticket" else line).items():
                by_level.setdefault(level, []).append((100 * job.density, job.test_metric(metric)))
        if not by_level:
            continue
        levels = sorted(by_level)
        x = np.array([np.mean([d for d, _ in by_level[lvl]]) for lvl in levels])
        acc = [np.array([a for _, a in by_level[lvl]]) for lvl in levels]
        mean = np.array([a.mean() for a in acc])
        look = style(line)
        n = max(len(a) for a in acc)
        ax.plot(x, mean, marker=look.marker, color=look.color, label=f"{line} (n={n})", linestyle=look.linestyle)
        ax.fill_between(x, [a.min() for a in acc], [a.max() for a in acc], color=look.color, alpha=0.2)
    _remaining_axis(ax, [100 * job.density for run in runs for job in run.levels.values()])
    if metric.endswith("acc"):
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return Figure("accuracy", save_figure(fig, path),
                  f"{metric} against the weights remaining (log scale, sparsest on the right): the ticket line and "
                  "its controls, mean over runs, band = min-max over runs.")


def spectra_figure(runs: Sequence[RunData], path: Path) -> Figure | None:
    """Normalised final spectra p_i = lambda_i / sum lambda per level (first run), one panel per spectrum."""
    run = runs[0]
    dense = run.dense.spectra
    if dense is None:
        return None
    keys = spectrum_keys(dense)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    levels = sorted(lvl for lvl, job in run.levels.items() if job.spectra is not None)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(levels)))
    for ax, key in zip(axes[0], keys, strict=True):
        for color, level in zip(colors, levels, strict=True):
            job = run.levels[level]
            eigs = final_eigenvalues(job.spectra, key)
            ax.loglog(np.arange(1, eigs.size + 1), eigs / eigs.sum(), color=color, label=f"{100 * job.density:.0f}%")
        rand = run.branches.get("random_prune", {})
        if rand:
            job = rand[max(rand)]
            if job.spectra is not None:
                eigs = final_eigenvalues(job.spectra, key)
                ax.loglog(np.arange(1, eigs.size + 1), eigs / eigs.sum(), "k--",
                          label=f"random prune {100 * job.density:.0f}%")
        if ax.get_ylim()[0] < SPECTRUM_FLOOR:  # numerical zeros of a rank-deficient spectrum would squash the rest
            ax.set_ylim(SPECTRUM_FLOOR, 2 * max(float(np.max(line.get_ydata())) for line in ax.get_lines()))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("rank i")
        ax.set_ylabel("p_i")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return Figure("spectra", save_figure(fig, path),
                  f"Final eigenvalue spectra per level of {run.name} (normalised, log-log; shares below "
                  f"{SPECTRUM_FLOOR:g} of the total are cut); dashed: random prune.")


def level_overlap_figure(runs: Sequence[RunData], path: Path) -> Figure | None:
    """Top-k subspace overlap between the levels of the ticket line (unit-aligned), mean over runs."""
    keys = spectrum_keys(runs[0].dense.spectra) if runs[0].dense.spectra is not None else []
    if not keys:
        return None
    levels = sorted(set.intersection(*[{lvl for lvl, j in r.levels.items() if j.spectra is not None} for r in runs]))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        matrix = np.zeros((len(levels), len(levels)))
        for run in runs:
            vecs = [top_vectors(run.levels[lvl].spectra, key) for lvl in levels]
            matrix += np.array([[subspace_overlap(a, b) for b in vecs] for a in vecs]) / len(runs)
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma")
        ax.set_xticks(range(len(levels)), levels)
        ax.set_yticks(range(len(levels)), levels)
        for i in range(len(levels)):
            for j in range(len(levels)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] < 0.6 else "black")
        ax.set_title(f"{key} (chance {vecs[0].shape[1] / vecs[0].shape[0]:.2f})", fontsize=9)
        ax.set_xlabel("level")
        ax.set_ylabel("level")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return Figure("level_overlap", save_figure(fig, path),
                  "Top-k subspace overlap (mean squared cosine) between the ticket line's levels, mean over runs.")


def instability_figure(runs: Sequence[RunData], path: Path) -> Figure | None:
    """Left: error barrier against % remaining, one line per run. Right: test error along the line
    between the two copies of each level (first run)."""
    rows = stability_rows(runs)
    if not rows:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        left.plot([100 * r["density"] for r in mine], [100 * r["barrier"] for r in mine], "o-", label=name)
    left.axhline(100 * STABLE_BARRIER, color="k", linestyle="--", linewidth=1, label="stable below")
    _remaining_axis(left, [100 * r["density"] for r in rows])
    left.set_ylabel("error barrier (points)")
    left.legend(fontsize=7)
    first = [r for r in rows if r["run"] == rows[0]["run"]]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(first)))
    for color, r in zip(colors, first, strict=True):
        right.plot(r["alphas"], 100 * np.asarray(r["errors"]), color=color, label=f"{100 * r['density']:.1f}%")
    right.set_xlabel("alpha (copy a -> copy b)")
    right.set_ylabel("test error (%)")
    right.set_title(rows[0]["run"], fontsize=9)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    return Figure("instability", save_figure(fig, path),
                  "Linear mode connectivity: error barrier between two copies of each level trained with "
                  f"different data order (left; stable below {100 * STABLE_BARRIER:.0f} points) and the test "
                  "error along the line between them (right).")


def all_figures(runs: Sequence[RunData], results: Sequence[TestResult], files: ReportFiles) -> list[Figure]:
    """Every figure the runs allow, written into the report's figures folder: the runs' own, then
    each test's (`TicketTest.figure`)."""
    made = [accuracy_figure(runs, files.figure("accuracy")),
            spectra_figure(runs, files.figure("spectra")),
            level_overlap_figure(runs, files.figure("level_overlap")),
            instability_figure(runs, files.figure("instability"))]
    for test, result in zip(TESTS, results, strict=True):
        path = test.figure(result, files.figure(test.key)) if test.figure is not None else None
        if path is not None:
            made.append(Figure(test.key, path, f"{test.key} {test.title}: each seed's value (dots), the mean and "
                                                f"its 95% t-interval per site, and the rule's thresholds."))
    return [f for f in made if f is not None]
