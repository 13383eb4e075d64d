"""The verdict card that opens a report: the verdict, why, the reading of each site, how many
seeds it rests on, and the calibration's error rate on planted worlds (with its interval when
`ltc calibrate` gives one). Built from the verdict dict's fields by name, so new fields of a site
or a new outcome (`mixed`) render without a change here."""
from __future__ import annotations

from channels.verdict.base import MIN_SEEDS
from experiments.report.document import Card


def _site_text(reading) -> str:
    """A site's reading: a plain string, or a dict with `reading` (and `provisional`, `tests`)."""
    if not isinstance(reading, dict):
        return str(reading)
    tests = reading.get("tests")
    notes = [", ".join(f"{k}: {v}" for k, v in tests.items())] if isinstance(tests, dict) and tests else []
    provisional = reading.get("provisional_reading")
    notes += [f"with provisional readings: {provisional}"] if provisional not in (None, reading.get("reading")) else []
    return str(reading.get("reading", "?")) + (f" ({'; '.join(notes)})" if notes else "")


def calibration_text(calibration: dict | None) -> str:
    """`4% [0%, 21%] on 24 planted world instances (ltc calibrate, 2026-12-01, 5 seeds each)`, or what to run."""
    if not calibration:
        return "not measured: run `ltc calibrate`"
    rate = f"{calibration['error_rate']:.0%}"
    interval = calibration.get("error_interval")
    if interval and len(interval) == 2 and None not in interval:
        rate += f" [{interval[0]:.0%}, {interval[1]:.0%}]"
    scored = (calibration.get("verdict_errors") or {}).get("total")
    where = f" on {scored} planted world instances" if scored else " on planted worlds"
    return (f"{rate}{where} (ltc calibrate, {calibration.get('date', 'undated')}, "
            f"{calibration.get('seeds', '?')} seeds each)")


def verdict_card(result: dict) -> Card:
    """The card of `ltc report`'s verdict dict (`verdict`, `why`, `sites`, `provisional`, `runs`,
    `calibration`)."""
    verdict = str(result.get("verdict", "?"))
    facts = [(f"site {site}", _site_text(reading)) for site, reading in (result.get("sites") or {}).items()]
    runs = result.get("runs") or []
    seeds = sorted({r["seed"] for r in runs if "seed" in r})
    if runs:
        facts.append(("runs", f"{len(runs)} ({len(seeds)} init seed{'s' if len(seeds) != 1 else ''}: "
                              f"{', '.join(map(str, seeds))})"
                              + (f"; provisional: tests vote from {MIN_SEEDS} seeds" if result.get("provisional") else "")))
    facts.append(("calibration error rate", calibration_text(result.get("calibration"))))
    return Card("Verdict", verdict, str(result.get("why", "")), facts, verdict.replace(" ", "_"))
