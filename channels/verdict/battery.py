"""The battery: the ticket tests in order (one registry) and the verdict built from their readings.

The verdict reads sites, not tests. Each site (the input coordinates, each hidden layer) collects
the firm readings (>= `MIN_SEEDS` seeds) of the voting tests; it reads subcircuits (or channels)
when at least `AGREE` tests read that and none reads the other, `conflict` when both are read, and
nothing otherwise. The verdict is the sites' common reading, `mixed` when firm sites differ (say a
subcircuit at the input, feature selection, and channels in a hidden layer), after the two
preconditions: `nothing learned` (L) and `no ticket` (T0). Only a firm `no ticket` stops the
reading (the design's rule: without a ticket there is nothing to be a channel or a subcircuit).
An unclear T0 (the ticket neither credibly beats its random prunes nor matches them at the
sparsity read) does not: it says the sparsity does not separate a ticket from a random sparse
network (a subcircuit of 5 of 48 inputs survives a random 8% mask, a dense channel is carried by
any), not that the sites' readings are wrong, and every voting test brings its own null. The
verdict then carries the sites' reading with the caveat (`ticket: inconclusive`).

False readings: every voting reading claims its effect with a 95% interval (at most 2.5% false
claims of either kind under its null); a site needs two tests to err the same way with no test
against them, at most C(n, 2) * 0.025^2 (0.4% for the input's four tests, 0.2% for three) when
the tests err independently, and the verdict's error is at most the sum over its sites. One stray
reading can make a site silent; it cannot make it read the other way. Provisional readings (fewer
seeds) never vote: they give a provisional reading, shown beside an inconclusive verdict.
Every rule here is generated from `TESTS` (`verdict_rule`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from channels.units import UNKNOWN
from channels.verdict import (
    alignment,
    basis,
    causal,
    identity,
    learned,
    localisation,
    signature,
    ticket,
)
from channels.verdict.base import (
    CHANNELS,
    INCONCLUSIVE,
    MIN_SEEDS,
    MIXED,
    NETWORK,
    NO_TICKET,
    NOT_RUN,
    SUBCIRCUITS,
    TICKET,
    TestResult,
    TicketTest,
)
from channels.verdict.networks import reader
from channels.verdict.rundata import RunData
from channels.verdict.unit_sites import INPUT

PRECONDITIONS = (learned.TEST, ticket.TEST)
TESTS: tuple[TicketTest, ...] = (learned.TEST, ticket.TEST, basis.TEST, localisation.TEST, causal.TEST,
                                 alignment.TEST, identity.TEST, signature.TEST)
VERDICTS = (SUBCIRCUITS, CHANNELS, MIXED, NO_TICKET, learned.NOTHING_LEARNED, INCONCLUSIVE)
CONFLICT = "conflict"
AGREE = 2
FIRM = (SUBCIRCUITS, CHANNELS)
TICKET_UNCLEAR = ("unclear whether there is a ticket (T0: the ticket neither beats random sparse networks nor matches "
                  "them at this sparsity), so the sites describe the network the ticket was cut from")


def voters() -> list[TicketTest]:
    return [t for t in TESTS if t.votes and t not in PRECONDITIONS]


def verdict_rule() -> str:
    quiet = [t.key for t in TESTS if not t.votes]
    return (f"{learned.TEST.key} first: a dense network not credibly above chance -> `{learned.NOTHING_LEARNED}`; "
            f"then {ticket.TEST.key}: no ticket -> `{NO_TICKET}`; nothing else is read after either (an unclear "
            f"{ticket.TEST.key} stops nothing: the verdict says the ticket is unclear). Then each site "
            f"(the input coordinates, each hidden layer) collects the readings of {', '.join(t.key for t in voters())} "
            f"that have >= {MIN_SEEDS} seeds: it reads subcircuits (or channels) when >= {AGREE} tests read that and "
            "none reads the other, a conflict when both are read, nothing otherwise. Verdict: the firm sites' common "
            f"reading, `{MIXED}` when firm sites differ (e.g. feature selection at the input, channels inside), "
            f"inconclusive when no site is firm. {', '.join(quiet)} are descriptive and do not vote. Readings from "
            f"fewer than {MIN_SEEDS} seeds are provisional and never vote: they give a provisional reading beside an "
            "inconclusive verdict.")


def run_battery(runs: Sequence[RunData], networks=None,
                progress: Callable[[TicketTest, float], None] | None = None) -> list[TestResult]:
    """Every test of `TESTS` on the same runs, in order (the dense networks read once for all);
    `progress(test, seconds)` after each."""
    source = reader(networks)
    results = []
    for test in TESTS:
        started = time.perf_counter()
        results.append(test.run(runs, source))
        if progress is not None:
            progress(test, time.perf_counter() - started)
    return results


def _site_reading(readings: dict[str, str]) -> str:
    kinds = list(readings.values())
    if SUBCIRCUITS in kinds and CHANNELS in kinds:
        return CONFLICT
    for kind in FIRM:
        if kinds.count(kind) >= AGREE:
            return kind
    return INCONCLUSIVE


def site_readings(results: Sequence[TestResult]) -> dict[str, dict]:
    """Per site: every voting test's reading, the site's reading from the firm ones (`reading`)
    and the same rule on the provisional ones (`provisional_reading`, display only)."""
    keys = {t.key for t in voters()}
    found: dict[str, dict] = {}
    for result in results:
        if result.test not in keys:
            continue
        for site, site_result in result.sites.items():
            entry = found.setdefault(site, {"tests": {}, "firm": {}, "provisional": {}})
            entry["tests"][result.test] = site_result.reading + (" (provisional)" if site_result.provisional else "")
            if site_result.reading in FIRM:
                entry["provisional" if site_result.provisional else "firm"][result.test] = site_result.reading
    return {site: {"tests": e["tests"], "reading": _site_reading(e["firm"]),
                   "provisional_reading": _site_reading({**e["provisional"], **e["firm"]})}
            for site, e in found.items()}


def feature_selection(results: Sequence[TestResult]) -> str:
    """"the function reads about n of d input coordinates", from T2's input rows (mean over runs)."""
    rows = [r for res in results if res.test == localisation.TEST.key for r in res.details if r["site"] == INPUT]
    if not rows:
        return "a few input coordinates"
    return (f"feature selection: the function reads about {np.mean([r['n_units'] for r in rows]):.0f} of "
            f"{rows[0]['units']} input coordinates")


