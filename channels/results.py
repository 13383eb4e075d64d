"""Finished runs in a notebook: metrics and spectra as pandas tables, masks, eigenvectors, the
verdict and the calibration, read from the files without rebuilding a model.

    from channels import open_runs

    runs = open_runs("runs/mnist1d_imp")    # a run directory, or a folder of runs (`ltc seeds`)
    runs.metrics                            # one row per job: test and final spectra metrics
    runs.spectra()                          # one row per eigenvalue of every final spectrum
    runs.mask(level=5, seed=0)              # parameter name -> bool tensor
    runs.eigenvectors("act.0/cov", level=5) # the top-k eigenvectors, as columns
    runs.verdict, runs.calibration          # `ltc report`'s verdict.json, `ltc calibrate`'s result

Every job is read through `channels.verdict.rundata` (each file checked against its job's DONE
manifest, loaded when first asked for) and every path comes from `lth.layout`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channels.keys import EIGENVALUES, STEPS, SpectrumKey, final_metrics, stored_keys
from channels.verdict.rundata import RunData, Trained, load_run, top_vectors
from lth.branches import TICKET
from lth.errors import LTCError
from lth.layout import RunLayout
from lth.masks import Mask

JOB_COLUMNS = ["experiment", "run", "seed", "data_order_seed", "branch", "level", "density"]
SPECTRUM_COLUMNS = ["spectrum", "site", "kind", "step", "rank", "eigenvalue", "normalised"]


def finished_jobs(runs: list[RunData]) -> Iterator[tuple[RunData, Trained]]:
    """Every finished job of every run: the ticket line, then each branch, by level."""
    for run in runs:
        for branch in [None, *sorted(run.branches)]:
            line = run.line(branch)
            for level in sorted(line):
                yield run, line[level]


def job_cells(run: RunData, job: Trained) -> list:
    """A job's identifying cells, in `JOB_COLUMNS` order (branch `ticket` on the ticket line)."""
    return [run.experiment, run.dir.name, run.seed, run.data_order_seed, job.branch or TICKET, job.level,
            job.density]


def job_values(job: Trained) -> dict[str, float]:
    """A job's test metrics (`test/acc`, ...) and the last value of each spectrum metric, by W&B
    name (`spectra/act.0/cov/effective_rank`)."""
    values = {name: float(v) for name, v in job.metrics.get("test", {}).items()}
    if job.spectra is not None:
        values.update(final_metrics(job.spectra))
    return values


def spectra_frame(runs: list[RunData], key: str | None = None, every_step: bool = False) -> pd.DataFrame:
    """One row per eigenvalue of every job's spectra (`JOB_COLUMNS` + `SPECTRUM_COLUMNS`).

    `spectrum` is the full key (`act.0/cov`, `act.0->act.1/jac`), `site` where it was measured
    (`act.0`, `act.0->act.1`), `rank` counts from 1, `normalised` = eigenvalue / the spectrum's sum
    (a distribution over ranks, comparable across widths and scales). Only the spectrum `key` when
    given; the last measurement of each job only, or every measurement (`every_step`, by `step`).
    """
    rows = []
    for run, job in finished_jobs(runs):
        if job.spectra is None:
            continue
        steps = np.asarray(job.spectra[STEPS]) if STEPS in job.spectra else None
        for spectrum in stored_keys(job.spectra):
            if key is not None and str(spectrum) != key:
                continue
            history = np.atleast_2d(np.asarray(job.spectra[spectrum.field(EIGENVALUES)], dtype=np.float64))
            picked = range(len(history)) if every_step else [len(history) - 1]
            for index in picked:
                values = history[index]
                total = values.sum()
                step = int(steps[index]) if steps is not None and len(steps) == len(history) else index
                where = str(spectrum).rpartition("/")[0]
                for rank, value in enumerate(values, start=1):
                    rows.append([*job_cells(run, job), str(spectrum), where, spectrum.kind, step, rank,
                                 float(value), float(value / total) if total > 0 else 0.0])
    return pd.DataFrame(rows, columns=JOB_COLUMNS + SPECTRUM_COLUMNS)


def metrics_frame(runs: list[RunData]) -> pd.DataFrame:
    """One row per job (`JOB_COLUMNS`), then its test metrics and final spectra metrics
    (`job_values`); NaN where a job lacks one."""
    records = [dict(zip(JOB_COLUMNS, job_cells(run, job), strict=True)) | job_values(job)
               for run, job in finished_jobs(runs)]
    frame = pd.DataFrame.from_records(records, columns=None if records else JOB_COLUMNS)
    families = ("test/", "spectra/")  # test metrics first, then spectra metrics, then comparisons
    metric_columns = sorted((c for c in frame.columns if c not in JOB_COLUMNS),
                            key=lambda c: (next((i for i, f in enumerate(families) if c.startswith(f)), 2), c))
    return frame[JOB_COLUMNS + metric_columns]


def _is_run(path: Path) -> bool:
    return RunLayout(path).config.is_file()


def _recorded_runs(root: Path, verdict: dict | None) -> list[Path]:
    """The run directories a report names (`ltc seeds` without `--run_dir` keeps its runs beside
    its own folder): each as recorded, else beside the folder."""
    found = []
    for entry in (verdict or {}).get("runs", []):
        recorded = Path(entry["dir"])
        for candidate in (recorded, root.parent / recorded.name):
            if _is_run(candidate):
                found.append(candidate)
                break
    return found


