"""What every ticket test is and gives back, and the reading rules they share.

A test (`TicketTest`) states its statistic, its null and its rule, and turns finished runs into a
`TestResult`: per *site* (the input, a hidden layer, or the whole network) one `SiteResult`
holding the per-seed values, their mean (the effect), its 95% t-interval and the site's reading.
Readings need `MIN_SEEDS` seeds; with fewer they are computed from the point estimate, marked
provisional and do not vote.

Two rule shapes cover the tests (`stats` has the intervals):
- `claim_or_equivalence`: an accuracy difference. The positive reading needs the 95% interval
  above 0 and the effect at least `ACC_MARGIN` (one point: the resolution at which the
  lottery-ticket literature calls accuracies matching); the equivalent reading needs TOST
  equivalence within +-`EQUIVALENCE_MARGIN` (two points, the margin Frankle et al. 2020 use for
  "stable"); anything else is inconclusive.
- `midpoint`: a score on a scale from 0 (the channels extreme) to 1 (the subcircuits extreme):
  subcircuits when the 95% interval lies above 1/2, channels when it lies below.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from channels.verdict.rundata import RunData
from channels.verdict.stats import t_interval, tost_equivalent

CHANNELS, SUBCIRCUITS, INCONCLUSIVE, NOT_RUN = "channels", "subcircuits", "inconclusive", "not run"
TICKET, NO_TICKET = "ticket", "no ticket"
MIXED = "mixed"  # firm and different readings at different sites
NO_POWER = "no power"  # the test could not have told the readings apart here
MIN_SEEDS = 5
ACC_MARGIN = 0.01
EQUIVALENCE_MARGIN = 0.02
MIDPOINT = 0.5
NETWORK = "network"


@dataclass
class SiteResult:
    """One site's statistic over seeds and its reading."""

    units: dict[str, float] = field(default_factory=dict)
    effect: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    reading: str = NOT_RUN
    provisional: bool = False
    note: str = ""
    once: float = 0.0  # variance of a part of the effect drawn once per world, not resampled by seeds (stats)

    @property
    def votes(self) -> bool:
        return self.reading in (CHANNELS, SUBCIRCUITS) and not self.provisional


@dataclass
class TestResult:
    """A test's outcome: its readings per site, detail rows, and the test's own description."""

    __test__ = False  # not a pytest test class

    test: str
    title: str
    statistic: str
    null: str
    rule: str
    votes: bool
    sites: dict[str, SiteResult] = field(default_factory=dict)
    details: list[dict] = field(default_factory=list)
    note: str = ""

    @property
    def reading(self) -> str:
        """The test's reading over its sites, for summaries: `mixed` when some sites read
        subcircuits and others channels, else the one of the two that some site reads, else the
        sites' common reading (the verdict reads the sites themselves, `battery.site_readings`)."""
        readings = {s.reading for s in self.sites.values()} - {NOT_RUN}
        if not readings:
            return NOT_RUN
        if {SUBCIRCUITS, CHANNELS} <= readings:
            return MIXED
        for firm in (SUBCIRCUITS, CHANNELS):
            if firm in readings:
                return firm
        return readings.pop() if len(readings) == 1 else INCONCLUSIVE

    @property
    def provisional(self) -> bool:
        return any(s.provisional for s in self.sites.values())

    def to_dict(self) -> dict:
        out = json_safe(asdict(self))
        out["reading"], out["provisional"] = self.reading, self.provisional
        return out


