"""Config parsing for `ltc` commands: YAML recipes plus dotted CLI overrides (jsonargparse), and a
run's identity.

A recipe YAML has the sections `model` and `data` (class_path / init_args, as LightningCLI),
`trainer`, `imp`, `spectra`, `wandb`, plus `experiment`, `seed_everything`, `data_order_seed`
and `run_dir`. A run directory is named `<experiment>-<hash8>` (`experiment_id`), the hash of the
resolved config minus what only changes how the run is executed or observed (`identity`): the
command-line-only arguments, the `wandb` and `spectra` sections, the fields tagged `run_only`
on the section dataclasses (`lth.config`), and the datamodule's `num_workers`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from channels.spectra import SpectraConfig
from experiments.models.mlp import DEFAULT_INIT
from experiments.settings import TrainerConfig, WandbConfig
from lth.config import ImpConfig, identity_tags
from lth.errors import LTCError
from lth.layout import RunLayout
from lth.rundir import config_hash

RUN_ONLY_ARGUMENTS = ("config", "run_dir", "force", "print_config")
RUN_ONLY_SECTIONS = ("wandb", "spectra")
RUN_ONLY_INIT_ARGS = (("data", "num_workers"),)  # datamodules are classes, not tagged dataclasses
SECTIONS = {"trainer": TrainerConfig, "imp": ImpConfig, "spectra": SpectraConfig, "wandb": WandbConfig}


def base_parser(prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML recipe from configs/")
    return parser


def imp_parser(prog: str = "ltc imp",
               description: str = "Iterative magnitude pruning with rewinding, controls and spectra.") -> ArgumentParser:
    """The parser of an IMP recipe (`ltc imp`, and what `ltc seeds` extends)."""
    import pytorch_lightning as pl  # here, not at the top: commands without recipes do not load Lightning

    from experiments.tasks.base import Task

    parser = base_parser(prog, description)
    parser.add_argument("--experiment", type=str, default="imp", help="experiment name (W&B group prefix, run dir name)")
    parser.add_argument("--run_dir", type=str | None, default=None,
                        help="the experiment's directory (default runs/<experiment>-<hash8>)")
    parser.add_argument("--force", type=bool, default=False,
                        help="replace a run dir that belongs to another config (the old one is moved to DIR.old)")
    parser.add_argument("--seed_everything", type=int, default=0, help="seed of the init and the controls")
    parser.add_argument("--data_order_seed", type=int | None, default=None,
                        help="seed of the training data order (default: seed_everything)")
    parser.add_subclass_arguments(Task, "model", required=True, help="the task: class_path + init_args")
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True, help="the datamodule")
    for name, cls in SECTIONS.items():
        parser.add_class_arguments(cls, name)
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


def load_run_config(run_dir: Path, extra: list[str] = (), parser: ArgumentParser | None = None) -> Namespace:
    """The resolved IMP config a run directory was written with (its config.yaml), plus `extra` flags
    (`parser`: an `imp_parser()` to reuse, building one costs more than the parse)."""
    path = RunLayout(run_dir).config
    if not path.is_file():
        raise LTCError(f"{run_dir} is not a run directory (no {path.name}): pass the directory `ltc imp` made")
    return parse(parser or imp_parser(), ["--config", str(path), *extra])


def instantiate(parser: ArgumentParser, cfg: Namespace) -> Namespace:
    try:
        return parser.instantiate(cfg)
    except LTCError:
        raise
    except (TypeError, ValueError, ImportError) as exc:
        raise LTCError(f"cannot build the configured objects: {' '.join(str(exc).split())[:400]}") from exc


def identity(cfg: Namespace) -> dict:
    """The resolved config minus run-only keys: what a run directory's hash is computed from."""
    plain = cfg.clone().as_dict()
    for key in (*RUN_ONLY_ARGUMENTS, *RUN_ONLY_SECTIONS):
        plain.pop(key, None)
    for section, key in RUN_ONLY_INIT_ARGS:
        init_args = (plain.get(section) or {}).get("init_args")
        if isinstance(init_args, dict):
            init_args.pop(key, None)
    net = ((plain.get("model") or {}).get("init_args") or {}).get("net")
    net_args = net.get("init_args") if isinstance(net, dict) else None
    if isinstance(net_args, dict) and net_args.get("init") == DEFAULT_INIT:
        net_args.pop("init")  # added to the MLP after runs were named: at its default, older names stand
    for section, cls in SECTIONS.items():
        node = plain.get(section)
        if section in RUN_ONLY_SECTIONS or not isinstance(node, dict):
            continue
        run_only, added = identity_tags(cls)
        for key in run_only:
            node.pop(key, None)
        for key, default in added.items():
            if key in node and node[key] == default:
                node.pop(key)
    return plain


def experiment_id(cfg: Namespace) -> str:
    """`<experiment>-<hash8>`: the run's name (default run dir, W&B group)."""
    return f"{cfg.experiment}-{config_hash(identity(cfg))}"


def default_run_dir(cfg: Namespace, root: str = "runs") -> Path:
    return Path(root) / experiment_id(cfg)
