"""T4, alignment search: is the decision carried by a few units, or by a rotated subspace?

A distributed-alignment-search style test (Geiger et al. 2023) with the network's own decision as
the high-level variable. For pairs (base, source) of held-out inputs whose predictions differ, an
interchange at a site writes the source's canonical coordinates into the base's along a subspace P,
u_base <- u_base + P (u_source - u_base); it succeeds when the network then predicts what it
predicts for the source. The interchange accuracies (IIA, on held-out pairs: half fit, half score)
of the best m units (greedy forward selection among the `POOL` units of largest canonical
variance; a sequence model's pairs hold at most `PAIR_POSITIONS` scored positions and its search
adds several units a round where one per round would not fit `SEARCH_POSITIONS`) and of a learned k-dimensional subspace (P = V V^T, V orthonormal, trained on the
intervened cross-entropy) give ratio = IIA(units) / IIA(subspace); k channels occupying m units
as in T3 (`causal.counts`: the fewest channels, and units, holding 90%).

The ratio's chance level depends on width, k, m, classes and rank (a dense rank-1 channel in 16 units
has 4 units carrying most of it), so it is read against the same search on rotated copies of the
site (`Frame.rotated`: no unit special by construction), ratio_null, with the learned subspace
shared (the function is the same):

    score = (ratio - ratio_null) / (1 - ratio_null).

0 when the best units do no better than the best rotated units, 1 when m units do what the best
subspace does. Rule (`midpoint`): subcircuits above 1/2, channels below. Sites where the subspace
carries less than half the decisions, or the rotated units already nearly all, have no power.

Invariances: the search runs in canonical coordinates, unchanged by positive per-unit rescaling
and LayerNorm-gain folding; greedy ties, the subspace's initial draw and the null's rotations
follow the canonical unit order, so a permutation of units leaves the score unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from channels.verdict import figures
from channels.verdict.base import (
    MIDPOINT,
    MIDPOINT_RULE,
    TestResult,
    TicketTest,
    midpoint,
    read_sites,
)
from channels.verdict.causal import TOP, counts
from channels.verdict.coordinates import Frame, channels, intervene, logits_of
from channels.verdict.networks import unit_reader
from channels.verdict.rundata import RunData

PAIRS = 800
PAIR_POSITIONS = 2048  # scored positions the pairs hold in all: a sequence of 64 scored tokens is 64 decisions
SEARCH_POSITIONS = 2**18  # pair positions the greedy search pushes through the network per frame
STEPS = 100
LEARNING_RATE = 0.1
POOL = 32
NULL_DRAWS = 2
MIN_ROOM = 0.1
IGNORE = -100  # a target position not scored


def _rows_of(frame: Frame, index: np.ndarray, rows_per_input: int) -> torch.Tensor:
    """The frame's coordinate rows of inputs `index` (each input owns `rows_per_input` rows)."""
    rows = torch.as_tensor(index)[:, None] * rows_per_input + torch.arange(rows_per_input)
    return frame.coords[rows.reshape(-1)]


def interchange_accuracy(net, x_base, frame: Frame, u_source, target, project) -> float:
    """Fraction of pairs (of their scored positions: target != -100) predicting `target` after
    u <- u + project(u_source - u)."""
    with torch.no_grad():
        logits = intervene(net, x_base, frame, lambda u: u + project(u_source - u))
    scored = target != IGNORE
    return float((logits.argmax(-1) == target)[scored].double().mean())


