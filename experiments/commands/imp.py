"""`ltc imp`: iterative magnitude pruning with controls and spectra, into one run directory."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace
from rich.table import Table

from experiments.config import default_run_dir, experiment_id, imp_parser, parse
from experiments.environment import LightningEnvironment
from experiments.runtime import console, quiet_libraries
from lth import rundir
from lth.config import ImpConfig
from lth.driver import IMPDriver, is_global_zero
from lth.errors import LTCError
from lth.layout import RunLayout, job_name
from lth.lock import RunLock


def build_parser() -> ArgumentParser:
    return imp_parser()


def claim_run_dir(run_dir: Path, cfg: Namespace, parser: ArgumentParser, force: bool) -> RunLock | None:
    """Create the run dir, take its lock (`lth.lock`: one owner per run dir) and write its
    config.yaml, refusing one that belongs to another config. Returns the held lock. Only global
    rank 0 locks and writes; other ranks of a multi-process run only check."""
    if not is_global_zero():
        _check_run_dir(run_dir, cfg, parser, force, lock=None)
        return None
    lock = RunLock(RunLayout(run_dir).lock)
    stale = lock.acquire()
    try:
        if stale is not None:
            console.print(f"took over the lock of {stale.describe()}, which is no longer running")
        lock = _check_run_dir(run_dir, cfg, parser, force, lock)
        if not os.access(run_dir, os.W_OK):
            raise LTCError(f"run dir {run_dir} is not writable; pick another --run_dir")
        rundir.write_text(RunLayout(run_dir).config, parser.dump(cfg, skip_none=False))
    except BaseException:
        lock.release()
        raise
    return lock


def _check_run_dir(run_dir: Path, cfg: Namespace, parser: ArgumentParser, force: bool,
                   lock: RunLock | None) -> RunLock | None:
    """Refuse a run dir of another config (with `force`: move it to DIR.old, locking the new one)."""
    layout = RunLayout(run_dir)
    config_path = layout.config
    wanted = experiment_id(cfg)
    if config_path.exists():
        try:
            existing = experiment_id(parse(parser, ["--config", str(config_path)]))
        except LTCError:
            existing = "unreadable"
        if existing != wanted:
            if not force or lock is None:
                raise LTCError(f"{run_dir} holds a run of another config ({existing}, this one {wanted}); "
                               "pick another --run_dir, or pass --force to replace it")
            backup = run_dir.with_name(run_dir.name + ".old")
            shutil.rmtree(backup, ignore_errors=True)
            run_dir.rename(backup)  # the held lock moves with it: lock the new dir, then drop the old one
            fresh = RunLock(layout.lock)
            fresh.acquire()
            lock.release()
            RunLayout(backup).lock.unlink(missing_ok=True)
            console.print(f"--force: moved the old run to {backup}")
            return fresh
    elif run_dir.exists() and not force and any(p.name != layout.lock.name for p in run_dir.iterdir()):
        raise LTCError(f"{run_dir} exists, is not empty and has no {config_path.name}; pick another --run_dir "
                       "or pass --force")
    return lock


def print_table(results: dict[str, dict], levels: int, branches: list[str]) -> None:
    """Test accuracy per level for the ticket and each control; the instability column holds the
    error barrier (percentage points) between the level's two copies."""
    table = Table(title="IMP levels (test accuracy; instability: error barrier in points)")
    table.add_column("level", justify="right")
    table.add_column("%\nremaining", justify="right")
    table.add_column("ticket", justify="right")
    for branch in branches:
        table.add_column(branch.replace("_", "\n"), justify="right")  # fits 80 columns
    for level in range(levels + 1):
        main = results.get(job_name(level))
        if main is None:
            continue
        row = [str(level), f"{100 * main['density']:.1f}", f"{main['test'].get('test/acc', float('nan')):.4f}"]
        for branch in branches:
            res = results.get(job_name(level, branch))
            if res is None:
                row.append("-")
            elif "instability" in res:
                row.append(f"{100 * res['instability']['barrier_vs_mean']:.2f}")
            else:
                row.append(f"{res['test'].get('test/acc', float('nan')):.4f}")
        table.add_row(*row)
    console.print(table)


def main(argv: list[str]) -> int:
    quiet_libraries()
    parser = build_parser()
    cfg = parse(parser, argv)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    imp_cfg = ImpConfig(**vars(cfg.imp))
    imp_cfg.validate(cfg.trainer.max_steps)
    _, note = imp_cfg.resolved_branch_levels()
    env = LightningEnvironment(parser, cfg, run_dir, experiment_id(cfg))
    driver = IMPDriver(run_dir, imp_cfg, env)
    env.check()
    lock = claim_run_dir(run_dir, cfg, parser, cfg.force)
    if lock is None:
        driver.run()
        return 0
    try:
        console.print(f"run dir: {run_dir}   experiment: {env.experiment_id}   W&B: {env.wandb_mode}")
        if note:
            console.print(note)
        results = driver.run()
    finally:
        lock.release()
    print_table(results, imp_cfg.levels, imp_cfg.branches)
    if env.wandb_mode == "offline":
        wandb_dir = RunLayout(run_dir).wandb
        console.print(f"W&B offline runs are in {wandb_dir}; upload with `wandb sync {wandb_dir}/offline-run-*`")
    return 0
