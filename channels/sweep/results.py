"""Merge a Jacobian sweep's items and sums into every number `ltc jacobian` reports.

- per item and source: the table (context, target, source, distance = t - s, metrics, their
  standard errors for the sketch, singular values) of all finished items;
- metrics against the distance t - s: per bin (0, 1, 2, 3-4, 5-8, ..., sides s <= t and s > t
  apart), with median, quartiles, mean and count over (context, t) (NaN entries, which the
  sketch leaves where it has no estimate, are left out); for the participation ratio and the
  effective rank also the median's bootstrap interval over contexts and targets (`intervals`);
- the founding spectra (exact method): J(t, t) and J(t, t - 2) at the first context's last target;
- the expected Grams E[J^T J] (input side) and E[J J^T] (output side), for s = t (`self`),
  s != t (`cross`) and all blocks pooled (`all`), their eigenvalues and top-k eigenvectors;
- at site a: `jacobian_vs_covariance` of each input-side Gram with Cov(a) (sensitivity, and the
  whitened Gram); at site b: the measured Cov(b) against the propagated covariance
  sum_s J(t, s) Cov(a) J(t, s)^T (first order, positions independent), from s = t alone
  (`self`) and from every s (`all`), with `channels.agreement.matrix_agreement`;
- the Jacobian lens: the token-averaged self block E_t[J(t, t)] (t >= lens_skip_first) and its
  singular values, for the lens file.
Comparisons use k = min(top_k, d / 2) eigenvectors (k close to d makes any subspaces overlap).
"""

from __future__ import annotations

import numpy as np
import torch

from channels.agreement import jacobian_vs_covariance, matrix_agreement
from channels.metrics import METRIC_NAMES, eigh_desc, spectrum_metrics
from channels.spectra import load_npz
from channels.sweep.intervals import distance_intervals
from channels.sweep.plan import bin_range, distance_bin
from channels.sweep.run import Sweep
from channels.sweep.items import FOUNDING
from channels.sweep.state import PARTS, SIDES, ShardState
from lth.errors import LTCError

QUANTILES = {"q25": 25, "median": 50, "q75": 75}
INTERVAL_METRICS = ("participation_ratio", "effective_rank")
COLUMNS = ("context", "target", "source", "metrics", "metric_se", "singular_values", "seconds")


