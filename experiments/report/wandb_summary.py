"""The report's W&B run: one `job_type=summary` run in the experiment's group, with the verdict
table, the stability table, the figures and the readings in its summary, and what puts every
level, branch and seed on one chart: the long spectra table and the metrics table
(`spectra_table`), and a custom chart over the long table drawn by the shipped Vega-Lite spec
`spectra_by_level.vl.json` (saved with the run's files). The run declares every mask and weights
file it read (each job's, and each line's theta_0 / theta_k) as used artifacts, the jobs' own
artifacts, so W&B's lineage graph reads report <- jobs' masks and weights <- jobs.

W&B draws a custom chart from a spec stored in the entity under the chart's name: create it once
(Custom Charts -> New, paste the spec, save it as `spectra-by-level`); the summary run's panel
and `ltc workspace` refer to `<entity>/spectra-by-level`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from channels.results import finished_jobs
from channels.verdict.rundata import RunData
from experiments.environment.wandb_jobs import reference_artifact, use_artifact
from experiments.report.document import Figure
from experiments.report.spectra_table import (
    CHART_FIELDS,
    SPEC,
    SPECTRA_COLUMNS,
    metrics_table,
    spectra_rows,
)
from experiments.report.verdict import STABILITY_HEADERS, TEST_HEADERS, stability_table, test_rows
from experiments.settings import WandbConfig
from lth.layout import JobFiles, RunLayout

CHART = "spectra-by-level"
SPECTRA_KEY, METRICS_KEY, CHART_KEY = "spectra/long", "metrics/table", "spectra/by_level"


def chart_id(entity: str | None) -> str:
    """The custom chart's id in W&B: `<entity>/spectra-by-level` (the bare name without an entity)."""
    return f"{entity}/{CHART}" if entity else CHART


def read_files(run: RunData) -> list[tuple[str | None, str, Path]]:
    """The artifacts' files a report reads from one run, as (branch, what, file): each line's
    theta_0 and theta_k (the ticket line's and the secondary lines', laid out like runs), then every
    finished job's mask and trained weights."""
    files = []
    for line in [None, *sorted(run.branches)]:
        layout = RunLayout(run.dir) if line is None else RunLayout(run.dir).line(line)
        files += [(line, what, path) for what, path in (("theta_0", layout.init), ("theta_k", layout.rewind))
                  if path.is_file()]
    for _, job in finished_jobs([run]):
        files += [(job.branch, "mask", JobFiles(job.dir).mask), (job.branch, "weights", JobFiles(job.dir).weights)]
    return files


def declare_inputs(wandb_run, runs: list[RunData], experiment_ids: list[str]) -> int:
    """Every mask and weights file the report read, as used artifacts of the summary run (named as
    the jobs logged them, `wandb_jobs.artifact_name`); returns how many."""
    used = [(experiment_id, *found) for run, experiment_id in zip(runs, experiment_ids, strict=True)
            for found in read_files(run)]
    for experiment_id, branch, what, path in used:
        use_artifact(wandb_run, reference_artifact(experiment_id, branch, what, path))
    return len(used)


def log_summary_run(result: dict, figures: list[Figure], save_dir: Path, mode: str, runs: list[RunData],
                    experiment_ids: list[str]) -> None:
    """One W&B run (job_type=summary, group = the experiment id, in the runs' project and entity)
    with the verdict table, figures, the long spectra and metrics tables and the spectra-by-level
    chart; the masks and weights it read as used artifacts (each run's, under `experiment_ids`)."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    recorded = runs[0].config.get("wandb") or {}
    project, entity = recorded.get("project") or WandbConfig().project, recorded.get("entity")
    run = wandb.init(project=project, entity=entity, group=result["experiment"], job_type="summary", mode=mode,
                     name=f"{result['experiment']}/summary", dir=str(save_dir),
                     config={"runs": [r["dir"] for r in result["runs"]], "rule": result["rule"],
                             "experiment": runs[0].experiment, "experiment_id": result["experiment"],
                             "seeds": sorted({r.seed for r in runs})})
    if result.get("calibration"):
        run.summary["calibration/error_rate"] = result["calibration"]["error_rate"]
    try:
        rows, kept = spectra_rows(runs, wandb.Table.MAX_ROWS)
        spectra = wandb.Table(columns=SPECTRA_COLUMNS, data=rows)
        columns, metric_rows = metrics_table(runs)
        payload = {"verdict/table": wandb.Table(columns=TEST_HEADERS, data=test_rows(result)),
                   SPECTRA_KEY: spectra, METRICS_KEY: wandb.Table(columns=columns, data=metric_rows),
                   CHART_KEY: wandb.plot_table(chart_id(entity), spectra, CHART_FIELDS,
                                               {"title": f"{result['experiment']}: final spectra by level"})}
        if result["stability"]["rows"]:
            payload["stability/table"] = wandb.Table(columns=STABILITY_HEADERS, data=stability_table(result))
        payload.update({f"figures/{f.name}": wandb.Image(str(f.path), caption=f.caption) for f in figures})
        run.log(payload)
        spec = Path(run.dir) / SPEC.name  # a copy, not wandb's symlink into this checkout
        shutil.copyfile(SPEC, spec)
        run.save(str(spec), base_path=run.dir, policy="now")
        run.summary["artifacts/used"] = declare_inputs(run, runs, experiment_ids)
        run.summary.update({"verdict": result["verdict"], "verdict_why": result["why"], "spectra/ranks_kept": kept,
                            "spectra/chart": chart_id(entity), "spectra/chart_spec": SPEC.name})
        for name, test in result["tests"].items():
            run.summary[f"{name}/reading"] = test["reading"]
            for site, found in test["sites"].items():
                if found["effect"] is not None:
                    run.summary[f"{name}/{site}/effect"] = found["effect"]
                if found["ci"][0] is not None:
                    run.summary[f"{name}/{site}/ci_low"], run.summary[f"{name}/{site}/ci_high"] = found["ci"]
    finally:
        run.finish()
