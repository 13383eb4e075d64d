"""T6, spectral signature and channel preservation (descriptive: sparsity alone moves spectra).

Per level, line and spectrum the report shows the entropy effective rank exp(-sum p_i log p_i),
the participation ratio (sum lambda)^2 / sum lambda^2 and the top-1 share of the final spectra,
read as one big channel (top-1 share >= 1/2), a few channels (participation ratio < 3) or many
medium channels. Statistic per seed, at the sparsest level with a random_prune control:
overlap(ticket, dense) - overlap(random_prune, dense), the chance-corrected top-k subspace
overlap ((mean squared cosine of the principal angles - k/d) / (1 - k/d)) with the dense
network's channels, mean over spectra (unit-aligned: rewinding keeps the units). Null: 0, a random
prune of the same sparsity keeps the channels as well. Reading: `kept better` when the 95%
interval is above 0, `kept alike` when TOST puts it within 0.1 of 0. It does not vote: both
pictures let a good ticket keep the dense network's channels.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from channels.compare import subspace_overlap
from channels.metrics import entropy_effective_rank, participation_ratio, top_share
from channels.verdict.base import INCONCLUSIVE, NETWORK, TestResult, TicketTest, read_sites
from channels.verdict.rundata import RunData, final_eigenvalues, spectrum_keys, top_vectors
from channels.verdict.stats import excess, tost_equivalent
from channels.verdict.ticket import sparsest_common

KEPT_BETTER, KEPT_ALIKE = "kept better", "kept alike"
OVERLAP_MARGIN = 0.1
LINES = ("random_reinit", "random_prune", "shuffle")


def overlap_excess(a: np.ndarray, b: np.ndarray) -> float:
    """Chance-corrected subspace overlap of two k-column bases of R^d: excess(overlap, k / d)."""
    k = min(a.shape[1], b.shape[1])
    return excess(subspace_overlap(a[:, :k], b[:, :k]), k / a.shape[0])


def channel_shape(top1: float, ratio: float) -> str:
    if top1 >= 0.5:
        return "one big channel"
    return "a few channels" if ratio < 3 else "many medium channels"


def signature_rows(runs: Sequence[RunData]) -> list[dict]:
    """Per level, line and spectrum: mean effective rank, participation ratio, top-1 share, shape."""
    groups: dict[tuple, list[tuple[float, np.ndarray]]] = {}
    for run in runs:
        for line in (None, *LINES):
            for level, job in run.line(line).items():
                for key in spectrum_keys(job.spectra or {}):
                    groups.setdefault((level, line or "ticket", key), []).append(
                        (job.density, final_eigenvalues(job.spectra, key)))
    rows = []
    for (level, line, key), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "ticket", kv[0][1:])):
        eigs = [e for _, e in items]
        top1 = float(np.mean([top_share(e, 1) for e in eigs]))
        ratio = float(np.mean([participation_ratio(e) for e in eigs]))
        rows.append({"level": level, "density": float(np.mean([d for d, _ in items])), "line": line, "spectrum": key,
                     "effective_rank": float(np.mean([entropy_effective_rank(e) for e in eigs])),
                     "participation_ratio": ratio, "top1_share": top1, "shape": channel_shape(top1, ratio),
                     "n": len(items)})
    return rows


def _rule(site, values) -> str:
    lo = site.ci[0] if not site.provisional else site.effect
    if lo > 0:
        return KEPT_BETTER
    if tost_equivalent(values, OVERLAP_MARGIN) or (site.provisional and abs(site.effect) < OVERLAP_MARGIN):
        return KEPT_ALIKE
    return INCONCLUSIVE


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    result.details = signature_rows(runs)
    per_run = {}
    for run_ in runs:
        level = sparsest_common(run_, ("random_prune",))
        dense = run_.dense.spectra
        if level is None or dense is None:
            continue
        ticket, rand = run_.levels[level].spectra, run_.line("random_prune")[level].spectra
        if ticket is None or rand is None:
            continue
        keys = spectrum_keys(dense)
        kept = [overlap_excess(top_vectors(dense, k), top_vectors(ticket, k)) for k in keys]
        random = [overlap_excess(top_vectors(dense, k), top_vectors(rand, k)) for k in keys]
        per_run[run_] = float(np.mean(kept) - np.mean(random))
    return read_sites(result, {NETWORK: per_run} if per_run else {}, _rule, "needs spectra and a random_prune control")


TEST = TicketTest(
    "T6", "spectral signature and channel preservation (descriptive)",
    "overlap(ticket, dense) - overlap(random_prune, dense): chance-corrected top-k subspace overlap",
    "0: a random prune of the same sparsity keeps the dense channels as well",
    "kept better if the 95% interval is above 0, kept alike if TOST puts it within 0.1; no vote",
    votes=False, run=run,
    columns=("level", "density", "line", "spectrum", "effective_rank", "participation_ratio", "top1_share",
             "shape", "n"))