def _stats(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {name: float("nan") for name in (*QUANTILES, "mean")}
    out = {name: float(np.percentile(values, q)) for name, q in QUANTILES.items()}
    out["mean"] = float(values.mean())
    return out


def metric_curves(distance: np.ndarray, metrics: np.ndarray, by_bin: bool) -> list[dict]:
    """Statistics of each metric over the blocks at each distance (or distance bin), sides apart."""
    rows = []
    keys = distance_bin(distance) if by_bin else np.abs(distance)
    for side, chosen in (("s<=t", distance >= 0), ("s>t", distance < 0)):
        for key in np.unique(keys[chosen]):
            where = chosen & (keys == key)
            lo, hi = bin_range(int(key)) if by_bin else (int(key), int(key))
            row = {"side": side, "distance": [lo, hi], "n": int(where.sum())}
            row |= {name: _stats(metrics[where, j]) for j, name in enumerate(METRIC_NAMES)}
            rows.append(row)
    return rows


def _pair_table(sweep: Sweep, index: int, finished: list[tuple[int, int, int]]) -> dict:
    """All finished items of one pair as flat arrays over (item, source)."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
    founding: dict[str, list[np.ndarray]] = {}
    keys = sorted((c, t) for k, c, t in finished if k == index)
    for c, t in keys:
        path = sweep.item_path(index, c, t)
        if not path.is_file():
            raise LTCError(
                f"{path} is listed as finished but missing: delete {sweep.layout.state} "
                "and re-run to recompute"
            )
        item = load_npz(path)
        n = len(item["sources"])
        item["context"], item["target"] = np.full(n, c), np.full(n, t)
        item["source"], item["seconds"] = item["sources"], item["seconds"][None]
        item.setdefault("metric_se", np.full_like(item["metrics"], np.nan))
        for name in COLUMNS:
            columns[name].append(item[name])
        for name in FOUNDING:
            if f"full/{name}" in item:
                founding.setdefault(f"founding/{name}", []).append(item[f"full/{name}"])
                founding.setdefault(f"founding/{name}/at", []).append(np.asarray([c, t]))
    if not keys:
        return {}
    table = {k: np.concatenate(v) for k, v in columns.items()}
    table["distance"] = table["target"] - table["source"]
    return table | {k: np.stack(v) for k, v in founding.items()}


def _founding(table: dict[str, np.ndarray], rtol: float) -> dict:
    """Metrics of the founding spectra at the first item that has them (context 0, t = L - 1 first)."""
    out = {}
    for name, offset in FOUNDING.items():
        if f"founding/{name}" in table:
            at = table[f"founding/{name}/at"]
            first = np.lexsort((-at[:, 1], at[:, 0]))[0]
            sigma = table[f"founding/{name}"][first].astype(np.float64)
            c, t = (int(v) for v in at[first])
            out[name] = {
                "context": c,
                "t": t,
                "s": t - offset,
                "sigma_min": float(sigma[-1]),
                **spectrum_metrics(sigma**2, rtol=rtol),
            }
    return out


def _mean(state: ShardState, slug: str, name: str) -> tuple[torch.Tensor, int]:
    acc = state.sums[(slug, name)]
    return acc.mean(), acc.count


def _grams(state: ShardState, slug: str, side: str) -> dict[str, tuple[torch.Tensor, int]]:
    """The Gram of each part and of all blocks pooled (count-weighted), with block counts."""
    parts = {part: _mean(state, slug, f"gram/{side}/{part}") for part in PARTS}
    count = sum(n for _, n in parts.values())
    pooled = sum(m * n for m, n in parts.values()) / max(count, 1)
    return {**{p: v for p, v in parts.items() if v[1]}, **({"all": (pooled, count)} if count else {})}


def _pair_entry(sweep: Sweep, index: int, state: ShardState, covs: dict, top_k: int) -> tuple[dict, dict]:
    """(summary entry, arrays) of one pair; ({}, {}) when it has no finished item."""
    pair, rtol = sweep.pairs[index], sweep.settings.rtol
    table = _pair_table(sweep, index, state.items)
    if not table:
        return {}, {}
    arrays = {f"{pair.slug}/{k}": v for k, v in table.items()}
    entry = {
        "method": sweep.settings.method,
        "items": len(table["seconds"]),
        "blocks": len(table["source"]),
        "causal": sweep.causal[pair],
        "founding": _founding(table, rtol),
        "distance_bins": metric_curves(table["distance"], table["metrics"], by_bin=True),
        "intervals": {
            name: distance_intervals(table["context"], table["target"], table["distance"],
                                     table["metrics"][:, METRIC_NAMES.index(name)])
            for name in INTERVAL_METRICS
        },
        "gram": {},
        "jacobian_vs_covariance": {},
        "propagation": {},
        "seconds": table["seconds"],
    }
    for side in SIDES:
        site = pair.a if side == "in" else pair.b
        for part, (gram, count) in _grams(state, pair.slug, side).items():
            values, vectors = eigh_desc(gram)
            k = min(top_k, max(1, len(values) // 2))
            key = f"{side}/{part}"
            arrays[f"{pair.slug}/gram/{key}/eigenvalues"] = values
            arrays[f"{pair.slug}/gram/{key}/eigenvectors"] = vectors[:, :k]
            entry["gram"][key] = {"blocks": count, **spectrum_metrics(values, k, rtol)}
            if side == "in" and gram.shape == covs[site].shape:
                entry["jacobian_vs_covariance"][key] = {
                    "site": site, **jacobian_vs_covariance(gram, covs[site], k, rtol)
                }
    cov_b = covs[pair.b]
    k = min(top_k, max(1, cov_b.shape[0] // 2))
    prop_self, n_targets = _mean(state, pair.slug, "prop/self")
    prop_cross, _ = _mean(state, pair.slug, "prop/cross")
    for name, predicted in (("self", prop_self), ("all", prop_self + prop_cross)):
        arrays[f"{pair.slug}/propagated/{name}"] = predicted.cpu().numpy()
        entry["propagation"][name] = {
            "site": pair.b, "targets": n_targets, **matrix_agreement(cov_b, predicted, k)
        }
    lens, count = _mean(state, pair.slug, "lens")
    if count:
        sigma = torch.linalg.svdvals(lens).cpu().numpy()
        arrays[f"{pair.slug}/lens/singular_values"] = sigma
        entry["lens"] = {"targets": count, **spectrum_metrics(sigma**2, top_k, rtol)}
        entry["lens_matrix"] = lens.float().cpu()
    return entry, arrays


def collect(sweep: Sweep, top_k: int) -> tuple[dict, dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """(summary for JSON, arrays for npz, lens tensors) of every finished item and the sums."""
    state = sweep.merged_state()
    covs = {site: cov.covariance() for site, cov in sweep.covariances().items()}
    summary: dict = {"metric_names": list(METRIC_NAMES), "pairs": {}, "covariance": {}}
    arrays: dict[str, np.ndarray] = {"metric_names": np.asarray(METRIC_NAMES)}
    lens: dict[str, torch.Tensor] = {}
    for site, cov in covs.items():
        values, vectors = eigh_desc(cov)
        summary["covariance"][site] = spectrum_metrics(values, min(top_k, len(values)), sweep.settings.rtol)
        arrays[f"cov/{site}/eigenvalues"] = values
        arrays[f"cov/{site}/eigenvectors"] = vectors[:, :top_k]
    seconds = []
    for index, pair in enumerate(sweep.pairs):
        entry, pair_arrays = _pair_entry(sweep, index, state, covs, top_k)
        if not entry:
            continue
        seconds.append(entry.pop("seconds"))
        if "lens_matrix" in entry:
            lens[pair.name] = entry.pop("lens_matrix")
            lens[f"{pair.name}/singular_values"] = torch.from_numpy(
                pair_arrays[f"{pair.slug}/lens/singular_values"].copy()
            )
        arrays |= pair_arrays
        summary["pairs"][pair.name] = entry
    if seconds:
        times = np.concatenate(seconds)
        summary["seconds_per_item"] = {
            "total": float(times.sum(axis=1).mean()),
            "jacobian": float(times[:, 0].mean()),
            "singular_values": float(times[:, 1].mean()),
            "sums": float(times[:, 2].mean()),
        }
    return summary, arrays, lens
