"""Figures of the ticket report (matplotlib, Agg backend): PNG files plus a caption each."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from channels.compare import subspace_overlap
from channels.rundata import RunData, final_eigenvalues, spectrum_keys, top_vectors
from channels.stability import STABLE_BARRIER, stability_rows
from channels.tickets import TestResult
from experiments.report.document import Figure
from experiments.report.plotting import plt, save_figure
from lth.branches import BRANCHES, style
from lth.layout import ReportFiles


def _remaining_axis(ax) -> None:
    """x = % of weights remaining on a log scale, sparsest on the right; a light grid."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining")
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
    _remaining_axis(ax)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return Figure("accuracy", save_figure(fig, path),
                  f"{metric} against % of weights remaining: ticket line and controls, mean over runs, band = min-max.")


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
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("rank i")
        ax.set_ylabel("p_i")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return Figure("spectra", save_figure(fig, path),
                  f"Final eigenvalue spectra per level of {run.name} (normalised, log-log); dashed: random prune.")


def signature_figure(t1: TestResult, path: Path) -> Figure | None:
    """Effective rank and top-1 share against % remaining, per line and spectrum (T1's rows)."""
    rows = t1.details.get("signature") or []
    if not rows:
        return None
    keys = sorted({r["spectrum"] for r in rows})
    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 6), squeeze=False)
    for col, key in enumerate(keys):
        for line in sorted({r["line"] for r in rows}):
            pick = sorted((r for r in rows if r["spectrum"] == key and r["line"] == line), key=lambda r: -r["density"])
            look = style(line)
            x = [100 * r["density"] for r in pick]
            for row, metric in enumerate(("effective_rank", "top1_share")):
                axes[row][col].plot(x, [r[metric] for r in pick], marker=look.marker, color=look.color, label=line,
                                    linestyle=look.linestyle)
        for row, metric in enumerate(("effective rank", "top-1 share")):
            ax = axes[row][col]
            _remaining_axis(ax)
            ax.set_title(f"{key}: {metric}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    return Figure("signature", save_figure(fig, path),
                  "T1: effective rank and top-1 share of each spectrum against % remaining, mean over runs.")


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


def pair_figure(t3: TestResult, path: Path) -> Figure | None:
    """T3's pairs as two matrices over runs: weight identity and channel similarity (both chance-corrected)."""
    pairs = t3.details.get("pairs") or []
    if not pairs:
        return None
    names = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    index = {n: i for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), squeeze=False)
    for ax, what in zip(axes[0][:2], ("identity", "similarity"), strict=True):
        matrix = np.full((len(names), len(names)), np.nan)
        for p in pairs:
            matrix[index[p["a"]], index[p["b"]]] = matrix[index[p["b"]], index[p["a"]]] = p[what]
        image = ax.imshow(matrix, vmin=-0.1, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w" if value < 0.5 else "k")
        ax.set_title("weight identity (weighted IoU excess)" if what == "identity" else "channel similarity (excess)",
                     fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    ax = axes[0][2]
    trajectory = t3.details.get("trajectory") or []
    for i, kind in enumerate(sorted({t["kind"] for t in trajectory})):
        steps = [t for t in trajectory if t["kind"] == kind]
        x = [100 * t["density"] for t in steps]
        ax.plot(x, [t["similarity"] for t in steps], marker="o", color=f"C{i}", label=f"{kind}: channel similarity")
        ax.plot(x, [t["identity"] for t in steps], marker="s", linestyle="--", color=f"C{i}",
                label=f"{kind}: weight identity")
    _remaining_axis(ax)
    ax.legend(fontsize=7)
    return Figure("pairs", save_figure(fig, path),
                  "T3: pairs of tickets at their sparsest common level (left, middle) and, right, mean identity and "
                  "similarity per level by pair kind. Same init: subspace overlap; different inits: CKA beyond "
                  "the inits' CKA, units matched. All chance-corrected.")


def localisation_figure(t4: TestResult, path: Path) -> Figure | None:
    """T4's localisation score per level and spectrum, with the reading thresholds."""
    from channels.tickets import T4_CHANNELS, T4_SUBCIRCUITS

    rows = t4.details.get("per_level") or []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, key in enumerate(sorted({r["spectrum"] for r in rows})):
        pick = sorted((r for r in rows if r["spectrum"] == key), key=lambda r: -r["density"])
        ax.plot([100 * r["density"] for r in pick], [r["score"] for r in pick], marker="o", color=f"C{i}", label=key)
    ax.axhline(T4_SUBCIRCUITS, color="k", linestyle="--", linewidth=0.8, label="subcircuits above")
    ax.axhline(T4_CHANNELS, color="k", linestyle=":", linewidth=0.8, label="channels below")
    ax.axhline(0, color="grey", linewidth=0.5)
    _remaining_axis(ax)
    ax.set_ylabel("localisation score")
    ax.legend(fontsize=7)
    return Figure("localisation", save_figure(fig, path),
                  "T4: how much of the dense channels' mass sits on the ticket's most-kept units "
                  "(0 = chance, 1 = all).")


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
    _remaining_axis(left)
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
    """Every figure the runs allow, written into the report's figures folder."""
    by_test = {r.test: r for r in results}
    made = [accuracy_figure(runs, files.figure("accuracy")),
            spectra_figure(runs, files.figure("spectra")),
            signature_figure(by_test["T1"], files.figure("signature")),
            level_overlap_figure(runs, files.figure("level_overlap")),
            pair_figure(by_test["T3"], files.figure("pairs")),
            localisation_figure(by_test["T4"], files.figure("localisation")),
            instability_figure(runs, files.figure("instability"))]
    return [f for f in made if f is not None]
