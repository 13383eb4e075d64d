"""The calibration report (`ltc calibrate`): the error rates with their intervals, the verdict's,
the sites' and every test's confusion matrices on the planted population, each instance's
readings, the dial and its figure; and its W&B summary run."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from channels.plotting import plt, save_figure
from channels.verdict.dial import SLACK
from experiments.report.document import Document, Figure, Section, Table
from experiments.report.verdict import READING_STYLE, calibration_paragraph, confusion_table, fmt
from experiments.settings import WandbConfig
from lth.layout import ReportFiles

INSTANCE_HEADERS = ["instance", "family", "optimizer", "shape", "truths", "verdict", "sites", "right"]


def _shape(e: dict) -> str:
    """An instance's shape: an MLP world's layers, classes and rank, or a sequence world's sizes."""
    if "vocab" in e:
        return f"vocab {e['vocab']}, length {e['length']}, width {e['width']}, {e['levels']} levels"
    return f"{e['d']}-{'-'.join(map(str, e['hidden']))}, {e['classes']} cl, rank {e['rank']}"


def instance_rows(result: dict) -> list[list[str]]:
    rows = []
    for e in result["instances"]:
        shape = _shape(e)
        knobs = ", ".join(f"{k} {e[k]}" for k in ("busy", "unit_scale", "variant", "alpha", "narrow") if k in e)
        truths = ", ".join(f"{s}: {t}" for s, t in e["truths"].items()) or e["verdict_truth"] or "-"
        sites = ", ".join(f"{s}: {r}" for s, r in e["sites"].items())
        right = "-" if e["right"] is None else "yes" if e["right"] else "NO"
        rows.append([e["name"], e["family"] + (f" ({knobs})" if knobs else ""), e["optimizer"], shape, truths,
                     e["verdict"] + (" (provisional)" if e["provisional"] else ""), sites, right])
    return rows


def dial_figure(result: dict, files: ReportFiles) -> list[Figure]:
    """Each voting statistic's mean at each alpha of the dial, with the verdict along the top."""
    dial = result.get("dial") or {}
    if not dial.get("statistics"):
        return []
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, found in dial["statistics"].items():
        values = np.array([np.nan if v is None else v for v in found["values"]], dtype=float)
        name = label + ("" if found["planted"] else " (unplanted)") + ("" if found["monotone"] else " (reverses)")
        if not found["planted"]:
            ax.plot(dial["alphas"], values, marker=".", linestyle=":", alpha=0.5, label=name)
            continue
        ci = np.array([(np.nan, np.nan) if c is None else c for c in found["ci"]], dtype=float)
        ax.errorbar(dial["alphas"], values, yerr=np.abs(ci.T - values), marker="o", capsize=2, label=name)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    for alpha, reading in zip(dial["alphas"], dial["verdicts"]):
        ax.annotate(reading, (alpha, 1.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7)
    ax.set_xlabel("alpha: coordinate-aligned (0) .. dense (1)")
    ax.set_ylabel("statistic (T1: accuracy gap)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    path = save_figure(fig, files.figures / "calibration_dial.png")
    return [Figure("calibration_dial", path,
                   "The dial: every voting statistic against alpha (mean and 95% interval over seeds at the planted "
                   "sites), the verdict on top; each should fall as the planted structure moves from unit-aligned "
                   "to dense.")]


def _yes_or(holds: bool, exceptions: list[str]) -> str:
    """`yes`, or `no` with the exceptions in brackets."""
    return "yes" if holds else "no" + (f" ({', '.join(exceptions)})" if exceptions else "")


def _rate_line(name: str, found: dict) -> str:
    lo, hi = found["interval"]
    return f"{name}: {found['wrong']} of {found['total']} wrong, rate {fmt(found['rate'], 2)} [95% {fmt(lo, 2)}, " \
           f"{fmt(hi, 2)}] (exact binomial)"


def calibration_document(result: dict, figures: list[Figure]) -> Document:
    dial = result.get("dial") or {}
    bullets = [_rate_line("verdict", result["verdict_errors"]), _rate_line("planted sites", result["site_errors"]),
               "opposite readings (a planted site read as the other picture): "
               + (", ".join(result["opposite"]) or "none")]
    if dial:
        planted = {k: s for k, s in dial["statistics"].items() if s["planted"]}
        reversals = [f"{k} {a0}->{a1}" for k, s in planted.items() for a0, a1 in s["reversals"]]
        bullets.append("dial: verdicts " + ", ".join(f"{a}: {v}" for a, v in zip(dial["alphas"], dial["verdicts"]))
                       + f" (monotone: {_yes_or(dial['verdict_monotone'], [])})"
                       + f"; at the planted sites every voting statistic monotone (no rise beyond {SLACK} plus the "
                       + f"seeds' 95% margin): {_yes_or(dial['monotone'], reversals)}"
                       + f"; strictly (no rise beyond {SLACK}): "
                       + _yes_or(dial["strict"], [k for k, s in planted.items() if not s["strict"]]))
    summary = Section("Calibration", [calibration_paragraph(result)], bullets=bullets,
                      tables=[confusion_table(result["confusion"]["verdict"], "verdict: truth x reading", console=True),
                              confusion_table(result["confusion"]["sites"], "planted sites: truth x reading",
                                              console=True),
                              Table("each instance", INSTANCE_HEADERS, instance_rows(result),
                                    ["instance", "truths", "verdict", "right"], READING_STYLE)],
                      figures=figures, console=True)
    per_test = Section("Each test at the planted sites: truth x reading",
                       tables=[confusion_table(m, key) for key, m in result["confusion"].items()
                               if key not in ("verdict", "sites")])
    return Document("Calibration of the verdict on a population of planted worlds", [summary, per_test])


def log_calibration_run(result: dict, save_dir: Path, mode: str, project: str = WandbConfig.project) -> None:
    """One W&B run (job_type=calibration) with the confusion matrices and the instance table."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, group="calibration", job_type="calibration", mode=mode,
                     name=f"calibration/{result['date']}", dir=str(save_dir),
                     config={"seeds": result["seeds"], "population_seed": result["population_seed"]})
    try:
        payload = {}
        for key, matrix in result["confusion"].items():
            table = confusion_table(matrix, key)
            payload[f"calibration/{key}"] = wandb.Table(columns=table.headers, data=table.rows)
        payload["calibration/instances"] = wandb.Table(columns=INSTANCE_HEADERS, data=instance_rows(result))
        run.log(payload)
        run.summary["error_rate"] = result["error_rate"]
        run.summary["error_interval_high"] = result["error_interval"][1]
        run.summary["site_error_rate"] = result["site_errors"]["rate"]
    finally:
        run.finish()
