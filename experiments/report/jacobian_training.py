"""Figures of `ltc jacobian --checkpoints`: each quantity against the training step, twins on the same axes.

One directory per pair under `figures/`; the x axis is the training step (symlog: step 0, the init,
stays on the axis), checkpoints joined by a line, each twin a separate marker at the step of the
checkpoint it was made from (hollow: `permuted`):
- `participation_ratio.png`, `effective_rank.png`: median over blocks per offset t - s (one line per
  offset bin) with its 95% bootstrap interval;
- `participation_ratio_by_distance.png`, `effective_rank_by_distance.png`: against t - s, one curve
  per checkpoint (colour = step) and per twin (dashed), intervals as bands;
- `founding_s_eq_t.png`, `founding_s_eq_t_minus_2.png`: the singular values of J(t, t) and
  J(t, t - 2) at the first context's last target, one curve per model (left), their effective
  rank and participation ratio against the step (right);
- `jacobian_vs_covariance.png`: each comparison's matrix cosine against the step beside its
  rotation-null q95 (green: `agree`, red: `disagree`; filled: checkpoints, hollow: twins);
- `lens.png`: the lens E_t[J(t, t)]'s singular values per model (left), its participation ratio
  and effective rank against the step (right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from channels.plotting import plt, save_figure
from lth.layout import TrainingSweepLayout

TWIN_MARKERS = {"permuted": "D"}
STEP_LINTHRESH = 30


def _step_axis(ax, rows: list[dict]) -> None:
    """Symlog steps (0 stays on the axis), ticks at the checkpoints."""
    ax.set_xscale("symlog", linthresh=STEP_LINTHRESH)
    steps = sorted({r["step"] for r in rows})
    ax.set_xticks(steps, [str(s) for s in steps], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("training step")


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    return [r for r in rows if r["kind"] == "trained"], [r for r in rows if r["kind"] != "trained"]


def _colours(trained: list[dict]):
    top = max(max(r["step"] for r in trained), 1)
    return lambda step: plt.cm.viridis(0.9 * np.log1p(step) / np.log1p(top))


def _twin_point(ax, row: dict, value: float, colour, label: str | None = None) -> None:
    ax.plot([row["step"]], [value], marker=TWIN_MARKERS.get(row["kind"], "s"), ms=8, ls="none",
            mfc="none", mec=colour, mew=1.6, label=label)


def metric_by_step(rows: list[dict], metric: str, pair: str, path: Path) -> Path:
    """Median `metric` per offset bin against the step, with intervals; twins as hollow markers."""
    trained, twins = _split(rows)
    bins = [tuple(o["distance"]) for o in trained[-1]["intervals"][metric]]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for i, span in enumerate(bins):
        colour = plt.cm.plasma(i / max(len(bins), 1))
        label = f"t - s = {span[0]}" if span[0] == span[1] else f"t - s = {span[0]}-{span[1]}"
        points = [(r["step"], o) for r in trained for o in r["intervals"][metric] if tuple(o["distance"]) == span]
        if not points:
            continue
        x = np.array([p[0] for p in points])
        mid, lo, hi = (np.array([p[1][k] for p in points]) for k in ("median", "lo", "hi"))
        ax.errorbar(x, mid, yerr=[mid - lo, hi - mid], color=colour, marker="o", ms=3, capsize=2, label=label)
        for twin in twins:
            for o in twin["intervals"][metric]:
                if tuple(o["distance"]) == span:
                    _twin_point(ax, twin, o["median"], colour, f"{twin['kind']} twin" if i == 0 else None)
    _step_axis(ax, rows)
    ax.set_yscale("log")
    ax.set_ylabel(f"median {metric.replace('_', ' ')} of J(t, s)")
    ax.set_title(f"{pair}: {metric.replace('_', ' ')} against training (bars: 95% interval)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def by_distance(rows: list[dict], metric: str, pair: str, path: Path) -> Path:
    """Median `metric` against t - s, one curve per model."""
    trained, twins = _split(rows)
    colour = _colours(trained)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for row in trained + twins:
        offsets = row["intervals"][metric]
        x = np.array([o["distance"][0] for o in offsets], dtype=float)
        mid, lo, hi = (np.array([o[k] for o in offsets]) for k in ("median", "lo", "hi"))
        twin = row["kind"] != "trained"
        c = "k" if twin else colour(row["step"])
        ax.plot(x, mid, color=c, ls="--" if twin else "-", marker=TWIN_MARKERS.get(row["kind"], "o"), ms=3,
                mfc="none" if twin else c, label=f"{row['kind']} twin" if twin else f"step {row['step']}")
        ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("log")
    ax.set_xlabel("t - s (bin start)")
    ax.set_ylabel(f"median {metric.replace('_', ' ')}")
    ax.set_title(f"{pair}: {metric.replace('_', ' ')} of J(t, s) by distance, across training", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def spectra_and_scalars(rows: list[dict], get, title: str, ylabel: str, path: Path) -> Path | None:
    """Left: a spectrum per model (colour = step, twins dashed); right: its effective rank and
    participation ratio against the step. `get(row)` gives the row's {sigma, effective_rank, ...}."""
    rows = [r for r in rows if get(r) is not None]
    if not rows:
        return None
    trained, twins = _split(rows)
    colour = _colours(trained)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for row in trained + twins:
        sigma = np.asarray(get(row)["sigma"])
        twin = row["kind"] != "trained"
        left.plot(np.arange(1, len(sigma) + 1), sigma, color="k" if twin else colour(row["step"]),
                  ls="--" if twin else "-", label=f"{row['kind']} twin" if twin else f"step {row['step']}")
    left.set_yscale("log")
    left.set_xlabel("index i")
    left.set_ylabel(ylabel)
    left.legend(fontsize=7, ncol=2)
    for metric, c in (("effective_rank", "C0"), ("participation_ratio", "C1")):
        right.plot([r["step"] for r in trained], [get(r)[metric] for r in trained], color=c, marker="o",
                   label=metric.replace("_", " "))
        for twin in twins:
            _twin_point(right, twin, get(twin)[metric], c, f"{twin['kind']} twin" if metric == "effective_rank" else None)
    _step_axis(right, rows)
    right.set_ylabel("from the spectrum")
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def comparisons_by_step(rows: list[dict], pair: str, path: Path) -> Path | None:
    """Matrix cosine of each comparison against the step, beside its null q95; filled = agree."""
    trained, twins = _split(rows)
    labels = list(dict.fromkeys(k for r in rows for k in r["comparisons"]))
    if not labels:
        return None
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 4), squeeze=False)
    for ax, label in zip(axes[0], labels):
        have = [r for r in trained if label in r["comparisons"]]
        x = [r["step"] for r in have]
        cos = [r["comparisons"][label]["matrix_cosine"] for r in have]
        ax.plot(x, cos, color="C0", label="matrix cosine")
        ax.plot(x, [r["comparisons"][label]["matrix_cosine_null_q95"] for r in have], color="0.5", ls=":",
                label="rotation null q95")
        for r, c in zip(have, cos):
            agree = r["comparisons"][label]["agrees"] > 0
            ax.plot([r["step"]], [c], marker="o", color="C2" if agree else "C3", mfc=None if agree else "none")
        for twin in twins:
            if label in twin["comparisons"]:
                found = twin["comparisons"][label]
                _twin_point(ax, twin, found["matrix_cosine"], "C2" if found["agrees"] > 0 else "C3",
                            f"{twin['kind']} twin")
        _step_axis(ax, rows)
        ax.set_ylim(0, 1.05)
        ax.set_title(label, fontsize=9)
    axes[0][0].set_ylabel("matrix cosine (green: agree, red: disagree)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{pair}: Jacobian versus covariance across training", fontsize=11)
    return save_figure(fig, path)


