"""Figures of `ltc jacobian` (matplotlib, Agg backend), one directory per pair under figures/.

- `founding_s_eq_t.png`, `founding_s_eq_t_minus_2.png`: singular values of J(t, t) and
  J(t, t - 2) on a log scale, the founding measurement (bold: first context, last target; grey:
  every other (context, t) of the sweep);
- `metrics_vs_distance.png`: effective rank, participation ratio, numerical rank, top-1 share,
  sigma_1 and ||J||_F^2 of J(t, s) against the distance t - s: median over (context, t) with
  the interquartile band;
- `spectra_by_distance.png`: median singular values sigma_i of J(t, s) at a few distances;
- `gram_vs_covariance.png`: eigenvalue shares p_i = lambda_i / sum lambda of the expected Grams
  (self, cross, all) beside the covariance on the same side, with the top-k overlap;
- `covariance.png` (top level): the covariance spectra of every site;
- the panels of `experiments.report.jacobian_panels` (heat maps over (t, s), the
  Jacobian-versus-covariance panel, the lens spectrum, the block coupling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from channels.plotting import plt, save_figure
from channels.sweep.plan import Pair
from channels.sweep.results import metric_curves
from channels.sweep.state import SIDES
from experiments.report.jacobian_panels import panel_figures
from lth.layout import SweepLayout

CURVES = (
    "effective_rank",
    "participation_ratio",
    "numerical_rank",
    "top1_share",
    "sigma_max",
    "frobenius_sq",
)
SHOWN_DISTANCES = (0, 1, 2, 4, 16, 64, 256, 1024)


def founding_figure(
    arrays: dict[str, np.ndarray], pair: Pair, name: str, path: Path
) -> Path | None:
    """Singular values of J(t, s) at one offset (s = t or s = t - 2) for every item, log scale."""
    key = f"{pair.slug}/founding/{name}"
    if key not in arrays:
        return None
    spectra, at = arrays[key], arrays[f"{key}/at"]
    first = np.lexsort((-at[:, 1], at[:, 0]))[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ranks = np.arange(1, spectra.shape[1] + 1)
    for i, sigma in enumerate(spectra):
        if i != first:
            ax.plot(ranks, sigma, color="0.75", lw=0.7)
    c, t = at[first]
    s = t if name == "s_eq_t" else t - 2
    ax.plot(ranks, spectra[first], color="C0", lw=2, label=f"context {c}, t = {t}, s = {s}")
    if len(spectra) > 1:
        ax.plot([], [], color="0.75", label=f"{len(spectra) - 1} other (context, t)")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value sigma_i")
    which = "s = t" if name == "s_eq_t" else "s = t - 2"
    ax.set_title(f"J(t, s) = d {pair.b}[t] / d {pair.a}[s], {which}", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def metrics_figure(arrays: dict[str, np.ndarray], pair: Pair, path: Path) -> Path:
    """Each metric against t - s: median and interquartile band over (context, t)."""
    distance, values = arrays[f"{pair.slug}/distance"], arrays[f"{pair.slug}/metrics"]
    rows = metric_curves(distance, values, by_bin=False)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, name in zip(axes.flat, CURVES):
        for side, color in (("s<=t", "C0"), ("s>t", "C3")):
            chosen = [r for r in rows if r["side"] == side]
            if not chosen:
                continue
            x = np.array([r["distance"][0] for r in chosen])
            med = np.array([r[name]["median"] for r in chosen])
            ax.plot(x, med, color=color, label=f"{side} (median)")
            ax.fill_between(
                x,
                [r[name]["q25"] for r in chosen],
                [r[name]["q75"] for r in chosen],
                color=color,
                alpha=0.25,
                lw=0,
            )
        ax.set_xscale("symlog", linthresh=1)
        if name in ("sigma_max", "frobenius_sq"):
            ax.set_yscale("log")
        ax.set_xlabel("|t - s|")
        ax.set_title(name, fontsize=10)
    axes.flat[0].legend(fontsize=8)
    n_items = np.unique(
        np.stack([arrays[f"{pair.slug}/context"], arrays[f"{pair.slug}/target"]]), axis=1
    ).shape[1]
    fig.suptitle(
        f"{pair.name}: spectrum of J(t, s) against distance ({n_items} (context, t), band = IQR)",
        fontsize=11,
    )
    return save_figure(fig, path)


def spectra_figure(arrays: dict[str, np.ndarray], pair: Pair, path: Path) -> Path:
    """Median sigma_i of J(t, s) over (context, t) at a few distances t - s."""
    distance, sigma = arrays[f"{pair.slug}/distance"], arrays[f"{pair.slug}/singular_values"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ranks = np.arange(1, sigma.shape[1] + 1)
    for i, d in enumerate(SHOWN_DISTANCES):
        chosen = (distance == d) & np.isfinite(sigma).all(axis=1)
        if chosen.any():
            ax.plot(
                ranks,
                np.median(sigma[chosen], axis=0),
                color=plt.cm.viridis(i / len(SHOWN_DISTANCES)),
                label=f"t - s = {d} (n={int(chosen.sum())})",
            )
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("median sigma_i")
    ax.set_title(f"{pair.name}: singular values by distance", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def gram_figure(arrays: dict[str, np.ndarray], summary: dict, pair: Pair, path: Path) -> Path:
    """Gram eigenvalue shares (self / cross / all) beside the covariance on the same side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    compared = summary["pairs"][pair.name]["jacobian_vs_covariance"]
    for ax, side in zip(axes, SIDES):
        site = pair.a if side == "in" else pair.b
        for part, label, color, width in (
            ("self", "s = t", "C0", 3.0),
            ("cross", "s != t", "C1", 1.5),
            ("all", "all s", "k", 1.0),
        ):
            key = f"{pair.slug}/gram/{side}/{part}/eigenvalues"
            if key in arrays and arrays[key].sum() > 0:
                lam = arrays[key]
                ax.plot(
                    np.arange(1, len(lam) + 1),
                    lam / lam.sum(),
                    color=color,
                    lw=width,
                    alpha=0.8,
                    label=f"Gram {part} ({label})",
                )
        cov_key = f"cov/{site}/eigenvalues"
        if cov_key in arrays:
            lam = arrays[cov_key]
            ax.plot(
                np.arange(1, len(lam) + 1),
                lam / lam.sum(),
                color="C2",
                ls="--",
                label=f"covariance {site}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-9))  # below that: round-off, not channels
        ax.set_xlabel("index i")
        ax.set_ylabel("share p_i = lambda_i / sum lambda")
        gram = "E[J^T J]" if side == "in" else "E[J J^T]"
        overlap = compared.get(f"{side}/all")
        note = (
            (
                f"\ntop-{overlap['sensitivity/k']} overlap {overlap['sensitivity/topk_overlap']:.2f} "
                f"(chance {overlap['sensitivity/topk_overlap_chance']:.2f})"
            )
            if overlap
            else ""
        )
        ax.set_title(f"{gram} at {site}{note}", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(pair.name, fontsize=11)
    return save_figure(fig, path)


def covariance_figure(arrays: dict[str, np.ndarray], sites: list[str], path: Path) -> Path | None:
    shown = [s for s in sites if f"cov/{s}/eigenvalues" in arrays]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for site in shown:
        lam = arrays[f"cov/{site}/eigenvalues"]
        ax.plot(np.arange(1, len(lam) + 1), lam, label=site)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("covariance eigenvalue")
    ax.set_title("residual covariance over tokens", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def all_figures(
    arrays: dict[str, np.ndarray],
    summary: dict,
    pairs: list[Pair],
    sites: list[str],
    layout: SweepLayout,
) -> list[Path]:
    """Every figure of the sweep's finished items; returns the paths written."""
    paths: list[Path | None] = [covariance_figure(arrays, sites, layout.figure("covariance"))]
    for pair in pairs:
        if f"{pair.slug}/metrics" not in arrays:
            continue
        paths += [
            founding_figure(arrays, pair, name, layout.figure(f"founding_{name}", pair.slug))
            for name in ("s_eq_t", "s_eq_t_minus_2")
        ]
        paths += [
            metrics_figure(arrays, pair, layout.figure("metrics_vs_distance", pair.slug)),
            spectra_figure(arrays, pair, layout.figure("spectra_by_distance", pair.slug)),
            gram_figure(arrays, summary, pair, layout.figure("gram_vs_covariance", pair.slug)),
        ]
        paths += panel_figures(arrays, summary, pair, layout)
    paths += panel_figures(arrays, summary, None, layout)
    return [p for p in paths if p is not None]
