"""The numbers of an `ltc jacobian` sweep as console lines and as flat W&B scalars."""

from __future__ import annotations

from channels.agreement import reading
from channels.keys import cov_key


def scalars(summary: dict) -> dict[str, float]:
    """Flat W&B keys: jacobian/<pair>/<founding|gram|vs_cov|propagation|lens>/...,
    jacobian/<pair>/<metric>_by_distance/<t - s>/<median|lo|hi>, spectra/<site>/cov/<metric>."""
    out = {}
    for pair, entry in summary["pairs"].items():
        groups = {f"founding/{name}": values for name, values in entry["founding"].items()}
        groups |= {f"gram/{key}": values for key, values in entry["gram"].items()}
        groups |= {f"vs_cov/{key}": values for key, values in entry["jacobian_vs_covariance"].items()}
        groups |= {f"propagation/{key}": values for key, values in entry["propagation"].items()}
        if "lens" in entry:
            groups["lens"] = entry["lens"]
        for metric, rows in entry.get("intervals", {}).items():
            for r in rows:
                lo, hi = r["distance"]
                groups[f"{metric}_by_distance/{lo}" + (f"-{hi}" if hi != lo else "")] = \
                    {k: r[k] for k in ("median", "lo", "hi")}
        for group, values in groups.items():
            out |= {
                f"jacobian/{pair}/{group}/{k}": float(v)
                for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
    for site, values in summary["covariance"].items():
        out |= {cov_key(site).wandb(k): v for k, v in values.items()}
    if "coupling" in summary:
        c = summary["coupling"]
        out |= {f"coupling/{k}": c[k] for k in ("mean_across_depth", "mean_adjacent_layers", "chance")}
    return out


def _agreement_line(label: str, c: dict) -> str:
    return (
        f"  {label}: {reading(c)} (rel. Frobenius error {c['relative_frobenius']:.2f}, "
        f"scale-free {c['relative_frobenius_scaled']:.2f}; cosine {c['matrix_cosine']:.2f} vs "
        f"rotation null q95 {c['matrix_cosine_null_q95']:.2f}, p {c['matrix_cosine_p']:.2f}; "
        f"top-{c['k']} overlap {c['topk_overlap']:.2f} (chance {c['topk_overlap_chance']:.2f}); "
        f"spectrum TV {c['spectrum_tv']:.2f})"
    )


def summary_lines(summary: dict) -> list[str]:
    """What a researcher reads first: founding spectra, distance bins, comparisons, lens, coupling."""
    lines = []
    for pair, entry in summary["pairs"].items():
        lines.append(
            f"{pair}: {entry['items']} (context, t) items, {entry['blocks']} blocks J(t, s), "
            f"{entry['method']}, {'causal' if entry['causal'] else 'non-causal'}"
        )
        for name, f in entry["founding"].items():
            lines.append(
                f"  founding {name:<15} (context {f['context']}, t {f['t']}): sigma_1 {f['sigma_max']:.3g}, "
                f"sigma_min {f['sigma_min']:.3g}, numerical rank {f['numerical_rank']:.0f}, "
                f"effective rank {f['effective_rank']:.1f}, top-1 share {f['top1_share']:.3f}"
            )
        intervals = {tuple(r["distance"]): r for r in entry.get("intervals", {}).get("participation_ratio", [])}
        for row in entry["distance_bins"]:
            if row["side"] == "s<=t" and row["distance"][0] in (0, 1, 2, 3, 9, 65, 513):
                lo, hi = row["distance"]
                bounds = intervals.get((lo, hi))
                interval = f" [{bounds['lo']:.1f}, {bounds['hi']:.1f}]" if bounds else ""
                lines.append(
                    f"  t - s in [{lo}, {hi}]: median participation ratio "
                    f"{row['participation_ratio']['median']:.1f}{interval}, effective rank "
                    f"{row['effective_rank']['median']:.1f}, ||J||_F^2 "
                    f"{row['frobenius_sq']['median']:.3g} (n={row['n']})"
                )
        for key, c in entry["jacobian_vs_covariance"].items():
            lines.append(
                f"  Gram {key} eff. rank {c['jac/effective_rank']:.1f} vs Cov({c['site']}) "
                f"{c['cov/effective_rank']:.1f}"
            )
            for name in ("sensitivity", "whitened"):
                lines.append(_agreement_line(
                    f"  {name} Gram vs Cov({c['site']})",
                    {k.split("/", 1)[1]: v for k, v in c.items() if k.startswith(f"{name}/")},
                ))
        for key, c in entry["propagation"].items():
            lines.append(_agreement_line(f"Cov({c['site']}) vs propagated from s {'= t' if key == 'self' else '<= t'}", c))
        if "lens" in entry:
            lens = entry["lens"]
            lines.append(
                f"  lens E_t[J(t, t)] over {lens['targets']} targets: sigma_1 {lens['sigma_max']:.3g}, "
                f"participation ratio {lens['participation_ratio']:.1f}, effective rank {lens['effective_rank']:.1f}"
            )
    if "coupling" in summary:
        c = summary["coupling"]
        lines.append(
            f"block coupling (top-{c['k']} singular subspaces, chance {c['chance']:.2f}): across depth "
            f"{c['mean_across_depth']:.2f}, adjacent layers {c['mean_adjacent_layers']:.2f}"
        )
    if "seconds_per_item" in summary:
        s = summary["seconds_per_item"]
        lines.append(
            f"time per (context, t) item: {s['total']:.2f} s (Jacobian or sketch {s['jacobian']:.2f}, "
            f"singular values {s['singular_values']:.2f}, sums {s['sums']:.2f})"
        )
    return lines
