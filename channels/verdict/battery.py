"""The battery: the ticket tests in order (one registry) and the verdict built from their readings.

Every rule the verdict uses is generated from `TESTS`: which tests vote, in which order, and the
sentence that states the rule (`verdict_rule`).
"""
from __future__ import annotations

from collections.abc import Sequence

from channels.verdict import alignment, basis, causal, identity, localisation, signature, ticket
from channels.verdict.base import (
    CHANNELS,
    INCONCLUSIVE,
    MIN_SEEDS,
    NETWORK,
    NO_TICKET,
    NOT_RUN,
    SUBCIRCUITS,
    TICKET,
    TestResult,
    TicketTest,
)
from channels.verdict.rundata import RunData

PRECONDITION = ticket.TEST
TESTS: tuple[TicketTest, ...] = (ticket.TEST, basis.TEST, localisation.TEST, causal.TEST, alignment.TEST,
                                 identity.TEST, signature.TEST)
VERDICTS = (SUBCIRCUITS, CHANNELS, NO_TICKET, INCONCLUSIVE)
CONFLICT = "conflict"


def verdict_rule() -> str:
    voters = [t.key for t in TESTS if t.votes and t is not PRECONDITION]
    quiet = [t.key for t in TESTS if not t.votes]
    return (f"{PRECONDITION.key} first: no ticket -> `{NO_TICKET}`, nothing else read. Then each site (the input, "
            f"each hidden layer) collects the readings of {', '.join(voters)} that have >= {MIN_SEEDS} seeds; "
            "a site is subcircuits (or channels) when its readings include that one and not the other, a conflict "
            "when they include both. Verdict: subcircuits if some site is subcircuits (a few units or coordinates "
            "carry the function somewhere), channels if every site with readings is channels (no sparse set "
            "picks the directions out anywhere), inconclusive on any conflict or without readings. "
            f"{', '.join(quiet)} are descriptive and do not vote. Fewer than {MIN_SEEDS} seeds: the same rule "
            "on the point estimates, marked provisional.")


def run_battery(runs: Sequence[RunData], networks=None) -> list[TestResult]:
    """Every test of `TESTS` on the same runs, in order."""
    return [test.run(runs, networks) for test in TESTS]


def site_readings(results: Sequence[TestResult]) -> dict[str, dict]:
    """Per site: the voting tests' readings (test -> reading) and the site's reading: subcircuits,
    channels, or conflict. Readings from >= `MIN_SEEDS` seeds vote; a site with none of those
    reads its provisional ones and is marked provisional."""
    found: dict[str, list[tuple[str, str, bool]]] = {}  # site -> (test, reading, votes)
    for result in results:
        if not result.votes or result.test == PRECONDITION.key:
            continue
        for site, site_result in result.sites.items():
            if site_result.reading in (CHANNELS, SUBCIRCUITS):
                found.setdefault(site, []).append((result.test, site_result.reading, site_result.votes))
    sites = {}
    for site, readings in found.items():
        firm = [r for r in readings if r[2]]
        used = firm or readings
        kinds = {reading for _, reading, _ in used}
        sites[site] = {"tests": {test: reading for test, reading, _ in used}, "provisional": not firm,
                       "reading": CONFLICT if len(kinds) > 1 else kinds.pop()}
    return sites


def verdict(results: Sequence[TestResult]) -> dict:
    """The verdict from the readings (`verdict_rule()`), with the per-site readings it used."""
    by_test = {r.test: r for r in results}
    precondition = by_test[PRECONDITION.key].sites.get(NETWORK)
    sites = site_readings(results)
    provisional = precondition is not None and precondition.provisional
    if precondition is None or precondition.reading == NOT_RUN:
        overall, why = INCONCLUSIVE, "no controls to tell whether there is a ticket"
    elif precondition.reading == NO_TICKET:
        overall, why = NO_TICKET, "the ticket does not beat random sparse networks"
    elif precondition.reading != TICKET:
        overall, why = INCONCLUSIVE, "unclear whether there is a ticket"
    else:
        provisional |= any(s["provisional"] for s in sites.values())
        readings = {s["reading"] for s in sites.values()}
        if CONFLICT in readings:
            overall, why = INCONCLUSIVE, "tests disagree at " + ", ".join(k for k, s in sites.items()
                                                                         if s["reading"] == CONFLICT)
        elif SUBCIRCUITS in readings:
            overall, why = SUBCIRCUITS, "localised at " + ", ".join(k for k, s in sites.items()
                                                                    if s["reading"] == SUBCIRCUITS)
        elif CHANNELS in readings:
            overall, why = CHANNELS, "distributed at " + ", ".join(sites)
        else:
            overall, why = INCONCLUSIVE, "no test read channels or subcircuits"
    return {"verdict": overall, "why": why, "provisional": provisional, "rule": verdict_rule(),
            "sites": sites, "tests": {r.test: r.to_dict() for r in results}}