def describe(sites: dict[str, str], results: Sequence[TestResult]) -> str:
    """`subcircuits at input (feature selection: ...), act.0; channels at act.1`."""
    parts = []
    for kind in FIRM:
        where = [f"{s} ({feature_selection(results)})" if s == INPUT and kind == SUBCIRCUITS else s
                 for s, reading in sites.items() if reading == kind]
        if where:
            parts.append(f"{kind} at {', '.join(where)}")
    return "; ".join(parts)


def _from_sites(readings: dict[str, str], results: Sequence[TestResult]) -> tuple[str, str]:
    firm = {s: r for s, r in readings.items() if r in FIRM}
    conflicts = [s for s, r in readings.items() if r == CONFLICT]
    note = f"; tests conflict at {', '.join(conflicts)}" if conflicts else ""
    if not firm:
        return INCONCLUSIVE, f"no site has {AGREE} agreeing tests and none against{note}"
    kinds = set(firm.values())
    return (MIXED if len(kinds) > 1 else kinds.pop()), describe(firm, results) + note


def verdict(results: Sequence[TestResult]) -> dict:
    """The verdict from the readings (`verdict_rule()`), with the per-site readings it used."""
    by_test = {r.test: r for r in results}
    learned_site = by_test[learned.TEST.key].sites.get(NETWORK)
    ticket_site = by_test[ticket.TEST.key].sites.get(NETWORK)
    sites = site_readings(results)
    provisional_reading = None
    provisional = any(s.provisional for s in (learned_site, ticket_site) if s is not None)
    if learned_site is not None and learned_site.reading == learned.NOTHING_LEARNED:
        overall, why = learned.NOTHING_LEARNED, "the dense network is not credibly above chance"
    elif ticket_site is None or ticket_site.reading == NOT_RUN:
        overall, why = INCONCLUSIVE, "no controls to tell whether there is a ticket"
    elif ticket_site.reading == NO_TICKET:
        overall, why = NO_TICKET, "the ticket does not beat random sparse networks"
    else:
        overall, why = _from_sites({s: e["reading"] for s, e in sites.items()}, results)
        if overall == INCONCLUSIVE and any(e["provisional_reading"] in FIRM for e in sites.values()):
            provisional = True
            provisional_reading = _from_sites({s: e["provisional_reading"] for s, e in sites.items()}, results)
            why += (f"; fewer than {MIN_SEEDS} seeds, provisional reading: {provisional_reading[0]} "
                    f"({provisional_reading[1]})")
        if ticket_site.reading != TICKET:
            why += f"; {TICKET_UNCLEAR}"
    units = next((r.note for r in results if UNKNOWN in r.note), None)
    if units is not None:
        why += f"; {units}"
    return {"verdict": overall, "why": why, "ticket": ticket_site.reading if ticket_site else NOT_RUN,
            "provisional": provisional, "units": units,
            "provisional_reading": provisional_reading[0] if provisional_reading else None,
            "rule": verdict_rule(), "sites": sites, "tests": {r.test: r.to_dict() for r in results}}
