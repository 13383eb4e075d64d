"""The ticket report as a `Document`: the verdict and why, the tests' readings per site, the
calibration on planted worlds beside it, the runs, stability, the figures and each test's details."""
from __future__ import annotations

import numpy as np

from channels.verdict.base import CHANNELS, MIXED, NO_TICKET, SUBCIRCUITS, TICKET
from channels.verdict.battery import PRECONDITIONS, TESTS
from channels.verdict.learned import LEARNED, NOTHING_LEARNED
from experiments.report.card import verdict_card
from experiments.report.document import Document, Figure, Section, Table
from experiments.report.fourier import fourier_section
from experiments.report.reproduction import reproduction_section

READING_STYLE = {CHANNELS: "bold green", SUBCIRCUITS: "bold magenta", MIXED: "bold cyan", NO_TICKET: "bold yellow",
                 NOTHING_LEARNED: "bold yellow", TICKET: "green", LEARNED: "green", "inconclusive": "yellow",
                 "not run": "dim", "conflict": "red", "no power": "dim"}
PRECONDITION_KEYS = {t.key for t in PRECONDITIONS}
TEST_HEADERS = ["test", "title", "site", "effect [95% CI]", "seeds", "reading", "votes"]
CONSOLE_HEADERS = ["test", "site", "effect [95% CI]", "seeds", "reading"]
STABILITY_HEADERS = ["run", "level", "density", "start", "barrier", "rise_above_chord", "error_a", "error_b", "stable"]
COLUMNS = {t.key: list(t.columns) for t in TESTS}


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value + 0.0:.{digits}f}".replace("-0.000", "0.000")
    return str(value)


def effect_text(site: dict) -> str:
    lo, hi = site["ci"]
    text = fmt(site["effect"])
    return text if lo is None else f"{text} [{fmt(lo)}, {fmt(hi)}]"


def test_rows(result: dict) -> list[list[str]]:
    """One row per test and site: effect [95% CI], seeds, reading (provisional marked), votes."""
    rows = []
    for key, test in result["tests"].items():
        if not test["sites"]:
            rows.append([key, test["title"], "-", "-", "0", test["reading"], "no"])
        for site, found in test["sites"].items():
            reading = found["reading"] + (" (provisional)" if found["provisional"] else "")
            votes = "yes" if test["votes"] and not found["provisional"] and key not in PRECONDITION_KEYS else "-"
            rows.append([key, test["title"], site, effect_text(found), str(len(found["units"])), reading, votes])
    return rows


def stability_table(result: dict) -> list[list[str]]:
    """The instability branch per run and level: barrier and the two copies' test errors."""
    return [[fmt(r[c]) for c in STABILITY_HEADERS] for r in result["stability"]["rows"]]


def verdict_line(result: dict) -> str:
    return f"Verdict: {result['verdict']} ({result['why']}{'; provisional' if result['provisional'] else ''})"


def calibration_paragraph(calibration: dict | None) -> str:
    if not calibration:
        return "No calibration found: run `ltc calibrate` to see how the battery reads planted worlds."
    if "verdict_errors" not in calibration:
        return "The calibration found predates the population of planted worlds: re-run `ltc calibrate`."
    found = calibration["verdict_errors"]
    lo, hi = found["interval"]
    return (f"On a population of planted worlds of known truth (`ltc calibrate`, {calibration.get('date', 'undated')}, "
            f"{found['total']} scored instances, {calibration.get('seeds', '?')} seeds each, population seed "
            f"{calibration.get('population_seed', '?')}) the battery read {found['total'] - found['wrong']} of "
            f"{found['total']} right: verdict error rate {found['rate']:.0%} [95% {lo:.0%}, {hi:.0%}]"
            + (f" (wrong: {', '.join(calibration['errors'])})" if calibration["errors"] else "") + ".")


