"""`ltc workspace`: a saved W&B workspace comparing an experiment's levels, branches and seeds.

    ltc workspace --run_dir runs/mnist1d_imp [more run dirs of the same recipe] --wandb.mode online

Saving a workspace is a call to the W&B server: offline (the default) it is refused in one line.
Sync the runs first (`wandb sync <run_dir>/wandb/offline-run-*`).
"""
from __future__ import annotations

from pathlib import Path

from channels.keys import stored_keys
from experiments.config import base_parser, imp_parser, parse
from experiments.report.build import experiment_ids, group_id, load_runs
from experiments.report.networks import run_configs
from experiments.report.workspace import build_workspace
from experiments.runtime import console
from experiments.settings import WandbConfig, check_wandb_credentials
from lth.errors import LTCError


def build_parser():
    parser = base_parser("ltc workspace", "A saved W&B workspace for an experiment's runs.")
    parser.add_argument("--run_dir", type=str, nargs="+", required=True,
                        help="run directories written by `ltc imp` (several seeds of one recipe)")
    parser.add_argument("--name", type=str | None, default=None, help="workspace name (default: the experiment id)")
    parser.add_argument("--wandb.mode", type=str | None, default=None, help="online (needed to save)")
    parser.add_argument("--wandb.entity", type=str | None, default=None, help="default: the runs' config, else yours")
    parser.add_argument("--wandb.project", type=str | None, default=None, help="default: the runs' config")
    return parser


def main(argv: list[str]) -> int:
    cfg = parse(build_parser(), argv)
    mode = WandbConfig(mode=cfg.wandb.mode).resolved_mode()
    if mode != "online":
        raise LTCError(f"ltc workspace saves a view on the W&B server and W&B is {mode} here: sync the runs "
                       "(`wandb sync <run_dir>/wandb/offline-run-*`), then pass --wandb.mode online")
    runs = load_runs([Path(d) for d in cfg.run_dir])
    ids = experiment_ids(run_configs(runs, imp_parser()))
    groups = sorted({*ids, group_id(runs[0].experiment, ids)})
    recorded = runs[0].config.get("wandb") or {}
    check_wandb_credentials()
    import wandb

    entity = cfg.wandb.entity or recorded.get("entity") or wandb.Api().default_entity
    project = cfg.wandb.project or recorded.get("project") or WandbConfig().project
    keys = stored_keys(runs[0].dense.spectra or {})
    workspace = build_workspace(entity, project, groups, keys, cfg.name or groups[-1])
    workspace.save()
    console.print(f"W&B workspace saved: {workspace.url}")
    return 0
