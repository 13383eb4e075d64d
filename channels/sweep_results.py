"""Merge a Jacobian sweep's items and shard totals into every number `ltc jacobian` reports.

- per item and source: the table (context, target, source, distance = t - s, metrics,
  singular values) of all finished items;
- metrics against the distance t - s: per exact distance and per bin (0, 1, 2, 3-4, 5-8, ...,
  sides s <= t and s > t apart), with median, quartiles, mean and count over (context, t);
- the founding spectra: J(t, t) and J(t, t - 2) at the first context's last target;
- the expected Grams E[J^T J] (input side) and E[J J^T] (output side), for s = t (`self`),
  s != t (`cross`) and all pairs pooled (`all`), their eigenvalues and top-k eigenvectors;
- the covariance at every site and `jacobian_vs_covariance` of each Gram with the covariance
  on its side (input side: site a; output side: site b), over the top k = min(top_k, d / 2)
  eigenvectors (k close to the width d would make any two subspaces overlap).
"""

from __future__ import annotations

import numpy as np
import torch

from channels.compare import jacobian_vs_covariance
from channels.jacobian import GramAccumulator
from channels.metrics import spectrum_metrics
from channels.spectra import load_npz
from channels.sweep import METRICS, PARTS, SIDES, Pair, ShardState, Sweep
from lth.errors import LTCError

QUANTILES = {"q25": 25, "median": 50, "q75": 75}


def distance_bin(distance: np.ndarray) -> np.ndarray:
    """Bin of |t - s|: 0 -> 0, 1 -> 1, 2 -> 2, 3-4 -> 3, 5-8 -> 4, ... (1 + ceil(log2 |d|))."""
    size = np.abs(distance)
    out = np.zeros(size.shape, dtype=np.int64)
    out[size > 0] = 1 + np.ceil(np.log2(size[size > 0])).astype(np.int64)
    return out


def bin_range(index: int) -> tuple[int, int]:
    """The distances [lo, hi] of a bin."""
    return (index, index) if index <= 2 else (2 ** (index - 2) + 1, 2 ** (index - 1))


def _stats(values: np.ndarray) -> dict[str, float]:
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
            row |= {name: _stats(metrics[where, j]) for j, name in enumerate(METRICS)}
            rows.append(row)
    return rows


def _eigh_desc(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(matrix.cpu().numpy())
    return np.clip(values[::-1], 0.0, None).copy(), vectors[:, ::-1].copy()


def _pair_table(
    sweep: Sweep, index: int, finished: list[tuple[int, int, int]]
) -> dict[str, np.ndarray]:
    """All finished items of one pair as flat arrays over (item, source)."""
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("context", "target", "source", "metrics", "singular_values", "seconds")
    }
    founding: dict[str, np.ndarray] = {}
    keys = sorted((c, t) for k, c, t in finished if k == index)
    for c, t in keys:
        path = sweep.item_path(index, c, t)
        if not path.is_file():
            raise LTCError(
                f"{path} is listed as finished but missing: delete {sweep.out / 'state'} "
                "and re-run to recompute"
            )
        item = load_npz(path)
        n = len(item["sources"])
        columns["context"].append(np.full(n, c))
        columns["target"].append(np.full(n, t))
        columns["source"].append(item["sources"])
        columns["metrics"].append(item["metrics"])
        columns["singular_values"].append(item["singular_values"])
        columns["seconds"].append(item["seconds"][None])
        for name in ("s_eq_t", "s_eq_t_minus_2"):
            if f"full/{name}" in item:
                founding.setdefault(f"founding/{name}", []).append(item[f"full/{name}"])
                founding.setdefault(f"founding/{name}/at", []).append(np.asarray([c, t]))
    if not keys:
        return {}
    table = {k: np.concatenate(v) for k, v in columns.items()}
    table["distance"] = table["target"] - table["source"]
    table |= {k: np.stack(v) for k, v in founding.items()}
    return table