def run_directories(path: Path) -> list[Path]:
    """The run directories at `path`: itself, its sub-folders (`ltc seeds --run_dir`), their
    sub-folders (`ltc calibrate`: world/seed), or those its report names."""
    if _is_run(path):
        return [path]
    children = sorted(p for p in path.iterdir() if p.is_dir())
    found = [p for p in children if _is_run(p)]
    if not found:
        found = [g for p in children for g in sorted(q for q in p.iterdir() if q.is_dir()) if _is_run(g)]
    return found or _recorded_runs(path, _read_json(RunLayout(path).report.verdict))


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LTCError(f"{path} is not valid JSON ({exc}); re-run the command that wrote it") from exc


@dataclass(eq=False)
class Runs:
    """Finished runs opened by `open_runs`: one run directory, or several (seeds, data orders, worlds).

    `root` is the path that was opened, `runs` the run directories found there (`RunData`, in
    path order). Jobs are picked by level, branch (None or `"ticket"`: the ticket line) and, where
    several runs are open, seed (and data order)."""

    root: Path
    runs: list[RunData]

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per job: experiment, run, seed, data_order_seed, branch, level, density, then
        test metrics (`test/acc`, ...) and final spectra metrics (`spectra/<key>/<metric>`)."""
        return metrics_frame(self.runs)

    def spectra(self, key: str | None = None, every_step: bool = False) -> pd.DataFrame:
        """Eigenvalues as a long table, one row each (`spectra_frame`): every job's final spectra, or
        only spectrum `key` (`act.0/cov`), or every measurement during training (`every_step`)."""
        return spectra_frame(self.runs, key, every_step)

    @property
    def keys(self) -> list[str]:
        """The spectra measured (`act.0/cov`, `act.0->act.1/jac`, ...), in file order."""
        found: dict[str, None] = {}
        for _, job in finished_jobs(self.runs):
            if job.spectra is not None:
                found.update(dict.fromkeys(str(k) for k in stored_keys(job.spectra)))
        return list(found)

    @property
    def seeds(self) -> list[int]:
        """The init seeds of the runs, sorted (extra data orders of a seed share its seed)."""
        return sorted({run.seed for run in self.runs})

    def run(self, seed: int | None = None, data_order_seed: int | None = None) -> RunData:
        """The run of `seed` (and `data_order_seed`: default the seed's own data order); the only run
        when one is open."""
        if seed is None and len(self.runs) == 1:
            return self.runs[0]
        order = seed if data_order_seed is None else data_order_seed
        matches = [r for r in self.runs if r.seed == seed and r.data_order_seed == order]
        if len(matches) != 1:
            known = "; ".join(f"seed {r.seed}, data order {r.data_order_seed} ({r.dir.name})" for r in self.runs)
            found = (f"{self.root} holds {len(self.runs)} runs" if seed is None else
                     f"{len(matches)} runs in {self.root} have seed {seed} and data order {order}")
            raise LTCError(f"{found}; pass seed= (and data_order_seed=) of one: {known}")
        return matches[0]

    def job(self, level: int, branch: str | None = None, seed: int | None = None,
            data_order_seed: int | None = None) -> Trained:
        """A finished job: `level` of the ticket line or of `branch`, in the run of `seed`."""
        run = self.run(seed, data_order_seed)
        line = run.line(None if branch in (None, TICKET) else branch)
        if level not in line:
            where = "the ticket line" if branch in (None, TICKET) else f"branch {branch}"
            raise LTCError(f"{run.dir} has no finished level {level} on {where}; finished: {sorted(line)}, "
                           f"branches: {sorted(run.branches)}")
        return line[level]

    def mask(self, level: int, branch: str | None = None, seed: int | None = None) -> Mask:
        """A job's mask: parameter name -> bool tensor (True = kept)."""
        return self.job(level, branch, seed).mask

    def weights(self, level: int, branch: str | None = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """A job's trained weights (a state dict; pruned entries are exactly zero)."""
        return self.job(level, branch, seed).weights

    def eigenvectors(self, key: str, level: int, branch: str | None = None, seed: int | None = None) -> np.ndarray:
        """The final top-k eigenvectors (d, k), as columns, of spectrum `key` of a job (the spectra
        files keep the last measurement's top k only)."""
        job = self.job(level, branch, seed)
        if job.spectra is None or str(SpectrumKey.parse(key)) not in {str(k) for k in stored_keys(job.spectra)}:
            raise LTCError(f"{job.dir} holds no spectrum {key!r}; measured: {self.keys}")
        return top_vectors(job.spectra, key)

    @cached_property
    def verdict(self) -> dict | None:
        """`ltc report`'s verdict.json (the verdict, why, each test's readings, the runs), or None
        before a report was written."""
        return _read_json(RunLayout(self.root).report.verdict)

    @cached_property
    def calibration(self) -> dict | None:
        """The calibration shown beside the verdict: `ltc calibrate`'s calibration.json in this
        folder's report (when `ltc calibrate`'s folder is opened), else the one the verdict carries."""
        own = _read_json(RunLayout(self.root).report.calibration)
        return own if own is not None else (self.verdict or {}).get("calibration")


def open_runs(path: str | Path) -> Runs:
    """Open a run directory written by `ltc imp`, or a folder of them (`ltc seeds`, `ltc calibrate`).

    Raises `LTCError` (one line saying what to pass) when `path` holds no finished run."""
    root = Path(path)
    if not root.is_dir():
        raise LTCError(f"{root} is not a directory; pass a run directory written by `ltc imp` or a folder of them")
    found = run_directories(root)
    if not found:
        raise LTCError(f"{root} holds no run directory (no config.yaml in it or in its sub-folders); pass a "
                       "directory written by `ltc imp` or `ltc seeds`")
    return Runs(root, [load_run(d) for d in found])
