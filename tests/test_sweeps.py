"""W&B sweep YAMLs (configs/sweeps/): every grid point expands, as a W&B agent would expand it, to an
`ltc imp` command line that parses and validates, with its own run dir; one runs locally at tiny size."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from experiments.cli import main
from experiments.config import default_run_dir, parse
from experiments.commands.imp import build_parser
from lth.config import ImpConfig
from lth.rundir import is_done

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
AGENT_VARIABLES = ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch):
    """Agents run the sweep commands from the repository root (their config paths are relative)."""
    monkeypatch.chdir(ROOT)


def grid(sweep: dict) -> list[dict]:
    """Every combination of the sweep's parameters (`values` lists and fixed `value`s)."""
    names = list(sweep["parameters"])
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in sweep["parameters"].values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def agent_command(sweep: dict, params: dict) -> list[str]:
    """The command line a W&B agent runs for one grid point (its macro expansion, on Linux)."""
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]
    macros = {"${env}": ["/usr/bin/env"], "${program}": [sweep["program"]], "${args}": args,
              "${interpreter}": ["python"]}
    return [part for item in sweep["command"] for part in macros.get(str(item), [str(item)])]


def ltc_imp_args(command: list[str]) -> list[str]:
    """The arguments after `ltc imp`, checking what comes before them."""
    at = command.index("ltc")
    assert command[0] == "/usr/bin/env" and command[at + 1] == "imp"
    unset = [command[i + 1] for i in range(at) if command[i] == "-u"]
    assert set(unset) == set(AGENT_VARIABLES)  # level runs must not reuse the agent's single run id
    return command[at + 2:]


def test_there_are_sweeps_over_seeds_fractions_and_rewind_steps():
    swept = {name for path in SWEEPS for name in yaml.safe_load(path.read_text())["parameters"]}
    assert {"seed_everything", "imp.prune_fraction", "imp.rewind_step"} <= swept


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_grid_point_is_a_valid_ltc_imp_command(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] == "grid" and sweep["program"] == "ltc" and "${args}" in sweep["command"]
    parser = build_parser()
    run_dirs = set()
    points = grid(sweep)
    assert len(points) > 1
    for params in points:
        args = ltc_imp_args(agent_command(sweep, params))
        assert all(a.startswith("--") and "=" in a for a in args[args.index("--config") + 2:])  # --key=value
        cfg = parse(parser, args)
        ImpConfig(**vars(cfg.imp)).validate(cfg.trainer.max_steps)
        for key, value in params.items():  # each swept value reached its dotted key
            assert cfg.get(key) == value, (key, cfg.get(key), value)
        run_dirs.add(default_run_dir(cfg))
    assert len(run_dirs) == len(points)  # independent jobs never share a run directory


def test_one_sweep_command_runs_locally_at_tiny_size(tmp_path):
    sweep = yaml.safe_load((ROOT / "configs" / "sweeps" / "mnist1d_seeds.yaml").read_text())
    params = grid(sweep)[1]
    args = ltc_imp_args(agent_command(sweep, params))
    tiny = ["--trainer.max_steps", "20", "--trainer.val_check_interval", "10", "--imp.rewind_step", "10",
            "--imp.levels", "1", "--imp.branch_levels", "[1]", "--imp.branches", "[random_prune]",
            "--wandb.mode", "disabled", "--trainer.enable_progress_bar", "false", "--run_dir", str(tmp_path / "run")]
    assert main(["imp", *args, *tiny]) == 0
    run = tmp_path / "run"
    for job in ("level_00", "level_01", "branches/random_prune/level_01"):
        assert is_done(run / job), job
    stored = parse(build_parser(), ["--config", str(run / "config.yaml")])
    assert stored.seed_everything == params["seed_everything"]