def _founding(table: dict[str, np.ndarray], rtol: float) -> dict:
    """Metrics of the founding spectra at the first item that has them (context 0, t = L - 1 first)."""
    out = {}
    for name in ("s_eq_t", "s_eq_t_minus_2"):
        if f"founding/{name}" in table:
            at = table[f"founding/{name}/at"]
            first = np.lexsort((-at[:, 1], at[:, 0]))[0]
            sigma = table[f"founding/{name}"][first].astype(np.float64)
            c, t = (int(v) for v in at[first])
            out[name] = {
                "context": c,
                "t": t,
                "s": t if name == "s_eq_t" else t - 2,
                "sigma_max": float(sigma[0]),
                "sigma_min": float(sigma[-1]),
                **spectrum_metrics(sigma**2, rtol=rtol),
            }
    return out


def _gram(state: ShardState, pair: Pair, side: str, part: str) -> GramAccumulator:
    if part != "all":
        return state.grams[(pair.slug, side, part)]
    pooled = GramAccumulator(state.grams[(pair.slug, side, "self")].total.shape[0])
    for piece in PARTS:
        pooled.merge(state.grams[(pair.slug, side, piece)])
    return pooled


def collect(sweep: Sweep, top_k: int) -> tuple[dict, dict[str, np.ndarray]]:
    """(summary for JSON, arrays for npz) of every finished item and the pooled totals."""
    state = sweep.merged_state()
    rtol = sweep.settings.rtol
    summary: dict = {"metric_names": list(METRICS), "pairs": {}, "covariance": {}}
    arrays: dict[str, np.ndarray] = {"metric_names": np.asarray(METRICS)}
    covs = {}
    for site, cov in state.covs.items():
        if cov.count < 2:
            continue
        values, vectors = _eigh_desc(cov.covariance())
        covs[site] = (values, vectors)
        summary["covariance"][site] = {
            "tokens": cov.count,
            **spectrum_metrics(values, min(top_k, len(values)), rtol),
        }
        arrays[f"cov/{site}/eigenvalues"] = values
        arrays[f"cov/{site}/eigenvectors"] = vectors[:, :top_k]
    seconds = []
    for index, pair in enumerate(sweep.pairs):
        table = _pair_table(sweep, index, state.items)
        if not table:
            continue
        seconds.append(table["seconds"])
        arrays |= {f"{pair.slug}/{k}": v for k, v in table.items()}
        entry = {
            "items": len(table["seconds"]),
            "blocks": len(table["source"]),
            "causal": sweep.causal[pair],
            "founding": _founding(table, rtol),
            "distance_bins": metric_curves(table["distance"], table["metrics"], by_bin=True),
            "gram": {},
            "jacobian_vs_covariance": {},
        }
        for side in SIDES:
            site = pair.a if side == "in" else pair.b
            for part in (*PARTS, "all"):
                gram = _gram(state, pair, side, part)
                if gram.count == 0:
                    continue
                values, vectors = _eigh_desc(gram.mean())
                k = min(top_k, max(1, len(values) // 2))
                key = f"{side}/{part}"
                arrays[f"{pair.slug}/gram/{key}/eigenvalues"] = values
                arrays[f"{pair.slug}/gram/{key}/eigenvectors"] = vectors[:, :k]
                entry["gram"][key] = {"blocks": gram.count, **spectrum_metrics(values, k, rtol)}
                if site in covs:
                    cov_values, cov_vectors = covs[site]
                    entry["jacobian_vs_covariance"][key] = {
                        "site": site,
                        "k": k,
                        **jacobian_vs_covariance(
                            values, vectors[:, :k], cov_values, cov_vectors[:, :k], k, rtol
                        ),
                    }
        summary["pairs"][pair.name] = entry
    if seconds:
        times = np.concatenate(seconds)
        summary["seconds_per_item"] = {
            "total": float(times.sum(axis=1).mean()),
            "jacobian": float(times[:, 0].mean()),
            "singular_values": float(times[:, 1].mean()),
            "gram": float(times[:, 2].mean()),
        }
    return summary, arrays
