"""T2, localisation: how many units carry the dense network's channels, for how many channels?

At each site, the channels are the top-k eigenvectors v_i of the dense network's covariance (or of
a Jacobian Gram, whose eigenvectors live at its source site: `input->output` gives the input
directions the output is sensitive to), with weights w_i = lambda_i / sum_k lambda. Then

    k_eff   = 1 / sum_i w_i^2                (how many channels: the participation ratio)
    l_j     = sum_i w_i v_ij^2               (unit j's share of the channels' signal)
    n_units = 1 / sum_j l_j^2                (how many units carry it)

`l` does not change under rotations inside the top-k subspace, so nearly equal eigenvalues (whose
eigenvectors are arbitrary within their span) do not matter. The null is the same spectrum with
Haar-random eigenvectors (n_null, the mean over 64 draws): channels spread like random directions.
The statistic per seed is

    rho = log(n_null / n_units) / log(n_null / k_eff),

0 when the signal is as spread as random directions, 1 when each channel sits on a unit of its own
(k_eff channels on k_eff units). Rule (`midpoint`): subcircuits when the 95% interval lies above
1/2 (fewer units than the geometric mean of k_eff and n_null), channels when below. A site's value
is the mean over its spectra; sites with too little room (n_null < 1.5 k_eff) are left out.
Measured on the dense network, because a ticket's own activity sits on the units it kept by
construction.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from channels.keys import SpectrumKey
from channels.verdict import figures
from channels.verdict.base import MIDPOINT_RULE, TestResult, TicketTest, midpoint, read_sites
from channels.verdict.rundata import RunData, final_eigenvalues, spectrum_keys, top_vectors

NULL_DRAWS = 64
MIN_ROOM = 1.5


def carriers(vectors: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(n_units, k_eff) of channels `vectors` (d, k) weighted by eigenvalues `weights` (k,)."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(w.shape, 1.0 / w.size)
    v = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    share = (v**2) @ w
    return float(1.0 / (share**2).sum()), float(1.0 / (w**2).sum())


def random_carriers(d: int, weights: np.ndarray, seed: int = 0) -> float:
    """n_units of the same spectrum on Haar-random directions, mean over NULL_DRAWS."""
    rng = np.random.default_rng(seed)
    k = len(weights)
    draws = [carriers(np.linalg.qr(rng.standard_normal((d, k)))[0], weights)[0] for _ in range(NULL_DRAWS)]
    return float(np.mean(draws))


def localisation(vectors: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """rho and its parts for one spectrum (nan rho when the site leaves too little room)."""
    n_units, k_eff = carriers(vectors, weights)
    n_null = random_carriers(vectors.shape[0], weights)
    room = n_null / k_eff
    rho = math.log(n_null / n_units) / math.log(room) if room >= MIN_ROOM else math.nan
    return {"n_units": n_units, "k_eff": k_eff, "n_null": n_null, "rho": rho}


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    per_site: dict[str, dict[RunData, list[float]]] = {}
    for run_ in runs:
        spectra = run_.dense.spectra
        if spectra is None:
            continue
        for key in spectrum_keys(spectra):
            vectors = top_vectors(spectra, key)
            found = localisation(vectors, final_eigenvalues(spectra, key)[: vectors.shape[1]])
            site = SpectrumKey.parse(key).site
            result.details.append({"run": run_.name, "site": site, "spectrum": key, "d": vectors.shape[0],
                                   **found})
            if math.isfinite(found["rho"]):
                per_site.setdefault(site, {}).setdefault(run_, []).append(found["rho"])
    means = {site: {r: float(np.mean(v)) for r, v in values.items()} for site, values in per_site.items()}
    return read_sites(result, means, midpoint, "needs spectra of the dense network (spectra.sites and spectra.jacobians)")


TEST = TicketTest(
    "T2", "localisation of the channels on units",
    "rho = log(n_null / n_units) / log(n_null / k_eff) of the dense network's top-k channels, per site",
    "0: the channels spread over units like random directions (Haar eigenvectors, same spectrum)",
    MIDPOINT_RULE,
    votes=True, run=run, figure=figures.score, columns=("run", "site", "spectrum", "d", "k_eff", "n_units", "n_null", "rho"))
