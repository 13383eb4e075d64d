"""`ltc calibrate`: the battery on planted worlds whose truth is known, before trusting it elsewhere.

    ltc calibrate [--worlds '[input_subcircuit, ...]'] [--seeds '[0,1,2,3,4]'] [--workers 2]
                  [--out runs/calibration] [--wandb.mode offline|disabled]

Every recipe in configs/planted/ (`experiments.data.planted`: subcircuits on a few inputs or a few
hidden units, channels along a dense subspace of the input or of a hidden layer, and a world
without a ticket) runs with real IMP, controls, basis branches and spectra over the seeds; then
the battery reads each world's runs, and the confusion matrices (truth x reading) of the verdict
and of every test go into `report/calibration.json`, the report and a W&B summary run.
`ltc report` shows the latest one beside every verdict. Runs are ordinary run directories:
re-running resumes.
"""
from __future__ import annotations

import datetime
import platform
import tempfile
import time
from pathlib import Path

from channels.verdict.battery import run_battery, verdict
from channels.verdict.calibration import calibration, world_entry
from channels.verdict.rundata import load_run
from experiments.config import base_parser, imp_parser, parse
from experiments.data.planted import WORLDS
from experiments.launchers import Launch, run_all
from experiments.report.calibration import calibration_document, log_calibration_run
from experiments.report.document import render_console, write_document
from experiments.report.networks import RunNetworks
from experiments.runtime import console, quiet_libraries
from experiments.settings import WandbConfig
from lth import rundir
from lth.errors import LTCError
from lth.layout import DEFAULT_CALIBRATION, CalibrationLayout

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "planted"


def build_parser():
    parser = base_parser("ltc calibrate", "The battery on planted worlds of known truth: confusion matrices.")
    parser.add_argument("--worlds", type=list[str] | None, default=None,
                        help=f"planted worlds (default all): {', '.join(WORLDS)}")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2, 3, 4], help="init seeds per world (>= 5 to read)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (subprocesses when > 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--recipes", type=str, default=str(RECIPES), help="folder of the worlds' recipes")
    parser.add_argument("--out", type=str, default=str(DEFAULT_CALIBRATION.root), help="where the runs and the report go")
    parser.add_argument("--wandb.mode", type=str | None, default=None, help="offline (default), online or disabled")
    return parser


def world_recipes(folder: Path, worlds: list[str] | None) -> dict[str, Path]:
    """world name -> its recipe; every name must be a world with a recipe."""
    found = {p.stem: p for p in sorted(Path(folder).glob("*.yaml"))}
    names = worlds if worlds is not None else [w for w in WORLDS if w in found]
    missing = [w for w in names if w not in WORLDS or w not in found]
    if missing:
        raise LTCError(f"no planted world {missing[0]!r} with a recipe in {folder}: use any of "
                       f"{', '.join(w for w in WORLDS if w in found)}")
    if not names:
        raise LTCError(f"no planted-world recipes in {folder}")
    return {w: found[w] for w in names}


def plan(recipes: dict[str, Path], seeds: list[int], layout: CalibrationLayout, tmp: Path) -> list[Launch]:
    """One `ltc imp` per world and seed, its resolved recipe written to `tmp`."""
    parser = imp_parser()
    launches = []
    for world, recipe in recipes.items():
        for seed in seeds:
            run_dir = layout.run(world, seed)
            cfg = parse(parser, ["--config", str(recipe), "--seed_everything", str(seed), "--run_dir", str(run_dir),
                                 "--wandb.mode", "disabled", "--trainer.enable_progress_bar", "false"])
            path = tmp / f"{world}-{seed}.yaml"
            path.write_text(parser.dump(cfg))
            launches.append(Launch(f"{world} seed {seed}", path, run_dir))
    return launches


def read_world(world: str, seeds: list[int], layout: CalibrationLayout) -> dict:
    """The battery's verdict on one world's runs, as a line of calibration.json."""
    runs = [load_run(layout.run(world, seed)) for seed in seeds]
    result = verdict(run_battery(runs, RunNetworks.for_runs(runs)))
    return world_entry(world, WORLDS[world].truth, result)


def main(argv: list[str]) -> int:
    quiet_libraries()
    cfg = parse(build_parser(), argv)
    if cfg.workers < 1 or cfg.threads < 1:
        raise LTCError("--workers and --threads must be >= 1")
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise LTCError(f"--seeds must be distinct and non-empty, got {cfg.seeds}")
    mode = WandbConfig(mode=cfg.wandb.mode).resolved_mode()
    recipes = world_recipes(Path(cfg.recipes), cfg.worlds)
    layout = CalibrationLayout(Path(cfg.out))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        launches = plan(recipes, cfg.seeds, layout, Path(tmp))
        console.print(f"ltc calibrate: {len(recipes)} worlds x {len(cfg.seeds)} seeds = {len(launches)} runs "
                      f"into {layout.root}")
        run_all(launches, cfg.workers, cfg.threads, layout.logs, "ltc calibrate")
    trained = time.perf_counter() - started
    entries = []
    for world in recipes:
        console.print(f"ltc calibrate: reading {world}")
        entries.append(read_world(world, cfg.seeds, layout))
    result = calibration(entries)
    result.update(date=datetime.date.today().isoformat(), seeds=len(cfg.seeds), train_seconds=trained,
                  seconds=time.perf_counter() - started, machine=f"{platform.node()} ({platform.processor() or platform.machine()})")
    files = layout.report
    rundir.write_json(files.calibration, result)
    doc = calibration_document(result)
    write_document(doc, files)
    render_console(doc, console)
    if mode != "disabled":
        log_calibration_run(result, layout.root, mode)
    console.print(f"calibration: {files.calibration} ({result['seconds'] / 60:.1f} min)")
    return 0
