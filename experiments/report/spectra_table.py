"""The report's long tables for W&B: the notebook tables of `channels.results`, as wandb.Table rows.

- spectra: one row per eigenvalue of every job's final spectrum (experiment, seed, branch, level,
  density, site, kind, rank, eigenvalue, and `normalised` = eigenvalue / the spectrum's sum), what
  the shipped custom chart `spectra_by_level.vl.json` overlays; the top ranks of each spectrum
  are kept so that the whole table fits W&B's row limit for logged tables (`ranks_kept` says how
  many; `normalised` divides by the full spectrum's sum all the same);
- metrics: one row per job with its test metrics and the last value of each spectrum metric.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from channels.results import metrics_frame, spectra_frame
from channels.verdict.rundata import RunData

SPEC = Path(__file__).with_name("spectra_by_level.vl.json")
SPECTRA_COLUMNS = ["experiment", "seed", "data_order_seed", "branch", "level", "density", "site", "kind", "rank",
                   "eigenvalue", "normalised"]
# the chart's `${field:...}` names -> spectra table columns (wandb.plot_table's `fields`)
CHART_FIELDS = {"rank": "rank", "value": "normalised", "level": "level", "branch": "branch", "seed": "seed",
                "site": "site", "kind": "kind", "density": "density"}


def _plain_rows(frame: pd.DataFrame) -> list[list]:
    """Rows of Python values (what wandb.Table takes), None where a value is missing."""
    return frame.astype(object).where(frame.notna(), None).to_numpy().tolist()


def spectra_rows(runs: list[RunData], max_rows: int) -> tuple[list[list], int]:
    """The long spectra table's rows, and the ranks kept per spectrum so that it fits `max_rows`."""
    frame = spectra_frame(runs)
    if frame.empty:
        return [], 0
    count = len(frame[["run", "branch", "level", "spectrum"]].drop_duplicates())
    kept = min(int(frame["rank"].max()), max(1, max_rows // count))
    return _plain_rows(frame[frame["rank"] <= kept][SPECTRA_COLUMNS]), kept


def metrics_table(runs: list[RunData]) -> tuple[list[str], list[list]]:
    """(columns, rows): per job, its test metrics and the final value of every spectrum metric."""
    frame = metrics_frame(runs)
    return list(frame.columns), _plain_rows(frame)