def json_safe(obj):
    """NaN/inf -> None and tuples -> lists, so verdict.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def per_seed(per_run: dict[RunData, float]) -> dict[str, float]:
    """Average the finite values of runs sharing an init seed: seeds are the units."""
    by_seed: dict[int, list[float]] = {}
    for run, value in per_run.items():
        if value is not None and np.isfinite(value):
            by_seed.setdefault(run.seed, []).append(float(value))
    return {f"seed {s}": float(np.mean(v)) for s, v in sorted(by_seed.items())}


def summarise(per_run: dict[RunData, float], rule: Callable[[SiteResult, list[float]], str],
              note: str = "", once: float = 0.0) -> SiteResult:
    """Per-seed values -> effect, 95% interval and the rule's reading (provisional below MIN_SEEDS);
    `once`: the variance of a part of the effect the seeds do not resample (`stats.t_interval`)."""
    result = SiteResult(units=per_seed(per_run), note=note, once=once)
    values = list(result.units.values())
    if not values:
        result.reading = INCONCLUSIVE
        result.note = note or "no run had the data this test needs"
        return result
    result.effect = float(np.mean(values))
    result.ci = t_interval(values, once=once)
    result.provisional = len(values) < MIN_SEEDS
    if result.provisional:
        result.note = (f"{note}; " if note else "") + f"{len(values)} seed(s) < {MIN_SEEDS}: provisional, no vote"
    result.reading = rule(result, values)
    return result


def read_sites(result: TestResult, per_site: dict[str, dict[RunData, float]], rule, missing: str,
               no_power: Callable[[list[dict]], str] | None = None,
               once: dict[str, float] | None = None) -> TestResult:
    """Each site's per-run values -> its `SiteResult` under `rule`; `missing` is the note when no
    site had the data the test needs. A site that was read in every run but scored in none reads
    `no power`, with `no_power(its detail rows)` saying which of the test's conditions failed.
    `once`: per site, the variance of a part of the effect the seeds do not resample."""
    if not per_site:
        result.note = result.note or missing
    for site, values in per_site.items():
        result.sites[site] = summarise(values, rule, once=(once or {}).get(site, 0.0))
        rows = [d for d in result.details if d.get("site") == site]
        if no_power is not None and rows and not result.sites[site].units:
            result.sites[site].reading, result.sites[site].note = NO_POWER, f"no power: {no_power(rows)}"
    return result


def bounds(site: SiteResult) -> tuple[float, float]:
    """The 95% interval, or the point estimate when there is none (provisional readings)."""
    lo, hi = site.ci
    return (site.effect, site.effect) if not math.isfinite(lo) else (lo, hi)


def claim_or_equivalence(positive: str, equivalent: str) -> Callable[[SiteResult, list[float]], str]:
    """The accuracy-difference rule (see the module docstring)."""
    def rule(site: SiteResult, values: list[float]) -> str:
        lo, _ = bounds(site)
        if lo > 0 and site.effect >= ACC_MARGIN:
            return positive
        provisional_equivalent = site.provisional and abs(site.effect) < EQUIVALENCE_MARGIN
        if provisional_equivalent or tost_equivalent(values, EQUIVALENCE_MARGIN, once=site.once):
            return equivalent
        return INCONCLUSIVE

    return rule


MIDPOINT_RULE = "subcircuits if the 95% interval lies above 1/2, channels if below; else inconclusive"


def midpoint(site: SiteResult, values: list[float]) -> str:
    """Subcircuits when the interval lies above 1/2 on a 0 (channels) .. 1 (subcircuits) scale,
    channels when it lies below."""
    lo, hi = bounds(site)
    if lo > MIDPOINT:
        return SUBCIRCUITS
    if hi < MIDPOINT:
        return CHANNELS
    return INCONCLUSIVE


@dataclass(frozen=True)
class TicketTest:
    """A test of the battery: what it measures, and the function that measures it.

    `run(runs, networks)` returns a `TestResult`; `networks` (a `NetworkSource`, or None when the
    runs' networks cannot be rebuilt) is needed by the tests that run the networks. `votes`: the
    test's readings enter the verdict (descriptive tests only report).
    """

    key: str
    title: str
    statistic: str
    null: str
    rule: str
    votes: bool
    run: Callable[[Sequence[RunData], object], TestResult]
    columns: tuple[str, ...] = ()
    figure: Callable[[TestResult, Path], Path | None] | None = None  # (result, path) -> the PNG written

    def result(self) -> TestResult:
        """An empty result carrying the test's description."""
        return TestResult(self.key, self.title, self.statistic, self.null, self.rule, self.votes)
