"""T3, the ticket's units: does ablating the units the IMP ticket keeps cost what ablating the
channels costs, beyond as many random units?

At each unit site (the input coordinates, each hidden layer), on the dense network and held-out
data, in canonical coordinates (`coordinates`): U are the m units through which the sparsest
ticket runs the most input-to-output paths of its mask (`unit_sites.ticket_paths`: a unit whose
outgoing weights the ticket pruned carries none, however many inputs it kept), R are m random
units (`RANDOM_DRAWS` draws, averaged: what a random prune of the same sparsity keeps most of is
a random draw), D the top-k channel directions, k the fewest of the site's channels holding 90%
of their carried output variance, and m the units those channels occupy (the fewest holding 90% of
their loading; `counts`: k <= m <= a quarter of the units, a rank-2 channel carried by five units
is found by five units, not two). Units are mean-ablated, directions by removing the centred
coordinates' component in span(D). With drop(S) = accuracy - accuracy with S ablated, the
ticket's units cost

    t = (drop(U) - drop(R)) / (drop(D) - drop(R))

of what the channels cost beyond random units. Null at the same shape: t's chance level depends on
width, m, k and rank (in a dense rank-2 channel over 48 inputs the best quarter of the
coordinates carries about half the channels, so a ticket that keeps them scores ~0.45 with no unit
special), so t is read against the same quantity on rotated copies of the site (`Frame.rotated`:
no unit special by construction; `NULL_ROTATIONS`), the m units holding most of the channels'
loading B (`unit_loading`), as T4 reads its ratio (T4 keeps one scale: its ratio has no
random-units anchor at 0, an interchange of units that move nothing still scores the decisions it
leaves unchanged):

    own(frame) = (drop(B) - drop(R)) / (drop(D) - drop(R)),   t_null = mean own(rotated copies),
    score = (t - t_null) / (1 - t_null)  if t >= t_null,   (t - t_null) / t_null  below it
    (`against_null`).

1 when the ticket's units are where the channels are (a subcircuit the ticket found), 0 when they
do no better than the best units of a site where no unit is special, -1 when they cost no more
than random units. Each side is scaled by its own room: with one scale, (t - t_null) / (1 - t_null)
below the null mostly measured the null (a ticket at random units scores -t_null / (1 - t_null),
-0.3 to -0.9 as the null moves), so a dense site's score wandered with its spectrum (the dial of
population 20261213 rose back by 0.39 at act.0 with t ~ 0.05 throughout).

A low score has two causes, and only one is evidence for channels: the channels spread over the
units, or they sit in a few units the ticket did not keep (an Adam ticket can keep busy units and
drop a planted subcircuit's).
So a seed whose score is below 1/2 is checked against the channels' own units B,
special = against_null(own(frame), t_null): a seed with special above 1/2 gives no value
("the ticket misses the units the channels occupy"): the dense network has a unit structure the
ticket did not keep, which is no vote for channels. Rule (`midpoint`): subcircuits above 1/2,
channels below. A seed whose channels cost less than two points beyond random units, or whose
rotated copies leave less than `NULL_ROOM` of the scale, gives no value; a site with no value
reads `no power`, saying why. Of the voting tests it is the one that reads the ticket itself.

Invariances: unit ablation, canonical directions and the channels' loading are unchanged by
positive per-unit rescaling and LayerNorm-gain folding; permutations permute the mask with the
units, and ties, random draws and the null's rotations follow the canonical unit order, so the
statistic is unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from channels.verdict import figures
from channels.verdict.base import (
    EQUIVALENCE_MARGIN,
    MIDPOINT,
    MIDPOINT_RULE,
    TestResult,
    TicketTest,
    midpoint,
    read_sites,
)
from channels.verdict.coordinates import (
    Channels,
    Frame,
    channels,
    intervene,
    unit_loading,
)
from channels.verdict.networks import unit_reader
from channels.verdict.rundata import RunData
from channels.verdict.unit_sites import ticket_paths

RANDOM_DRAWS = 16
TOP = 8
OCCUPIED = 0.9  # the channels: the fewest holding 90% of the carried variance; their units: 90% of the loading
NULL_ROTATIONS = 2
NULL_ROOM = 0.1  # the rotated null leaves less than a tenth of the 0-1 scale: the site cannot show special units


def counts(frame: Frame, found: Channels) -> tuple[int, int]:
    """(k, m) of a site with top channels `found`: k = the fewest channels holding `OCCUPIED` of
    the carried output variance, at most a quarter of the units; m = the fewest units holding
    `OCCUPIED` of the channels' loading (`unit_loading`), the units they occupy, at least k (a unit
    per channel) and at most a quarter of the units. A subcircuit of five units carrying a rank-2
    channel is found by its five units, not two; nor by the two an effective number 1 / sum l^2
    gives when one unit dominates (loadings 0.71, 0.09, 0.09, 0.06, 0.02 count 1.9 units, and
    ablating two of the five leaves a third of what the channels cost). Likewise a 3-class decision
    is 2-dimensional however unequal its two channels (shares 0.82, 0.15: k_eff 1.45 would round to
    one direction, which the m units then outdo, scores above 1)."""
    quarter = max(1, frame.unit_count // 4)
    k = int(min(_fewest(found.weights.numpy()), quarter))
    return k, int(min(max(k, _fewest(unit_loading(frame, found).numpy())), max(k, quarter)))


def _fewest(shares: np.ndarray) -> int:
    """The fewest of `shares` (largest first) that sum to `OCCUPIED` of their total."""
    ordered = np.sort(shares)[::-1]
    return int(np.searchsorted(np.cumsum(ordered), OCCUPIED * ordered.sum()) + 1)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of labelled positions predicted right (label -100: not scored)."""
    scored = y != -100
    return float((logits.argmax(-1)[scored] == y[scored]).double().mean())