def confusion_table(matrix: dict[str, dict[str, int]], caption: str, console: bool = False) -> Table:
    """truth x reading counts as a table (rows: truths)."""
    columns = list(next(iter(matrix.values())))
    rows = [[truth, *[str(counts[c]) for c in columns]] for truth, counts in matrix.items()]
    return Table(caption, ["truth \\ reading", *columns], rows, console_columns=None if console else [])


def _site_table(result: dict) -> Table:
    rows = [[site, s["reading"], s["provisional_reading"], ", ".join(f"{k}: {v}" for k, v in s["tests"].items())]
            for site, s in result["sites"].items()]
    return Table("readings per site (a site reads when two tests agree and none contradicts)",
                 ["site", "reading", "with provisional readings", "from"], rows, styles=READING_STYLE)


def test_section(test: dict, figures: list[Figure] = ()) -> Section:
    """One test's detail (statistic, null, rule, each site's reading, its table and figure), folded."""
    bullets = [f"statistic: {test['statistic']}", f"null: {test['null']}", f"rule: {test['rule']}"]
    for site, found in test["sites"].items():
        units = ", ".join(f"{k} {fmt(v)}" for k, v in found["units"].items())
        bullets.append(f"{site}: {effect_text(found)} over {len(found['units'])} seed(s) ({units}) -> "
                       f"{found['reading']}" + (f"; {found['note']}" if found["note"] else ""))
    if test["note"]:
        bullets.append(f"note: {test['note']}")
    columns = COLUMNS.get(test["test"]) or (sorted(test["details"][0]) if test["details"] else [])
    tables = [Table("details", columns, [[fmt(row.get(c)) for c in columns] for row in test["details"]])] \
        if test["details"] else []
    return Section(f"{test['test']} {test['title']}: {test['reading']}", bullets=bullets, tables=tables,
                   figures=list(figures), folded=True)


def verdict_document(result: dict, figures: list[Figure]) -> Document:
    """The whole report of `ltc report` from its verdict dict: the verdict card, the runs' figures,
    the readings, calibration and stability; then runs and each test's detail (with its figure), folded."""
    line = verdict_line(result)
    summary = Section("Readings", [line, f"How: {result['rule']}"],
                      tables=[Table("", TEST_HEADERS, test_rows(result), CONSOLE_HEADERS, READING_STYLE)], console=True)
    if result.get("sites"):
        summary.tables.append(_site_table(result))
    calibration = result.get("calibration")
    cal = Section("Calibration on planted worlds", [calibration_paragraph(calibration)], console=True)
    if calibration:
        cal.tables.append(confusion_table(calibration["confusion"]["verdict"], "verdict: truth x reading"))
    runs = Section("Runs", bullets=[f"`{r['dir']}`: seed {r['seed']}, data order {r['data_order_seed']}, levels "
                                    f"{r['levels']}, branches {', '.join(r['branches']) or 'none'}"
                                    for r in result["runs"]])
    stability = Section("Stability (linear mode connectivity)", [f"stability: {result['stability']['summary']}."],
                        console=True)
    if result["stability"]["rows"]:
        stability.tables.append(Table("", STABILITY_HEADERS, stability_table(result), console_columns=[]))
    runs.folded = True
    found = result.get("reproduction")  # a published reference beside ours, shown after the readings
    fourier = result.get("fourier")  # the known answer of modular addition, likewise
    own = {part["figure"] for part in (found, fourier) if part}
    main = [f for f in figures if f.name not in result["tests"] and f.name not in own]
    sections = [Section("Figures", figures=main), summary, cal, stability, runs]
    if fourier:
        sections.insert(2, fourier_section(fourier, figures))
    if found:
        sections.insert(2, reproduction_section(found, figures))
    sections += [test_section(test, [f for f in figures if f.name == key]) for key, test in result["tests"].items()]
    return Document(f"Lottery tickets: channels or subcircuits? ({result['experiment']})", sections,
                    css_class={line: f"verdict {result['verdict'].replace(' ', '_')}"}, card=verdict_card(result))