def training_figures(data: dict, layout: TrainingSweepLayout) -> list[Path]:
    """Every figure of the module docstring, per pair; returns the paths written."""
    paths: list[Path | None] = []
    for pair, rows in data["pairs"].items():
        slug = pair.replace("->", "__")
        for metric in ("participation_ratio", "effective_rank"):
            if any(np.isfinite(o["median"]) for r in rows for o in r["intervals"][metric]):
                paths.append(metric_by_step(rows, metric, pair, layout.figure(metric, slug)))
                paths.append(by_distance(rows, metric, pair, layout.figure(f"{metric}_by_distance", slug)))
        for name, which in (("s_eq_t", "s = t"), ("s_eq_t_minus_2", "t - s = 2")):
            paths.append(spectra_and_scalars(
                rows, lambda r, n=name: r["founding"].get(n), f"{pair}: J(t, s) at {which}, last target of context 0",
                "singular value sigma_i", layout.figure(f"founding_{name}", slug)))
        paths.append(comparisons_by_step(rows, pair, layout.figure("jacobian_vs_covariance", slug)))
        paths.append(spectra_and_scalars(rows, lambda r: r.get("lens"), f"{pair}: Jacobian lens E_t[J(t, t)]",
                                         "sigma_i of the lens", layout.figure("lens", slug)))
    return [p for p in paths if p is not None]
