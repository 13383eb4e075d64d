"""T4, alignment search: is the decision carried by a few units, or by a rotated subspace?

A distributed-alignment-search style test (Geiger et al. 2023) with the network's own decision as
the high-level variable. For pairs (base, source) of held-out inputs whose predictions differ, an
interchange intervention at a site writes the source's activation into the base's along a
subspace P, a_base <- a_base + P (a_source - a_base); it succeeds when the network then predicts
what it predicts for the source. The interchange accuracy (IIA) of

- the best k-unit subset (greedy: add the unit that raises IIA most, k times), and
- the best learned k-dimensional rotated subspace (P = V V^T, V orthonormal, trained by gradient
  on the intervened cross-entropy),

are measured on held-out pairs (half the pairs fit, half score); k as in T3. Statistic per seed:
ratio = IIA(units) / IIA(subspace). Null: a channel spread over all units is not carried by any k
of them (each holds about k/d of it), ratio near 0; a subcircuit is, ratio near 1. Rule
(`midpoint`): subcircuits above 1/2, channels below. Sites where the subspace itself carries less
than half the decisions (IIA < 1/2) have no power and are left out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from channels.sites import replace, run_sites
from channels.verdict import figures
from channels.verdict.base import MIDPOINT, MIDPOINT_RULE, TestResult, TicketTest
from channels.verdict.causal import on_dense_sites, site_channels
from channels.verdict.rundata import RunData

PAIRS = 1000
STEPS = 150
LEARNING_RATE = 0.05


def _logits(net, x: torch.Tensor, site: str, acts: torch.Tensor) -> torch.Tensor:
    with replace(net, site, lambda a: acts.to(a.dtype).reshape(a.shape)):
        return net(x)


def interchange_accuracy(net, x_base, site: str, a_base, a_source, target, project) -> float:
    """Fraction of pairs predicting `target` (the source's prediction) after the interchange."""
    with torch.no_grad():
        logits = _logits(net, x_base, site, a_base + project(a_source - a_base))
    return float((logits.argmax(-1) == target).double().mean())


def best_units(net, x, site, a_base, a_source, target, k: int) -> list[int]:
    """Greedy forward selection of k units by interchange accuracy."""
    chosen: list[int] = []
    for _ in range(k):
        scores = {}
        for j in range(a_base.shape[1]):
            if j in chosen:
                continue
            index = torch.as_tensor([*chosen, j])
            mask = torch.zeros(a_base.shape[1], dtype=a_base.dtype)
            mask[index] = 1
            scores[j] = interchange_accuracy(net, x, site, a_base, a_source, target, lambda diff, m=mask: diff * m)
        chosen.append(max(scores, key=scores.get))
    return chosen


def learned_subspace(net, x, site, a_base, a_source, target, k: int, seed: int = 0) -> torch.Tensor:
    """V (d, k) with orthonormal columns, trained so the interchange along V V^T moves the decision."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(a_base.shape[1], k, generator=gen, dtype=a_base.dtype).requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=LEARNING_RATE)
    for _ in range(STEPS):
        v = torch.linalg.qr(raw)[0]
        logits = _logits(net, x, site, a_base + (a_source - a_base) @ v @ v.T)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.linalg.qr(raw.detach())[0]


def alignment(net, x: torch.Tensor, site: str, seed: int = 0) -> dict[str, float]:
    """IIA of the best k units and of the learned k-dim subspace at `site`, on held-out pairs."""
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acts = run_sites(net, x, [site])[site].flatten(1)
        predictions = net(x).argmax(-1)
    _, _, k = site_channels(acts)
    rng = np.random.default_rng(seed)
    base, source = rng.integers(0, len(x), size=(2, PAIRS))
    keep = (predictions[base] != predictions[source]).numpy()
    base, source = base[keep], source[keep]
    if len(base) < 20:
        return {"k": k, "pairs": len(base), "iia_units": math.nan, "iia_subspace": math.nan, "ratio": math.nan}
    half = len(base) // 2
    splits = {}
    for name, part in (("fit", slice(0, half)), ("score", slice(half, None))):
        b, s = base[part], source[part]
        splits[name] = (x[b], acts[b], acts[s], predictions[s])
    units = best_units(net, splits["fit"][0], site, *splits["fit"][1:], k)
    mask = torch.zeros(acts.shape[1], dtype=acts.dtype)
    mask[torch.as_tensor(units)] = 1
    v = learned_subspace(net, splits["fit"][0], site, *splits["fit"][1:], k, seed)
    iia_units = interchange_accuracy(net, splits["score"][0], site, *splits["score"][1:], lambda diff: diff * mask)
    iia_subspace = interchange_accuracy(net, splits["score"][0], site, *splits["score"][1:],
                                        lambda diff: diff @ v @ v.T)
    ratio = iia_units / iia_subspace if iia_subspace >= MIDPOINT else math.nan
    return {"k": k, "pairs": len(base), "iia_units": iia_units, "iia_subspace": iia_subspace, "ratio": ratio,
            "units": units}


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    def measure(net, x, y, site, run_) -> dict:
        return {k: v for k, v in alignment(net, x, site, seed=run_.seed).items() if k != "units"}

    return on_dense_sites(TEST.result(), runs, networks, measure)


TEST = TicketTest(
    "T4", "alignment search: best units versus a learned subspace",
    "IIA(best k units) / IIA(learned k-dim rotated subspace) of interchange interventions, dense net",
    "a channel spread over all units is not carried by any k of them (ratio near 0)",
    MIDPOINT_RULE, votes=True, run=run, figure=figures.score,
    columns=("run", "site", "k", "pairs", "iia_units", "iia_subspace", "ratio"))
