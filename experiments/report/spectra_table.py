"""The report's long tables, built from finished runs (`channels.rundata.RunData`), for W&B.

- spectra: one row per eigenvalue of every job's final spectrum (experiment, seed, branch, level,
  density, site, kind, rank, eigenvalue, and `normalised` = eigenvalue / the spectrum's sum), what
  the shipped custom chart `spectra_by_level.vl.json` overlays; the top ranks of each spectrum
  are kept so that the whole table fits W&B's row limit for logged tables (`ranks_kept` says how
  many; `normalised` divides by the full spectrum's sum all the same);
- metrics: one row per job with its test metrics and the last value of each spectrum metric.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from channels.keys import SpectrumKey, final_metrics, stored_keys
from channels.verdict.rundata import RunData, Trained, final_eigenvalues
from lth.branches import TICKET

SPEC = Path(__file__).with_name("spectra_by_level.vl.json")
SPECTRA_COLUMNS = ["experiment", "seed", "data_order_seed", "branch", "level", "density", "site", "kind", "rank",
                   "eigenvalue", "normalised"]
JOB_COLUMNS = ["experiment", "seed", "data_order_seed", "branch", "level", "density"]
# the chart's `${field:...}` names -> spectra table columns (wandb.plot_table's `fields`)
CHART_FIELDS = {"rank": "rank", "value": "normalised", "level": "level", "branch": "branch", "seed": "seed",
                "site": "site", "kind": "kind", "density": "density"}


def jobs(runs: list[RunData]) -> Iterator[tuple[RunData, Trained]]:
    """Every finished job of every run: the ticket line, then each branch, by level."""
    for run in runs:
        for branch in [None, *sorted(run.branches)]:
            for level in sorted(run.line(branch)):
                yield run, run.line(branch)[level]


def _job_cells(run: RunData, job: Trained) -> list:
    return [run.experiment, run.seed, run.data_order_seed, job.branch or TICKET, job.level, job.density]


def _where(key: SpectrumKey) -> str:
    return key.site if key.target is None else f"{key.site}->{key.target}"


def spectra_rows(runs: list[RunData], max_rows: int) -> tuple[list[list], int]:
    """The long spectra table's rows, and the ranks kept per spectrum so that it fits `max_rows`."""
    spectra = [(run, job, key, final_eigenvalues(job.spectra, str(key)))
               for run, job in jobs(runs) if job.spectra is not None for key in stored_keys(job.spectra)]
    if not spectra:
        return [], 0
    kept = min(max(len(values) for *_, values in spectra), max(1, max_rows // len(spectra)))
    rows = []
    for run, job, key, values in spectra:
        total = float(np.sum(values))
        for rank, value in enumerate(values[:kept], start=1):
            rows.append([*_job_cells(run, job), _where(key), key.kind, rank, float(value),
                         float(value) / total if total > 0 else 0.0])
    return rows, kept


def metrics_table(runs: list[RunData]) -> tuple[list[str], list[list]]:
    """(columns, rows): per job, its test metrics and the final value of every spectrum metric."""
    records = []
    for run, job in jobs(runs):
        values = {name: float(v) for name, v in job.metrics.get("test", {}).items()}
        if job.spectra is not None:
            values.update(final_metrics(job.spectra))
        records.append((_job_cells(run, job), values))
    names = sorted({name for _, values in records for name in values})
    return JOB_COLUMNS + names, [cells + [values.get(name) for name in names] for cells, values in records]
