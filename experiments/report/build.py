"""`build_report`: the ticket tests on finished run directories, written as a report directory
(`lth.layout.ReportFiles`: verdict.json, report.md, index.html, figures/) and a W&B summary run."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from channels.verdict.battery import run_battery, verdict
from channels.verdict.rundata import RunData, load_run
from channels.verdict.stability import stability_rows, stability_summary
from experiments.config import experiment_id, imp_parser
from experiments.report.document import Figure, write_document
from experiments.report.figures import all_figures
from experiments.report.fourier import fourier_reading
from experiments.report.networks import RunNetworks, run_configs
from experiments.report.reproduction import comparison
from experiments.report.verdict import verdict_document
from experiments.report.wandb_summary import log_summary_run
from experiments.runtime import console, limit_cpu_threads
from experiments.settings import WandbConfig
from lth import rundir
from lth.errors import LTCError
from lth.layout import DEFAULT_CALIBRATION, ReportFiles, RunLayout
from lth.rundir import config_hash


def experiment_ids(configs: dict[RunData, object | None]) -> list[str]:
    """The experiment id `ltc imp` gave each run (its W&B group), or its dir name where its config
    cannot be parsed (`run_configs`)."""
    return [run.dir.name if cfg is None else experiment_id(cfg) for run, cfg in configs.items()]


def group_id(experiment: str, run_ids: list[str]) -> str:
    """The W&B group of a report: the run's experiment id, or one id for a set of runs."""
    return run_ids[0] if len(run_ids) == 1 else f"{experiment}-seeds-{config_hash(sorted(run_ids))}"


def _announce(test, seconds: float) -> None:
    """One line per test read: long reports (transformer sites) show where they are."""
    console.print(f"report: {test.key} {test.title} read in {seconds:.0f} s")


def load_runs(run_dirs: Sequence[Path]) -> list[RunData]:
    """The runs of one config (other seeds or data orders), each given once."""
    if not run_dirs:
        raise LTCError("no run directory given; pass --run_dir DIR [DIR ...]")
    runs = [load_run(d) for d in run_dirs]
    names = [set(r.dense.mask) for r in runs]
    if any(n != names[0] for n in names):
        raise LTCError("the run directories prune different parameters: pass runs of one config (other seeds only)")
    seen = {}
    for run in runs:
        if (run.seed, run.data_order_seed) in seen:
            raise LTCError(f"{run.dir} and {seen[(run.seed, run.data_order_seed)]} have the same seed and data order; "
                           "pass each run once")
        seen[(run.seed, run.data_order_seed)] = run.dir
    return runs


def latest_calibration(path: Path | None = None) -> dict | None:
    """The calibration `ltc calibrate` wrote (default runs/calibration/report/calibration.json), if any."""
    path = Path(path) if path is not None else DEFAULT_CALIBRATION.report.calibration
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LTCError(f"{path} is not a calibration file ({exc}); re-run `ltc calibrate` or delete it") from exc


def build_report(run_dirs: list[Path], out: Path | None = None, wandb_mode: str = "offline",
                 calibration: Path | None = None, threads: int = 1) -> dict:
    """Run the ticket tests on `run_dirs` on `threads` CPU threads, write the report into `out`
    (default <first run>/report), log the W&B summary run unless `wandb_mode` is disabled; returns
    the verdict dict (also verdict.json), with the latest calibration beside it."""
    wandb_mode = WandbConfig(mode=wandb_mode).resolved_mode()  # refuses a bad mode before any work
    limit_cpu_threads(threads)  # the tests' many small products crawl when threads outnumber free cores
    runs = load_runs([Path(d) for d in run_dirs])
    files = ReportFiles(Path(out)) if out is not None else RunLayout(runs[0].dir).report
    started = time.perf_counter()
    parser = imp_parser()
    configs = run_configs(runs, parser)
    results = run_battery(runs, RunNetworks.for_runs(runs, configs, parser), progress=_announce)
    result = verdict(results)
    result["calibration"] = latest_calibration(calibration)
    ids = experiment_ids(configs)
    result["experiment"] = group_id(runs[0].experiment, ids)
    result["runs"] = [{"dir": str(r.dir), "seed": r.seed, "data_order_seed": r.data_order_seed,
                       "levels": sorted(r.levels), "branches": sorted(r.branches)} for r in runs]
    rows = stability_rows(runs)
    result["stability"] = {"rows": rows, "summary": stability_summary(rows)}
    figures = all_figures(runs, results, files)
    result["reproduction"] = comparison(runs, files)  # None unless the experiment has a published reference
    if result["reproduction"]:
        found = result["reproduction"]
        figures.append(Figure(found["figure"], files.figure(found["figure"]), found["caption"]))
    result["fourier"], fourier_figure = fourier_reading(runs, files)  # None unless the runs are modular addition
    figures += [fourier_figure] if fourier_figure else []
    result["figures"] = [str(f.path.relative_to(files.dir)) for f in figures]
    result["seconds"] = time.perf_counter() - started
    rundir.write_json(files.verdict, result)
    write_document(verdict_document(result, figures), files)
    if wandb_mode != "disabled":
        log_summary_run(result, figures, runs[0].dir, wandb_mode, runs, ids)
    return json.loads(json.dumps(result))
