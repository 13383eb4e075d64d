"""Panels of `ltc jacobian` beside the founding figures (matplotlib, Agg), per pair unless noted.

- `sigma_vs_distance.png`: sigma_1, sigma_2, sigma_4, sigma_8 of J(t, s) against t - s (median
  over (context, t), exact blocks or the sketch's top-k blocks);
- `heatmaps.png`: ||J(t, s)||_F^2 (log10) and the effective rank (entropy; the participation
  ratio where the sketch has no full spectrum) over (t, s), for the first context;
- `jacobian_vs_covariance.png`: the comparisons that can fail (channels.agreement): matrix
  cosine against its rotation null, top-k overlap against chance, scale-free relative Frobenius
  error, for the sensitivity and whitened Grams at a and the propagated covariances at b;
- `lens.png`: singular values of the token-averaged Jacobian E_t[J(t, t)] (the lens);
- `coupling.png` (top level): block coupling across depth and across tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from channels.metrics import METRIC_NAMES
from channels.plotting import plt, save_figure
from channels.sweep.plan import Pair
from lth.layout import SweepLayout

SIGMA_RANKS = (1, 2, 4, 8)


def sigma_vs_distance(arrays: dict, pair: Pair, path: Path) -> Path | None:
    """Median sigma_i of J(t, s) against t - s, for a few ranks i."""
    distance, sigma = arrays[f"{pair.slug}/distance"], arrays[f"{pair.slug}/singular_values"]
    finite = np.isfinite(sigma[:, 0])
    if not finite.any():
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    shown = np.unique(distance[finite & (distance >= 0)])
    for i in (r for r in SIGMA_RANKS if r <= sigma.shape[1]):
        med = [np.nanmedian(sigma[finite & (distance == d), i - 1]) for d in shown]
        ax.plot(shown, med, marker="o", ms=3, label=f"sigma_{i}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("log")
    ax.set_xlabel("t - s")
    ax.set_ylabel("median singular value")
    ax.set_title(f"{pair.name}: singular values against t - s", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def heatmaps(arrays: dict, pair: Pair, path: Path) -> Path:
    """||J(t, s)||_F^2 and effective rank over (t, s) for the first context."""
    context = arrays[f"{pair.slug}/context"]
    first = context == context.min()
    t, s = arrays[f"{pair.slug}/target"][first], arrays[f"{pair.slug}/source"][first]
    metrics = arrays[f"{pair.slug}/metrics"][first]
    names = list(METRIC_NAMES)
    rank_name = "effective_rank" if np.isfinite(metrics[:, names.index("effective_rank")]).any() else "participation_ratio"
    targets = np.unique(t)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, name, log in ((axes[0], "frobenius_sq", True), (axes[1], rank_name, False)):
        grid = np.full((len(targets), s.max() + 1), np.nan)
        values = metrics[:, names.index(name)]
        grid[np.searchsorted(targets, t), s] = np.log10(np.maximum(values, 1e-30)) if log else values
        image = ax.imshow(grid, aspect="auto", origin="lower", interpolation="nearest",
                          extent=(-0.5, s.max() + 0.5, -0.5, len(targets) - 0.5))
        ax.set_yticks(range(len(targets)), [str(v) for v in targets] if len(targets) <= 16 else None)
        ax.set_xlabel("source s")
        ax.set_ylabel("target t")
        ax.set_title(("log10 " if log else "") + ("||J(t, s)||_F^2" if log else name), fontsize=10)
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"{pair.name}, context {int(context.min())}", fontsize=11)
    return save_figure(fig, path)


def comparison_panel(summary: dict, pair: Pair, path: Path) -> Path | None:
    """Cosine vs rotation null, overlap vs chance, scale-free error: every comparison of the pair."""
    entry = summary["pairs"][pair.name]
    rows = []
    for key, c in entry["jacobian_vs_covariance"].items():
        if key.endswith("/all"):
            for name in ("sensitivity", "whitened"):
                rows.append((f"{name} Gram\nvs Cov(a)", {k.split("/", 1)[1]: v for k, v in c.items() if k.startswith(f"{name}/")}))
    for key, c in entry["propagation"].items():
        rows.append((f"Cov(b) vs prop.\n{'s = t' if key == 'self' else 'all s'}", c))
    if not rows:
        return None
    labels = [label for label, _ in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, value, ref, title in (
        (axes[0], "matrix_cosine", "matrix_cosine_null_q95", "matrix cosine (x: rotation null q95)"),
        (axes[1], "topk_overlap", "topk_overlap_chance", "top-k overlap (x: chance)"),
        (axes[2], "relative_frobenius_scaled", None, "relative Frobenius error, scale-free"),
    ):
        colors = ["C2" if c["agrees"] else "C3" for _, c in rows]
        ax.bar(x, [c[value] for _, c in rows], color=colors)
        if ref:
            ax.scatter(x, [c[ref] for _, c in rows], marker="x", color="k", zorder=3)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"{pair.name}: Jacobian versus covariance (green: agree, red: disagree)", fontsize=11)
    return save_figure(fig, path)


def lens_figure(arrays: dict, pair: Pair, path: Path) -> Path | None:
    key = f"{pair.slug}/lens/singular_values"
    if key not in arrays:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sigma = arrays[key]
    ax.plot(np.arange(1, len(sigma) + 1), sigma)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("sigma_i of E_t[J(t, t)]")
    ax.set_title(f"Jacobian lens {pair.name}", fontsize=10)
    return save_figure(fig, path)


def coupling_figure(arrays: dict, summary: dict, path: Path) -> Path | None:
    if "coupling/depth" not in arrays:
        return None
    c = summary["coupling"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, label in ((axes[0], "depth", "layer"), (axes[1], "tokens", "token")):
        image = ax.imshow(arrays[f"coupling/{key}"], vmin=0, vmax=1, origin="lower")
        ax.set_xlabel(label)
        ax.set_ylabel(label)
        ax.set_title(f"coupling across {key}", fontsize=10)
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"top-{c['k']} singular subspaces of block Jacobians (chance {c['chance']:.2f})", fontsize=11)
    return save_figure(fig, path)


def panel_figures(arrays: dict, summary: dict, pair: Pair | None, layout: SweepLayout) -> list[Path | None]:
    """The panels of one pair, or the top-level ones when `pair` is None."""
    if pair is None:
        return [coupling_figure(arrays, summary, layout.figure("coupling"))]
    return [
        sigma_vs_distance(arrays, pair, layout.figure("sigma_vs_distance", pair.slug)),
        heatmaps(arrays, pair, layout.figure("heatmaps", pair.slug)),
        comparison_panel(summary, pair, layout.figure("jacobian_vs_covariance", pair.slug)),
        lens_figure(arrays, pair, layout.figure("lens", pair.slug)),
    ]
