"""`ltc calibrate`: the battery on a population of planted worlds whose truth is known, site by site.

    ltc calibrate [--quick] [--families '[input_subcircuit, ...]'] [--instances N] [--population_seed S]
                  [--seeds '[0,1,2,3,4]'] [--workers 2] [--out runs/calibration] [--wandb.mode ...]

Draws the population (`experiments.data.population`: families x random instances, SGD and Adam
students, one shared recipe, and the dial from coordinate-aligned to dense), trains every
instance with real IMP, controls and basis branches over the seeds, reads each with the battery
and scores it against its planted truths (`channels.verdict.calibration`). `report/calibration.json`
holds the instances, the confusion matrices and the error rates with exact intervals; the report
adds the dial's figure. `ltc report` shows the latest one beside every verdict. Runs are ordinary
run directories: re-running resumes. `--quick`: one instance per family and the dial's two ends.
The planted sequence families (`sequence_subcircuit`, `sequence_channel`) are opt-in: drawn only
when `--families` names them, each instance trained with its family's own recipe.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path

import channels
from channels.verdict.battery import run_battery, verdict
from channels.verdict.calibration import calibration, instance_entry
from channels.verdict.dial import dial_summary
from channels.verdict.rundata import load_run
from experiments.config import base_parser, imp_parser, parse
from experiments.data.population import (
    DEFAULT_POPULATION_SEED,
    PER_FAMILY,
    POPULATION_RECIPE,
    SEQUENCE_PER_FAMILY,
    WorldInstance,
    draw_population,
)
from experiments.launchers import Launch, run_all
from experiments.report.calibration import calibration_document, dial_figure, log_calibration_run
from experiments.report.document import render_console, write_document
from experiments.report.networks import RunNetworks
from experiments.runtime import console, limit_cpu_threads, quiet_libraries
from experiments.settings import WandbConfig
from lth import rundir
from lth.errors import LTCError
from lth.layout import DEFAULT_CALIBRATION, CalibrationLayout

FAMILIES = (*PER_FAMILY, "dial", *SEQUENCE_PER_FAMILY)


def build_parser():
    parser = base_parser("ltc calibrate", "The battery on a population of planted worlds: confusion matrices.")
    parser.add_argument("--families", type=list[str] | None, default=None,
                        help=f"families to draw (default all but the opt-in sequence_*): {', '.join(FAMILIES)}")
    parser.add_argument("--quick", type=bool, default=False, help="one instance per family, the dial's two ends")
    parser.add_argument("--instances", type=int | None, default=None,
                        help="only the first N instances of the round-robin order (a balanced smaller population)")
    parser.add_argument("--population_seed", type=int, default=DEFAULT_POPULATION_SEED,
                        help="seed of the population's instances (the default was never used to develop the rules)")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2, 3, 4], help="init seeds per instance (>= 5 to read)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (worker processes when > 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--recipe", type=str, default=str(POPULATION_RECIPE),
                        help="the shared recipe of the MLP worlds (a sequence family runs its own)")
    parser.add_argument("--out", type=str, default=str(DEFAULT_CALIBRATION.root), help="where the runs and the report go")
    parser.add_argument("--wandb.mode", type=str | None, default=None, help="offline (default), online or disabled")
    return parser


def instance_dir(population_seed: int, instance: WorldInstance) -> str:
    return f"population_{population_seed}/{instance.name}"


def plan(instances: list[WorldInstance], cfg, layout: CalibrationLayout, tmp: Path) -> list[Launch]:
    """One `ltc imp` per instance and seed, its resolved recipe (the instance's own, else the
    shared `cfg.recipe`) written to `tmp`."""
    parser = imp_parser()
    launches = []
    for instance in instances:
        for seed in cfg.seeds:
            run_dir = layout.run(instance_dir(cfg.population_seed, instance), seed)
            recipe = str(instance.recipe or cfg.recipe)
            args = ["--config", recipe, *instance.overrides(), "--seed_everything", str(seed),
                    "--run_dir", str(run_dir), "--wandb.mode", "disabled", "--trainer.enable_progress_bar", "false"]
            path = tmp / f"{instance.name}-{seed}.yaml"
            path.write_text(parser.dump(parse(parser, args)))
            launches.append(Launch(f"{instance.name} seed {seed}", path, run_dir))
    return launches


def reading_key(instance: WorldInstance, run_dirs: list[Path]) -> str:
    """sha256 of what an instance's reading depends on: the reading code (every source file of
    `channels`), the instance and its truths, and its runs' files (path and content: a resumed run
    rewrites its config.yaml with the same content)."""
    digest = hashlib.sha256()
    for source in sorted(Path(channels.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    digest.update(json.dumps([instance.describe(), instance.truths, instance.verdict_truth], sort_keys=True).encode())
    for run_dir in run_dirs:
        for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(run_dir.parent)}|".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def read_instance(instance: WorldInstance, population_seed: int, seeds: list[int], root: str, threads: int) -> dict:
    """The battery's verdict on one instance's runs, scored: a line of calibration.json. Kept in
    `readings/<instance>.json` and reused while the code, the instance and its runs are unchanged
    (an interrupted calibration resumes its reading too)."""
    limit_cpu_threads(threads)  # the tests' small products crawl when threads outnumber free cores
    layout = CalibrationLayout(Path(root))
    run_dirs = [layout.run(instance_dir(population_seed, instance), seed) for seed in seeds]
    key, saved = reading_key(instance, run_dirs), layout.reading(instance.name)
    if saved.is_file():
        cached = json.loads(saved.read_text())
        if cached.get("key") == key:
            return cached["entry"]
    runs = [load_run(run_dir) for run_dir in run_dirs]
    result = verdict(run_battery(runs, RunNetworks.for_runs(runs)))
    entry = instance_entry(instance.name, instance.describe(), instance.truths, instance.verdict_truth, result)
    saved.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(saved, {"key": key, "entry": entry})
    return entry


def read_all(instances: list[WorldInstance], cfg, layout: CalibrationLayout) -> list[dict]:
    """Every instance read, `cfg.workers` at a time in worker processes (in order in the result)."""
    args = (cfg.population_seed, list(cfg.seeds), str(layout.root), cfg.threads)
    if cfg.workers <= 1:
        return [read_instance(instance, *args) for instance in instances]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    entries: dict[str, dict] = {}
    with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(read_instance, instance, *args): instance for instance in instances}
        for future in as_completed(futures):
            entries[futures[future].name] = entry = future.result()
            console.print(f"ltc calibrate: read {entry['name']} ({len(entries)}/{len(instances)}): {entry['verdict']}")
    return [entries[instance.name] for instance in instances]


def main(argv: list[str]) -> int:
    quiet_libraries()
    cfg = parse(build_parser(), argv)
    if cfg.workers < 1 or cfg.threads < 1:
        raise LTCError("--workers and --threads must be >= 1")
    if cfg.instances is not None and cfg.instances < 1:
        raise LTCError(f"--instances must be >= 1, got {cfg.instances}")
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise LTCError(f"--seeds must be distinct and non-empty, got {cfg.seeds}")
    unknown = [f for f in cfg.families or [] if f not in FAMILIES]
    if unknown:
        raise LTCError(f"unknown planted family {unknown[0]!r}: use any of {', '.join(FAMILIES)}")
    if not Path(cfg.recipe).is_file():
        raise LTCError(f"no recipe at {cfg.recipe}: pass --recipe with the shared recipe of the worlds")
    mode = WandbConfig(mode=cfg.wandb.mode).resolved_mode()
    instances = draw_population(cfg.population_seed, cfg.families, cfg.quick, limit=cfg.instances)
    layout = CalibrationLayout(Path(cfg.out))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        launches = plan(instances, cfg, layout, Path(tmp))
        console.print(f"ltc calibrate: {len(instances)} world instances x {len(cfg.seeds)} seeds = {len(launches)} "
                      f"runs into {layout.root} (population seed {cfg.population_seed})")
        run_all(launches, cfg.workers, cfg.threads, layout.logs, "ltc calibrate")
    trained = time.perf_counter() - started
    entries = read_all(instances, cfg, layout)
    result = calibration(entries)
    result.update(dial=dial_summary(entries), date=datetime.date.today().isoformat(), seeds=len(cfg.seeds),
                  population_seed=cfg.population_seed, quick=cfg.quick, train_seconds=trained,
                  read_seconds=time.perf_counter() - started - trained,
                  seconds=time.perf_counter() - started,
                  machine=f"{platform.node()} ({platform.processor() or platform.machine()})")
    files = layout.report
    rundir.write_json(files.calibration, result)
    doc = calibration_document(result, dial_figure(result, files))
    write_document(doc, files)
    render_console(doc, console)
    if mode != "disabled":
        log_calibration_run(result, layout.root, mode)
    console.print(f"calibration: {files.calibration} ({result['seconds'] / 60:.1f} min)")
    return 0
