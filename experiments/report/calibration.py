"""The calibration report (`ltc calibrate`): the verdict's and every test's confusion matrix on
the planted worlds, and each world's readings; and its W&B summary run."""
from __future__ import annotations

import os
from pathlib import Path

from experiments.report.document import Document, Section, Table
from experiments.report.verdict import READING_STYLE, calibration_paragraph, confusion_table
from experiments.settings import WandbConfig


def world_rows(result: dict) -> list[list[str]]:
    return [[e["world"], e["truth"], e["verdict"] + (" (provisional)" if e["provisional"] else ""), e["why"],
             *[e["tests"][k]["reading"] for k in e["tests"]]] for e in result["worlds"]]


def calibration_document(result: dict) -> Document:
    tests = list(result["worlds"][0]["tests"]) if result["worlds"] else []
    headers = ["world", "truth", "verdict", "why", *tests]
    summary = Section("Calibration", [calibration_paragraph(result)],
                      tables=[confusion_table(result["confusion"]["verdict"], "verdict: truth x reading", console=True),
                              Table("each world", headers, world_rows(result), ["world", "truth", "verdict", "why"],
                                    READING_STYLE)], console=True)
    per_test = Section("Each test: truth x reading",
                       tables=[confusion_table(m, key) for key, m in result["confusion"].items() if key != "verdict"])
    sites = Section("Readings per site", bullets=[
        f"{e['world']}: " + ", ".join(f"{site} {reading}" for site, reading in e["sites"].items())
        for e in result["worlds"]])
    return Document("Calibration of the verdict on planted worlds", [summary, per_test, sites])


def log_calibration_run(result: dict, save_dir: Path, mode: str, project: str = WandbConfig.project) -> None:
    """One W&B run (job_type=calibration) with the confusion matrices and the world table."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, group="calibration", job_type="calibration", mode=mode,
                     name=f"calibration/{result['date']}", dir=str(save_dir), config={"seeds": result["seeds"]})
    try:
        payload = {}
        for key, matrix in result["confusion"].items():
            table = confusion_table(matrix, key)
            payload[f"calibration/{key}"] = wandb.Table(columns=table.headers, data=table.rows)
        tests = list(result["worlds"][0]["tests"]) if result["worlds"] else []
        payload["calibration/worlds"] = wandb.Table(columns=["world", "truth", "verdict", "why", *tests],
                                                    data=world_rows(result))
        run.log(payload)
        run.summary["error_rate"] = result["error_rate"]
        run.summary["diagonal"] = result["diagonal"]
    finally:
        run.finish()
