"""T2, localisation: over how many units do the dense network's channels spread, against the same
channels written on units of which none is special?

At each unit site (the input coordinates, each hidden layer), in canonical coordinates
(`coordinates`), the channels are the top eigen-directions d_i of C G with weights w_i (each one's
share of the output variance the top channels carry), and

    k_eff   = 1 / sum_i w_i^2                     (how many channels)
    l_u     = sum_i w_i s_iu                      (unit u's share of the channels: `unit_loading`,
              s_iu = |d_iu . (G d_i)_u|, normalised over units: activity along channel i times the
              output's sensitivity to it, exactly u's part of lambda_i for independent units)
    n_units = 1 / sum_u l_u^2                     (how many units carry them)

Null: the same numbers on rotated copies of the site (`Frame.rotated`: the same function and
channel spectrum on rotated units), n_null the geometric mean over `NULL_DRAWS` draws. Per seed

    rho = log(n_null / n_units) / log(n_null / k_eff),

0 when the channels spread over the units as they would over rotated units, 1 when k_eff channels
sit on k_eff units. Rule (`midpoint`): subcircuits when the 95% interval lies above 1/2, channels
below. A seed whose site leaves too little room (n_null < 1.5 k_eff: e.g. 4 heads for 5 channels) gives
no value; a site with none reads `no power`, saying so. At the input, a subcircuit
reading is feature selection: the function reads about n_units of the input coordinates.

Invariances: exactly unchanged by positive per-unit rescaling of ReLU units and by LayerNorm gains
folded into the next weights (canonical coordinates do not move), and by unit permutations (the
null's draws follow a canonical unit order). Rotations change it: they are what it measures.
Measured on the dense network (a ticket's own activity sits on the units it kept by construction).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from channels.verdict import figures
from channels.verdict.base import MIDPOINT_RULE, TestResult, TicketTest, midpoint, read_sites
from channels.verdict.coordinates import Frame, channels, unit_spread
from channels.verdict.networks import unit_reader
from channels.verdict.rundata import RunData

NULL_DRAWS = 8
MIN_ROOM = 1.5


def localisation(frame: Frame, seed: int = 0) -> dict[str, float]:
    """rho and its parts at one site (rho nan when the site leaves too little room)."""
    found = channels(frame)
    k_eff, n_units = found.count, unit_spread(frame, found)
    nulls = []
    for draw in range(NULL_DRAWS):
        rotated = frame.rotated(seed * 1000 + draw)
        nulls.append(unit_spread(rotated, channels(rotated)))
    n_null = float(np.exp(np.mean(np.log(nulls))))
    room = n_null / k_eff
    rho = math.log(n_null / n_units) / math.log(room) if room >= MIN_ROOM else math.nan
    return {"units": frame.unit_count, "k_eff": k_eff, "n_units": n_units, "n_null": n_null, "rho": rho}


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    source = unit_reader(result, runs, networks)
    if source is None:
        return result
    per_site: dict[str, dict[RunData, float]] = {}
    for run_ in runs:
        for site in source.sites(run_):
            found = localisation(source.frame(run_, site))
            result.details.append({"run": run_.name, "site": site.name, **found})
            per_site.setdefault(site.name, {})[run_] = found["rho"]
    return read_sites(result, per_site, midpoint, "no unit sites (an input of features, or layers with a unit layout)",
                      why_no_power)


def why_no_power(rows: list[dict]) -> str:
    """Every seed's site had too little room: rotated units spread the channels over under MIN_ROOM x k_eff."""
    return (f"{rows[0]['units']} units leave too little room for the channels in every seed (n_null "
            f"{min(r['n_null'] for r in rows):.1f}-{max(r['n_null'] for r in rows):.1f} < {MIN_ROOM:g} x k_eff, "
            f"k_eff {min(r['k_eff'] for r in rows):.1f}-{max(r['k_eff'] for r in rows):.1f})")


TEST = TicketTest(
    "T2", "localisation of the channels on units",
    "rho = log(n_null / n_units) / log(n_null / k_eff) of the dense network's top channels (canonical "
    "coordinates), per site",
    "0: the channels spread over the units as over rotated units (same function and spectrum)",
    MIDPOINT_RULE,
    votes=True, run=run, figure=figures.score, columns=("run", "site", "units", "k_eff", "n_units", "n_null", "rho"))