def greedy_rounds(k: int, fit_positions: int) -> int:
    """Rounds of the greedy search: one unit per round (exact greedy) while its `POOL`-wide rounds
    fit `SEARCH_POSITIONS` (every classifier: 800 pairs of one position), else as many rounds as fit,
    each adding an equal share of the k units (a wide site of a sequence model)."""
    k = min(k, POOL)
    exact = sum(POOL - i for i in range(k)) * fit_positions
    return k if exact <= SEARCH_POSITIONS else max(1, min(k, SEARCH_POSITIONS // (POOL * fit_positions)))


def best_units(net, x, frame: Frame, u_source, target, k: int) -> list[int]:
    """Greedy forward selection of k units (ties in canonical order) among the `POOL` largest, in
    `greedy_rounds` rounds: each round scores every remaining unit added to those chosen and keeps
    the best of them."""
    pool = [int(j) for j in torch.argsort(-frame.unit_variance(), stable=True)[:POOL]]
    k = min(k, len(pool))
    rounds = greedy_rounds(k, int((target != IGNORE).sum()))
    chosen: list[int] = []
    for round_ in range(rounds):
        take = -(-(k - len(chosen)) // (rounds - round_))  # ceil: the units left shared over the rounds left
        scores = []
        for j in pool:
            if j in chosen:
                continue
            mask = torch.isin(frame.units, torch.as_tensor([*chosen, j])).to(u_source.dtype)
            scores.append((-interchange_accuracy(net, x, frame, u_source, target, lambda diff, m=mask: diff * m), j))
        chosen += [j for _, j in sorted(scores, key=lambda pair: pair[0])[:take]]  # stable: canonical order on ties
    return chosen


def learned_subspace(net, x, frame: Frame, u_source, target, dim: int, seed: int = 0) -> torch.Tensor:
    """V (m, dim) with orthonormal columns, trained so the interchange along V V^T moves the decision."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(frame.coords.shape[1], dim, generator=gen, dtype=frame.coords.dtype).requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=LEARNING_RATE)
    for _ in range(STEPS):
        v = torch.linalg.qr(raw)[0]
        with torch.enable_grad():
            logits = intervene(net, x, frame, lambda u, v=v: u + (u_source - u) @ v @ v.T)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
        opt.step()
    return torch.linalg.qr(raw.detach())[0]


def alignment(net, x: torch.Tensor, frame: Frame, seed: int = 0, k: int | None = None,
              m: int | None = None, scored: torch.Tensor | None = None) -> dict[str, float]:
    """Score, ratio and null ratio of the best m units (default: as many as the site's channels
    occupy, `causal.counts`) against a learned subspace of dimension k (default: as many as the
    site has channels) at the frame's site. `scored`: the output positions a sequence model's task
    scores (None: all); a pair is read at the positions scored in both of its inputs."""
    with torch.no_grad():
        predictions = logits_of(net(x)).argmax(-1)
    scored = torch.ones_like(predictions, dtype=torch.bool) if scored is None else scored
    rows_per_input = len(frame.coords) // len(x)
    default_k, default_m = counts(frame, channels(frame, TOP))
    k = default_k if k is None else k
    m = max(k, default_m) if m is None else m
    width = len(frame.units) // frame.unit_count
    rng = np.random.default_rng(seed)
    base, source = rng.integers(0, len(x), size=(2, PAIRS))
    both = scored[base] & scored[source]
    keep = ((predictions[base] != predictions[source]) & both).reshape(len(base), -1).any(1).numpy()
    positions = both.reshape(len(base), -1).sum(1).numpy()[keep]
    base, source = base[keep], source[keep]
    within = np.cumsum(positions) <= PAIR_POSITIONS  # a sequence model: as many pairs as the positions allow
    base, source = base[within], source[within]
    empty = {"k": k, "m": m, "pairs": len(base), "iia_units": math.nan, "iia_subspace": math.nan, "ratio": math.nan,
             "ratio_null": math.nan, "score": math.nan}
    if len(base) < 20:
        return empty
    half = len(base) // 2
    fit, score = (base[:half], source[:half]), (base[half:], source[half:])

    def split(frame_: Frame, pair):
        b, s = pair
        target = predictions[s].masked_fill(~(scored[b] & scored[s]), IGNORE)
        return x[b], frame_, _rows_of(frame_, s, rows_per_input), target

    v = learned_subspace(net, *split(frame, fit), k * width, seed)
    iia_subspace = interchange_accuracy(net, *split(frame, score), lambda diff: diff @ v @ v.T)

    def iia_of_units(frame_: Frame) -> float:
        units = best_units(net, *split(frame_, fit), m)
        mask = torch.isin(frame_.units, torch.as_tensor(units)).to(frame_.coords.dtype)
        return interchange_accuracy(net, *split(frame_, score), lambda diff: diff * mask)

    iia_units = iia_of_units(frame)
    iia_null = float(np.mean([iia_of_units(frame.rotated(seed * 1000 + draw)) for draw in range(NULL_DRAWS)]))
    found = {**empty, "iia_units": iia_units, "iia_subspace": iia_subspace, "iia_null": iia_null}
    if iia_subspace < MIDPOINT:
        return found
    ratio, ratio_null = iia_units / iia_subspace, min(1.0, iia_null / iia_subspace)
    found.update(ratio=ratio, ratio_null=ratio_null)
    if 1 - ratio_null >= MIN_ROOM:
        found["score"] = (ratio - ratio_null) / (1 - ratio_null)
    return found


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    source = unit_reader(result, runs, networks)
    if source is None:
        return result
    per_site: dict[str, dict[RunData, float]] = {}
    for run_ in runs:
        x, _ = source.data(run_)
        for site in source.sites(run_):
            found = alignment(source.dense(run_), x, source.frame(run_, site), seed=run_.seed,
                              scored=source.scored(run_))
            result.details.append({"run": run_.name, "site": site.name, **found})
            per_site.setdefault(site.name, {})[run_] = found["score"]
    return read_sites(result, per_site, midpoint, "no unit sites (an input of features, or layers with a unit layout)",
                      why_no_power)


def why_no_power(rows: list[dict]) -> str:
    """Which of the power conditions failed at a site where no seed gave a score."""
    iia = [r["iia_subspace"] for r in rows if np.isfinite(r["iia_subspace"])]
    if not iia:
        return "fewer than 20 held-out pairs with different predictions"
    if max(iia) < MIDPOINT:
        return (f"the learned subspace moves fewer than half the decisions in every seed "
                f"(interchange accuracy {min(iia):.2f}-{max(iia):.2f})")
    return f"the rotated units already do within {MIN_ROOM:g} of what the subspace does, or the subspace moves under half"


TEST = TicketTest(
    "T4", "alignment search: best units versus a learned subspace",
    "(ratio - ratio_null) / (1 - ratio_null), ratio = IIA(best k units) / IIA(learned subspace of the same "
    "dimension), ratio_null the same search on rotated units; dense net",
    "the best k units of rotated copies of the site (no unit special), at the same width, k and classes",
    MIDPOINT_RULE, votes=True, run=run, figure=figures.score,
    columns=("run", "site", "k", "m", "pairs", "iia_units", "iia_null", "iia_subspace", "ratio", "ratio_null", "score"))