def unit_ablation(frame: Frame, units: Sequence[int]):
    """Mean-ablate the frame's units `units` (their canonical coordinates set to 0, the mean)."""
    chosen = torch.isin(frame.units, torch.as_tensor(list(units), dtype=torch.long))

    def edit(u: torch.Tensor) -> torch.Tensor:
        return torch.where(chosen, torch.zeros_like(u), u)
    return edit


def direction_ablation(directions: torch.Tensor):
    """Remove the coordinates' component in span(directions)."""
    basis = torch.linalg.qr(directions)[0]
    return lambda u: u - (u @ basis) @ basis.T


def ticket_order(frame: Frame, keep: np.ndarray) -> list[int]:
    """The frame's units by how much of the ticket runs through them (`keep`, per network unit),
    most first (ties in canonical order)."""
    kept = keep[frame.unit_ids.numpy()]
    return list(np.lexsort((np.arange(len(kept)), -kept)))


def against_null(value: float, null: float) -> float:
    """0 at the null, 1 at 1 (the channels' whole cost), -1 at 0 (random units' cost); linear on
    each side, below the null over max(null, NULL_ROOM)."""
    if value >= null:
        return (value - null) / (1.0 - null)
    return (value - null) / max(null, NULL_ROOM)


def ablations(net, x, y, frame: Frame, ticket_units: Sequence[int], seed: int = 0) -> dict[str, float]:
    """Accuracy drops of ablating the ticket's m units, m random units and the k top channels; the
    score, and where it is below 1/2, whether the channels' own units are special (module docstring)."""
    found = channels(frame, TOP)
    k, m = counts(frame, found)
    full = accuracy(intervene(net, x, frame, lambda u: u), y)

    def drop(in_frame: Frame, edit) -> float:
        with torch.no_grad():
            return full - accuracy(intervene(net, x, in_frame, edit), y)

    def random_drop(in_frame: Frame, rng: np.random.Generator) -> float:
        return float(np.mean([drop(in_frame, unit_ablation(in_frame, rng.choice(in_frame.unit_count, m, replace=False)))
                              for _ in range(RANDOM_DRAWS)]))

    def own_units(in_frame: Frame, in_found: Channels, random: float) -> float:
        """(drop(the m units holding most of the channels) - drop(m random units)) / (drop(D) - the
        same), in `in_frame`'s units (the channels, a subspace, cost the same in every frame)."""
        loading = unit_loading(in_frame, in_found).numpy()
        own = np.lexsort((np.arange(len(loading)), -loading))[:m]
        return (drop(in_frame, unit_ablation(in_frame, own)) - random) / max(drop_channels - random, EQUIVALENCE_MARGIN)

    rng = np.random.default_rng(seed)
    drop_units = drop(frame, unit_ablation(frame, ticket_units[:m]))
    drop_random = random_drop(frame, rng)
    drop_channels = drop(frame, direction_ablation(found.directions[:, :k]))
    room = drop_channels - drop_random
    row = {"k": k, "m": m, "units": frame.unit_count, "accuracy": full, "drop_ticket_units": drop_units,
           "drop_random_units": drop_random, "drop_channels": drop_channels, "ticket_units": math.nan,
           "own_units": math.nan, "own_units_null": math.nan, "own_units_special": math.nan, "score": math.nan}
    if room < EQUIVALENCE_MARGIN:
        return row
    row["ticket_units"] = (drop_units - drop_random) / room
    row["own_units"] = own_units(frame, found, drop_random)
    nulls = []
    for draw in range(NULL_ROTATIONS):
        rotated = frame.rotated(seed + 1 + draw)
        nulls.append(own_units(rotated, channels(rotated, TOP), random_drop(rotated, rng)))
    null = row["own_units_null"] = float(np.mean(nulls))
    if 1.0 - null < NULL_ROOM:
        return row  # m units of a frame with no special unit already carry the channels: no power
    row["own_units_special"] = against_null(row["own_units"], null)
    row["score"] = against_null(row["ticket_units"], null)
    if row["score"] < MIDPOINT and row["own_units_special"] > MIDPOINT:
        row["score"] = math.nan  # the ticket misses the units the channels occupy: no vote for channels
    return row


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    source = unit_reader(result, runs, networks)
    if source is None:
        return result
    per_site: dict[str, dict[RunData, float]] = {}
    for run_ in (r for r in runs if max(r.levels) > 0):
        x, y = source.data(run_)
        sites = source.sites(run_)
        paths = ticket_paths(run_.levels[max(run_.levels)].mask, sites)
        for site in sites:
            frame = source.frame(run_, site)
            found = ablations(source.dense(run_), x, y, frame, ticket_order(frame, paths[site.name]))
            result.details.append({"run": run_.name, "site": site.name, **found})
            per_site.setdefault(site.name, {})[run_] = found["score"]
    return read_sites(result, per_site, midpoint, "needs a pruned level and unit sites (features in, layers with a unit layout)",
                      why_no_power)


