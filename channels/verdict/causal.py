"""T3, causal ablation: do the units the ticket keeps carry the dense network's channels?

At each hidden site with a unit layout (MLP `act.i`), on the dense network and held-out data:
the channels are the top-k covariance eigenvectors D of the site's activations (k = the rounded
k_eff of the top eigenvalues, the number of channels, as in T2), the units U the k units the
sparsest ticket keeps the largest fraction of (their inputs and outputs). Both are mean-ablated,
U by a_U <- mean(a_U), D by a <- a - (a - mean) D D^T, and

    ratio = drop(U) / drop(D),   drop(S) = accuracy - accuracy with S ablated,

asks whether k particular units do what the k channel directions do. Null: random units drop far
less than the channels when the channels are spread (k random units remove about k/d of each);
the drops of k random units and k random directions are reported beside, with the variance each
ablation removes. 1 when the ticket's units are the channels (a subcircuit), 0 when they carry
none of them. Rule (`midpoint`): subcircuits above 1/2, channels below. Sites where ablating the
channels costs less than two points have no power and are left out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from channels.keys import COV, SpectrumKey
from channels.sites import replace, run_sites
from channels.verdict import figures
from channels.verdict.base import (
    EQUIVALENCE_MARGIN,
    MIDPOINT_RULE,
    TestResult,
    TicketTest,
    midpoint,
    read_sites,
)
from channels.verdict.rundata import RunData, spectrum_keys
from channels.units import mlp_unit_layout, unit_keep_fraction

TOP_K = 8
RANDOM_DRAWS = 8


def hidden_sites(run: RunData) -> list[str]:
    """The covariance sites of the dense spectra that have a unit layout in the ticket's mask."""
    spectra = run.dense.spectra or {}
    sites = [SpectrumKey.parse(k).site for k in spectrum_keys(spectra) if SpectrumKey.parse(k).kind == COV]
    return [s for s in sites if mlp_unit_layout(run.dense.mask.keys(), s) is not None]


def channel_count(eigenvalues: np.ndarray, top: int = TOP_K) -> int:
    """k = round(1 / sum w_i^2), w the normalised top eigenvalues: how many channels the site has."""
    w = np.clip(eigenvalues[:top], 0.0, None)
    if w.sum() <= 0:
        return 1
    w = w / w.sum()
    return max(1, round(float(1.0 / (w**2).sum())))


def site_channels(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean, top-k eigenvectors D as columns, k) of a site's activations (rows = examples)."""
    a = acts.double()
    mean = a.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov(a.T))
    values, vectors = values.flip(0), vectors.flip(1)
    k = min(channel_count(values.numpy()), max(1, a.shape[1] // 4))
    return mean, vectors[:, :k], k


def accuracy(net, x: torch.Tensor, y: torch.Tensor, site: str | None = None, ablate=None) -> float:
    """Accuracy of `net` on (x, y), with the activation at `site` passed through `ablate` when given."""
    with torch.no_grad():
        if site is None:
            logits = net(x)
        else:
            with replace(net, site, lambda a: ablate(a.double()).to(a.dtype)):
                logits = net(x)
    return float((logits.argmax(-1) == y).double().mean())


def ablations(net, x, y, site: str, units: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Accuracy drops of ablating the ticket's units, the channels, random units, random directions."""
    acts = run_sites(net, x, [site])[site].flatten(1)
    mean, channels, k = site_channels(acts)
    d = acts.shape[1]
    rng = np.random.default_rng(seed)
    full = accuracy(net, x, y)

    def unit_ablation(chosen):
        index = torch.as_tensor(np.asarray(chosen), dtype=torch.long)

        def ablate(a):
            a = a.clone()
            a[:, index] = mean[index]
            return a
        return ablate

    def direction_ablation(basis):
        return lambda a: a - (a - mean) @ basis @ basis.T

    chosen = units[:k]
    random_units = [rng.choice(d, size=k, replace=False) for _ in range(RANDOM_DRAWS)]
    random_dirs = [torch.linalg.qr(torch.as_tensor(rng.standard_normal((d, k))))[0] for _ in range(RANDOM_DRAWS)]
    centred = acts.double() - mean
    total = float((centred**2).sum())
    drop_units = full - accuracy(net, x, y, site, unit_ablation(chosen))
    drop_channels = full - accuracy(net, x, y, site, direction_ablation(channels))
    return {
        "k": k, "d": d, "accuracy": full, "drop_units": drop_units, "drop_channels": drop_channels,
        "drop_random_units": float(np.mean([full - accuracy(net, x, y, site, unit_ablation(u)) for u in random_units])),
        "drop_random_directions": float(np.mean([full - accuracy(net, x, y, site, direction_ablation(b))
                                                 for b in random_dirs])),
        "variance_units": float((centred[:, torch.as_tensor(chosen)] ** 2).sum()) / total,
        "variance_channels": float(((centred @ channels) ** 2).sum()) / total,
        "ratio": drop_units / drop_channels if drop_channels >= EQUIVALENCE_MARGIN else math.nan,
    }


def ticket_units(run: RunData, site: str) -> np.ndarray:
    """The site's units, most-kept first, at the sparsest ticket level (ties by index)."""
    ticket = run.levels[max(run.levels)]
    keep = unit_keep_fraction(ticket.mask, mlp_unit_layout(ticket.mask.keys(), site))
    return np.argsort(-keep, kind="stable")


def on_dense_sites(result: TestResult, runs: Sequence[RunData], networks, measure) -> TestResult:
    """`measure(net, x, y, site, run) -> dict with a "ratio"` on every run's dense network at each
    hidden site; rows into the details, ratios read by `midpoint` per site."""
    if networks is None:
        result.note = "needs the runs' networks (rebuilt from their config.yaml)"
        return result
    per_site: dict[str, dict[RunData, float]] = {}
    for run_ in runs:
        net = networks.net(run_, 0)
        x, y = networks.evaluation_set(run_)
        for site in hidden_sites(run_):
            found = measure(net, x, y, site, run_)
            result.details.append({"run": run_.name, "site": site, **found})
            per_site.setdefault(site, {})[run_] = found["ratio"]
    return read_sites(result, per_site, midpoint, "needs covariance spectra at MLP sites (act.i) and a pruned level")


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    runs = [r for r in runs if max(r.levels) > 0]
    return on_dense_sites(TEST.result(), runs, networks,
                          lambda net, x, y, site, run_: ablations(net, x, y, site, ticket_units(run_, site)))


TEST = TicketTest(
    "T3", "causal ablation: the ticket's units versus the channels",
    "drop(ablate the k units the ticket keeps most) / drop(ablate the k top covariance directions), dense net",
    "k random units remove about k/d of each channel (random-unit and random-direction drops reported)",
    MIDPOINT_RULE, votes=True, run=run, figure=figures.score,
    columns=("run", "site", "k", "d", "accuracy", "drop_units", "drop_channels", "drop_random_units",
             "drop_random_directions", "variance_units", "variance_channels", "ratio"))
