"""T5, identity across seeds: do tickets of different inits keep the same weights? (descriptive)

For every pair of runs with different init seeds, at the sparsest level both finished: network
b's units are aligned to a's by weight matching on their dense trained weights (hidden units are
defined only up to a permutation; `units.weight_matching` over every unit site of the network: an
MLP's hidden layers, a transformer's MLP neurons, heads (whole blocks) and residual coordinates,
matched together), then per pruned tensor the
overlap of the two masks is set against its hypergeometric null (independent random masks of the
same counts): z-score, and the chance-corrected overlap (shared - mean) / (min(ka, kb) - mean).
Statistic per seed: the mean chance-corrected overlap over tensors and over the pairs it opens
(each pair counts once, for its first run, so n seeds give n - 1 units). Beside it, the
functional similarity of the two tickets: linear CKA of their activations at each site on
held-out data. Reading: `shared` above 1/2, `not shared` below. It does not vote: a unique
solution (a world that pins the weights) is shared whichever picture is true, so shared weights
are not evidence for subcircuits by themselves.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch

from channels.compare import linear_cka
from channels.sites import run_sites
from channels.units import UnitLayout, permute_units, weight_matching
from channels.verdict import figures
from channels.verdict.base import (
    INCONCLUSIVE,
    MIDPOINT,
    NETWORK,
    TestResult,
    TicketTest,
    read_sites,
)
from channels.verdict.networks import reader
from channels.verdict.rundata import RunData
from channels.verdict.stats import hypergeometric_overlap
from channels.verdict.unit_sites import INPUT, hidden_sites

SHARED, NOT_SHARED = "shared", "not shared"


def _rule(site, values) -> str:
    lo, hi = site.ci if not site.provisional else (site.effect, site.effect)
    return SHARED if lo > MIDPOINT else NOT_SHARED if hi < MIDPOINT else INCONCLUSIVE


def matched_layouts(a: RunData, networks=None) -> list[UnitLayout]:
    """The layouts weight matching aligns: every hidden unit site of run a's network (the residual
    stream, laid out at several sites, once), or the MLP layers its mask names without a network."""
    sites = [s for s in networks.sites(a) if s.name != INPUT] if networks is not None else hidden_sites(a.dense.mask)
    return list({site.layout.slots: site.layout for site in sites}.values())


def pair_identity(a: RunData, b: RunData, level: int, layouts: Sequence[UnitLayout] | None = None) -> dict:
    """Mask overlap per tensor of two runs' tickets at `level`, after weight matching b to a over
    `layouts` (default: the MLP layers the mask names)."""
    layouts = matched_layouts(a) if layouts is None else layouts
    mask_b = dict(b.levels[level].mask)
    if layouts:
        perms = weight_matching(a.dense.weights, b.dense.weights, layouts)
        for layout, perm in zip(layouts, perms):
            mask_b = permute_units(mask_b, layout, perm)
    tensors = {}
    for name, m_a in a.levels[level].mask.items():
        m_b = mask_b[name]
        tensors[name] = hypergeometric_overlap(int(m_a.sum()), int(m_b.sum()), m_a.numel(), int((m_a & m_b).sum()))
    excesses = [t["excess"] for t in tensors.values() if np.isfinite(t["excess"])]
    return {"tensors": tensors, "identity": float(np.mean(excesses)) if excesses else float("nan"),
            "aligned": bool(layouts)}


def functional_similarity(a: RunData, b: RunData, level: int, networks) -> float:
    """Mean over hidden sites of the linear CKA of the two tickets' activations on held-out data."""
    x, _ = networks.evaluation_set(a)
    sites = [site.name for site in networks.sites(a) if site.name != INPUT]
    if not sites:
        return float("nan")
    with torch.no_grad():
        acts_a = run_sites(networks.net(a, level), x, sites)
        acts_b = run_sites(networks.net(b, level), x, sites)
    return float(np.mean([linear_cka(acts_a[s].flatten(1).double().numpy(), acts_b[s].flatten(1).double().numpy())
                          for s in sites]))


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    networks = reader(networks)
    per_run: dict[RunData, list[float]] = {}
    for a, b in combinations(runs, 2):
        common = sorted(set(a.levels) & set(b.levels))
        if a.seed == b.seed or not common or common[-1] == 0 or set(a.dense.mask) != set(b.dense.mask):
            continue
        level = common[-1]
        found = pair_identity(a, b, level, matched_layouts(a, networks))
        similarity = functional_similarity(a, b, level, networks) if networks is not None else float("nan")
        z = [t["z"] for t in found["tensors"].values()]
        result.details.append({"a": a.name, "b": b.name, "level": level, "density": a.levels[level].density,
                               "identity": found["identity"], "mean_z": float(np.nanmean(z)) if z else float("nan"),
                               "cka": similarity, "aligned": found["aligned"]})
        per_run.setdefault(a, []).append(found["identity"])  # each pair counts once, for its first run
    means = {NETWORK: {r: float(np.mean(v)) for r, v in per_run.items()}} if per_run else {}
    unknown = networks.unknown(runs) if networks is not None else None
    if unknown:
        result.note = f"{unknown}; the masks are compared unaligned"
    return read_sites(result, means, _rule, "needs runs of two or more init seeds")


TEST = TicketTest(
    "T5", "identity across seeds (descriptive)",
    "chance-corrected mask overlap of tickets of different seeds after weight matching (hypergeometric null)",
    "0: independent random masks of the same per-tensor counts",
    "shared if the 95% interval lies above 1/2, not shared if below; reported beside linear CKA; no vote",
    votes=False, run=run, figure=figures.score, columns=("a", "b", "level", "density", "identity", "mean_z", "cka", "aligned"))
