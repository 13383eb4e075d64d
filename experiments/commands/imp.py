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


def build_parser() -> ArgumentParser:
    return imp_parser()


def prepare_run_dir(run_dir: Path, cfg: Namespace, parser: ArgumentParser, force: bool) -> None:
    """Create the run dir and its config.yaml, refusing one that belongs to another config.
    Only global rank 0 writes; other ranks of a multi-process run only check."""
    config_path = RunLayout(run_dir).config
    wanted = experiment_id(cfg)
    if config_path.exists():
        try:
            existing = experiment_id(parse(parser, ["--config", str(config_path)]))
        except LTCError:
            existing = "unreadable"
        if existing != wanted:
            if not force or not is_global_zero():
                raise LTCError(f"{run_dir} holds a run of another config ({existing}, this one {wanted}); "
                               "pick another --run_dir, or pass --force to replace it")
            backup = run_dir.with_name(run_dir.name + ".old")
            shutil.rmtree(backup, ignore_errors=True)
            run_dir.rename(backup)
            console.print(f"--force: moved the old run to {backup}")
    elif run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise LTCError(f"{run_dir} exists, is not empty and has no {config_path.name}; pick another --run_dir "
                       "or pass --force")
    if not is_global_zero():
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LTCError(f"cannot create the run dir {run_dir} ({exc.strerror}); pick another --run_dir") from exc
    if not os.access(run_dir, os.W_OK):
        raise LTCError(f"run dir {run_dir} is not writable; pick another --run_dir")
    rundir.write_text(config_path, parser.dump(cfg, skip_none=False))


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
    env = LightningEnvironment(parser, cfg, run_dir, experiment_id(cfg))
    driver = IMPDriver(run_dir, imp_cfg, env)
    env.check()
    prepare_run_dir(run_dir, cfg, parser, cfg.force)
    if not is_global_zero():
        driver.run()
        return 0
    console.print(f"run dir: {run_dir}   experiment: {env.experiment_id}   W&B: {env.wandb_mode}")
    results = driver.run()
    print_table(results, imp_cfg.levels, imp_cfg.branches)
    if env.wandb_mode == "offline":
        wandb_dir = RunLayout(run_dir).wandb
        console.print(f"W&B offline runs are in {wandb_dir}; upload with `wandb sync {wandb_dir}/offline-run-*`")
    return 0