def why_no_power(rows: list[dict]) -> str:
    """No seed gave a value: the ticket missed the channels' own units (special against rotated
    copies) in some seeds, the rotated copies' best units already carried the channels in others,
    and in the rest the channels cost less than EQUIVALENCE_MARGIN beyond as many random units."""
    missed = [r["own_units_special"] for r in rows if r["own_units_special"] > MIDPOINT]
    crowded = [r["own_units_null"] for r in rows if 1.0 - r["own_units_null"] < NULL_ROOM]
    room = [r["drop_channels"] - r["drop_random_units"] for r in rows]
    units = f"m = {min(r['m'] for r in rows)}-{max(r['m'] for r in rows)} of {rows[0]['units']} units"
    if missed:
        return (f"the ticket misses the units the channels occupy in {len(missed)} of {len(rows)} seeds (those units "
                f"beat rotated copies by {min(missed):.2f}-{max(missed):.2f} on a 0-1 scale; {units}), no vote for channels")
    if crowded:
        return (f"in {len(crowded)} of {len(rows)} seeds the best {units} of rotated copies already carry "
                f"{min(crowded):.2f}-{max(crowded):.2f} of the channels: no unit can be shown special")
    return (f"ablating the top channels costs less than {100 * EQUIVALENCE_MARGIN:.0f} points beyond as many random "
            f"units in every seed ({100 * min(room):+.0f} to {100 * max(room):+.0f} points; {units})")


TEST = TicketTest(
    "T3", "the ticket's units: ablation against random units and the channels",
    "t = (drop(ablate the m units the ticket keeps most) - drop(m random units)) / (drop(the k top channels) - "
    "drop(m random units)), m = units the channels occupy, dense net, held-out data; score = (t - t_null) / (1 - t_null) "
    "above the null, (t - t_null) / t_null below it",
    "the same ratio for the best m units of rotated copies of the site (no unit special), subtracted and scaled",
    MIDPOINT_RULE, votes=True, run=run, figure=figures.score,
    columns=("run", "site", "k", "m", "units", "accuracy", "drop_ticket_units", "drop_random_units", "drop_channels",
             "ticket_units", "own_units", "own_units_null", "own_units_special", "score"))
