"""`ltc seeds`: one IMP recipe over several init seeds (with controls) and data orders, then the report.

Any `ltc imp` config works: `ltc seeds --config configs/mnist1d_imp.yaml --seeds '[0,1,2]'`, or
a recipe that carries its own `seeds:` (configs/mnist1d_seeds.yaml). Each init seed S is one
`ltc imp` run (seed_everything = S, the config's controls); each extra data order D adds a run
from the same init (data_order_seed = D, no controls); the battery averages a seed's runs, so
seeds stay its units (readings need >= 5 of them). Runs are
ordinary run directories (resumable, skipped when finished); `--workers N` runs N of them at once
in worker processes (each imports once and runs its share in process), on `--threads` torch threads.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from experiments.commands.report import print_verdict
from experiments.config import default_run_dir, experiment_id, imp_parser, parse
from experiments.launchers import HERE, Launch, run_all
from experiments.report.build import build_report, group_id
from experiments.runtime import console, quiet_libraries
from experiments.settings import WandbConfig
from lth.errors import LTCError
from lth.layout import RunLayout

SEED_KEYS = ("seeds", "data_order_seeds", "workers", "threads", "launcher", "executor", "report", "out")


def build_parser() -> ArgumentParser:
    parser = imp_parser("ltc seeds", "IMP with controls over several seeds (and data orders), then the ticket report.")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2, 3, 4],
                        help="init seeds, one run with controls each (the verdict reads from >= 5)")
    parser.add_argument("--data_order_seeds", type=list[int], default=[],
                        help="extra data orders run from each init seed (no controls)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (worker processes when > 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 is fastest for small models on shared CPUs)")
    parser.add_argument("--launcher", type=str, default=HERE,
                        help="here (this machine: in process, or --workers worker processes) or a submitit executor: "
                             "slurm, local, debug (one job per run)")
    parser.add_argument("--executor", type=dict, default={},
                        help="submitit parameters of each job, e.g. '{timeout_min: 120, slurm_partition: gpu, "
                             "gpus_per_node: 1}'")
    parser.add_argument("--report", type=bool, default=True, help="build the report when the runs are done")
    parser.add_argument("--out", type=str | None, default=None,
                        help="report directory (default runs/<experiment>-seeds-<hash8>/report)")
    return parser


@dataclass
class PlannedRun:
    seed: int
    data_order_seed: int | None
    run_dir: Path
    cfg: Namespace

    @property
    def label(self) -> str:
        return f"seed {self.seed}" + ("" if self.data_order_seed is None else f", data order {self.data_order_seed}")


def plan(cfg: Namespace) -> list[PlannedRun]:
    """One run per init seed (the config's controls) and per (seed, extra data order) (no controls)."""
    if not cfg.seeds:
        raise LTCError("--seeds is empty; give at least one init seed, e.g. --seeds '[0,1,2]'")
    if len(set(cfg.seeds)) != len(cfg.seeds) or len(set(cfg.data_order_seeds)) != len(cfg.data_order_seeds):
        raise LTCError(f"repeated seeds in --seeds {cfg.seeds} or --data_order_seeds {cfg.data_order_seeds}")
    base = cfg.clone()
    for key in SEED_KEYS:
        del base[key]
    base.config = None
    runs = []
    for seed in cfg.seeds:
        for order in [None, *[d for d in cfg.data_order_seeds if d != seed]]:
            run_cfg = base.clone()
            run_cfg.seed_everything, run_cfg.data_order_seed = seed, order
            if order is not None:
                run_cfg.imp.branches = []
            if cfg.run_dir:
                name = f"seed_{seed}" if order is None else f"seed_{seed}_order_{order}"
                run_cfg.run_dir = str(Path(cfg.run_dir) / name)
            else:
                run_cfg.run_dir = str(default_run_dir(run_cfg))
            runs.append(PlannedRun(seed, order, Path(run_cfg.run_dir), run_cfg))
    return runs


def _write_config(run: PlannedRun, directory: Path, parser: ArgumentParser) -> Path:
    path = directory / f"{run.run_dir.name}.yaml"
    path.write_text(parser.dump(run.cfg))
    return path


def main(argv: list[str]) -> int:
    quiet_libraries()
    cfg = parse(build_parser(), argv)
    if cfg.workers < 1 or cfg.threads < 1:
        raise LTCError("--workers and --threads must be >= 1")
    runs = plan(cfg)
    seeds_id = group_id(cfg.experiment, [experiment_id(r.cfg) for r in runs])
    root = RunLayout(Path(cfg.run_dir) if cfg.run_dir else Path("runs") / seeds_id)
    out = Path(cfg.out) if cfg.out else root.report.dir
    mode = WandbConfig(mode=cfg.wandb.mode).resolved_mode()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # cluster jobs read their recipe later, maybe on another machine: keep it beside their logs
        recipes = Path(tmp) if cfg.launcher == HERE else root.submitit
        recipes.mkdir(parents=True, exist_ok=True)
        parser = imp_parser()
        launches = [Launch(run.label, _write_config(run, recipes, parser), run.run_dir) for run in runs]
        log_dir = root.logs if cfg.launcher == HERE else root.submitit
        run_all(launches, cfg.workers, cfg.threads, log_dir, "ltc seeds", cfg.launcher, cfg.executor)
    console.print(f"ltc seeds: {len(runs)} runs done in {time.perf_counter() - started:.0f} s")
    if cfg.report:
        result = build_report([r.run_dir for r in runs], out, mode, threads=cfg.threads)
        print_verdict(result)
        console.print(f"report: {out}")
    return 0
