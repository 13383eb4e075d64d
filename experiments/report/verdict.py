"""The ticket report as a `Document`: the verdict, the tests' table, the runs, stability, the
figures and each test's details."""
from __future__ import annotations

import numpy as np

from channels.tickets import CHANNELS, SUBCIRCUITS
from experiments.report.document import Document, Figure, Section, Table

READING_STYLE = {CHANNELS: "bold green", SUBCIRCUITS: "bold magenta", "inconclusive": "yellow", "not run": "dim"}
VERDICT_HEADERS = ["test", "title", "statistic", "effect [95% CI]", "seeds", "null", "reading", "rule"]
CONSOLE_HEADERS = ["test", "title", "effect [95% CI]", "seeds", "reading"]
STABILITY_HEADERS = ["run", "level", "density", "start", "barrier", "rise_above_chord", "error_a", "error_b", "stable"]


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value + 0.0:.{digits}f}".replace("-0.000", "0.000") if digits == 3 else f"{value + 0.0:.{digits}f}"
    return str(value)


def effect_text(test: dict) -> str:
    lo, hi = test["ci"]
    text = fmt(test["effect"])
    return text if lo is None else f"{text} [{fmt(lo)}, {fmt(hi)}]"


def verdict_rows(result: dict) -> list[list[str]]:
    """Test, what it measures, effect [95% CI], seeds, null, reading, rule: one row per test."""
    rows = []
    for name, test in result["tests"].items():
        reading = test["reading"] + (" (provisional)" if test["provisional"] else "")
        rows.append([name, test["title"], test["statistic"], effect_text(test), str(len(test["units"])),
                     test["null"], reading, test["rule"]])
    return rows


def stability_table(result: dict) -> list[list[str]]:
    """The instability branch per run and level: barrier and the two copies' test errors."""
    return [[("yes" if r[c] else "no") if c == "stable" else fmt(r[c]) for c in STABILITY_HEADERS]
            for r in result["stability"]["rows"]]


def _rows(records: list[dict], cols: list[str]) -> list[list[str]]:
    return [[fmt(r[c]) for c in cols] for r in records]


def detail_tables(test: dict) -> list[Table]:
    """Each test's per-level / per-pair numbers."""
    d = test["details"]
    if test["test"] == "T1" and d.get("signature"):
        cols = ["level", "density", "line", "spectrum", "effective_rank", "participation_ratio", "top1_share", "shape"]
        return [Table("spectral signature (mean over runs)", cols, _rows(d["signature"], cols))]
    if test["test"] == "T2" and d.get("overlap_with_dense"):
        cols = ["level", "line", "spectrum", "overlap_excess", "n"]
        return [Table("top-k overlap with the dense network, chance-corrected", cols,
                      _rows(d["overlap_with_dense"], cols))]
    if test["test"] == "T3" and d.get("pairs"):
        cols = ["a", "b", "kind", "level", "density", "identity", "similarity", "effect"]
        rows = []
        for p in d["pairs"]:
            ious = "; ".join(f"{n} {fmt(v['iou'], 2)} ({fmt(v['chance'], 2)})" for n, v in p["mask_iou"].items())
            rows.append([fmt(p[c]) for c in cols] + [ious])
        steps = ["kind", "level", "density", "identity", "similarity", "n"]
        return [Table("pairs of tickets", [*cols, "mask IoU per layer (chance)"], rows),
                Table("identity and similarity per level, mean over pairs of a kind", steps,
                      _rows(d["trajectory"], steps))]
    if test["test"] == "T4" and d.get("per_level"):
        cols = ["level", "density", "spectrum", "share", "null_mean", "score", "p_value", "n"]
        return [Table("localisation per level (mean over runs)", cols, _rows(d["per_level"], cols))]
    if test["test"] in ("T5", "T6") and d.get("gaps"):
        cols = [c for c in ("level", "control", "gap", "min", "max", "n") if c in d["gaps"][0]]
        return [Table("accuracy gaps, ticket minus control", cols, _rows(d["gaps"], cols))]
    return []


def _scalars(test: dict) -> str:
    """The single numbers a reading's rule uses besides the effect (gates, means), as text."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in test["details"].items() if isinstance(v, (int, float)) or v is None)


def verdict_line(result: dict) -> str:
    return (f"Verdict: {result['verdict']} (score {result['score']:+.2f}"
            f"{', provisional' if result['provisional'] else ''})")


def verdict_document(result: dict, figures: list[Figure]) -> Document:
    """The whole report of `ltc report` from its verdict dict."""
    line = verdict_line(result)
    summary = Section("Verdict", [line, f"How: {result['rule']}."],
                      tables=[Table("", VERDICT_HEADERS, verdict_rows(result), CONSOLE_HEADERS, READING_STYLE)],
                      console=True)
    runs = Section("Runs", bullets=[f"`{r['dir']}`: seed {r['seed']}, data order {r['data_order_seed']}, levels "
                                    f"{r['levels']}, controls {', '.join(r['branches']) or 'none'}" for r in result["runs"]])
    stability = Section("Stability (linear mode connectivity)", [f"stability: {result['stability']['summary']}."],
                        console=True)
    if result["stability"]["rows"]:
        stability.tables.append(Table("", STABILITY_HEADERS, stability_table(result), console_columns=[]))
    sections = [summary, runs, stability, Section("Figures", figures=figures)]
    for test in result["tests"].values():
        bullets = [f"statistic: {test['statistic']}", f"null: {test['null']}", f"rule: {test['rule']}",
                   f"effect: {effect_text(test)} over {len(test['units'])} seed(s): "
                   + ", ".join(f"{k} {fmt(v)}" for k, v in test["units"].items())]
        if test["note"]:
            bullets.append(f"note: {test['note']}")
        bullets += list(test["details"].get("shapes", []))
        if _scalars(test):
            bullets.append(f"values: {_scalars(test)}")
        sections.append(Section(f"{test['test']} {test['title']}: {test['reading']}", bullets=bullets,
                                tables=detail_tables(test)))
    return Document(f"Lottery tickets: channels or subcircuits? ({result['experiment']})", sections,
                    css_class={line: f"verdict {result['verdict'].replace(' ', '_')}"})
