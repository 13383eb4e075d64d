"""Config parsing for `ltc` commands: YAML recipes plus dotted CLI overrides (jsonargparse).

A recipe YAML has the sections `model` and `data` (class_path / init_args, as LightningCLI),
`trainer`, `imp`, `spectra`, `wandb`, plus `experiment`, `seed_everything` and `run_dir`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from lth.errors import LTCError
from lth.rundir import config_hash

# Keys that change how a run is executed or observed, not what it computes: left out of the
# run's identity so that a run can be resumed on another machine, extended by more levels or
# observed differently.
RUN_ONLY_KEYS = (
    "config", "run_dir", "force", "print_config", "wandb", "spectra",
    "imp.levels", "imp.branches", "imp.branch_levels", "imp.checkpoint_every_n_steps",
    "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "data.init_args.num_workers",
)


def base_parser(prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML recipe from configs/")
    return parser


def parse(parser: ArgumentParser, argv: list[str]) -> Namespace:
    """Parse, turning jsonargparse's errors into one-line `LTCError`s."""
    try:
        return parser.parse_args(argv)
    except (argparse.ArgumentError, ValueError, TypeError) as exc:
        if isinstance(exc, LTCError):
            raise
        first = " ".join(str(exc).split())
        raise LTCError(f"bad config: {first[:400]} (see `{parser.prog} --help`)") from exc


def instantiate(parser: ArgumentParser, cfg: Namespace) -> Namespace:
    try:
        return parser.instantiate_classes(cfg)
    except LTCError:
        raise
    except (TypeError, ValueError, ImportError) as exc:
        raise LTCError(f"cannot build the configured objects: {' '.join(str(exc).split())[:400]}") from exc


def identity(cfg: Namespace) -> dict:
    """The resolved config minus run-only keys: what a run directory's hash is computed from."""
    plain = cfg.clone().as_dict()
    for key in RUN_ONLY_KEYS:
        node, *path = key.split(".")
        target = plain
        for part in path:
            target = target.get(node) if isinstance(target, dict) else None
            node = part
        if isinstance(target, dict):
            target.pop(node, None)
    return plain


def default_run_dir(experiment: str, cfg: Namespace, root: str = "runs") -> Path:
    return Path(root) / f"{experiment}-{config_hash(identity(cfg))}"


def add_lightning_sections(parser: ArgumentParser, task_base: type) -> None:
    parser.add_subclass_arguments(task_base, "model", required=True, help="the task: class_path + init_args")
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True, help="the datamodule")
