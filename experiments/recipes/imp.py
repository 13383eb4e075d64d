"""`ltc imp`: iterative magnitude pruning with controls and spectra, into one run directory."""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.utilities import move_data_to_device
from rich.console import Console
from rich.table import Table

from channels.callback import SpectraCallback
from channels.spectra import SpectraConfig
from experiments.config import (
    add_lightning_sections,
    base_parser,
    default_run_dir,
    identity,
    instantiate,
    parse,
)
from experiments.settings import TrainerConfig, WandbConfig
from experiments.tasks.base import Task
from lth import rundir
from lth.connectivity import has_batchnorm, recompute_batchnorm_statistics
from lth.data_order import step_indexed_loader
from lth.errors import LTCError
from lth.imp import ImpConfig, IMPDriver, Job, is_global_zero
from lth.rundir import config_hash

console = Console(highlight=False, soft_wrap=True)
BN_BATCHES = 30  # training batches that re-estimate BatchNorm statistics at each point of an instability line


def build_parser() -> ArgumentParser:
    parser = base_parser("ltc imp", "Iterative magnitude pruning with rewinding, controls and spectra.")
    parser.add_argument("--experiment", type=str, default="imp", help="experiment name (W&B group prefix, run dir name)")
    parser.add_argument("--run_dir", type=str | None, default=None,
                        help="the experiment's directory (default runs/<experiment>-<hash8>)")
    parser.add_argument("--force", type=bool, default=False,
                        help="replace a run dir that belongs to another config (the old one is moved to DIR.old)")
    parser.add_argument("--seed_everything", type=int, default=0, help="seed of the init and the controls")
    parser.add_argument("--data_order_seed", type=int | None, default=None,
                        help="seed of the training data order (default: seed_everything)")
    add_lightning_sections(parser, Task)
    parser.add_class_arguments(TrainerConfig, "trainer")
    parser.add_class_arguments(ImpConfig, "imp")
    parser.add_class_arguments(SpectraConfig, "spectra")
    parser.add_class_arguments(WandbConfig, "wandb")
    return parser


def quiet_libraries() -> None:
    """Keep the console to the bars and one line per level."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # the step-indexed sampler makes mid-level resumes exact, which Lightning cannot see
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    os.environ.setdefault("WANDB_SILENT", "true")


class LightningEnvironment:
    """Builds tasks, loggers and callbacks for `IMPDriver` from a parsed config."""

    def __init__(self, parser: ArgumentParser, cfg: Namespace, run_dir: Path, experiment_id: str) -> None:
        self.cfg, self.run_dir, self.experiment_id = cfg, run_dir, experiment_id
        self.seed = cfg.seed_everything
        self.data_order_seed = cfg.seed_everything if cfg.data_order_seed is None else cfg.data_order_seed
        built = instantiate(parser, cfg)
        self.datamodule: pl.LightningDataModule = built.data
        self.trainer_kwargs = built.trainer.kwargs()
        self.wandb: WandbConfig = built.wandb
        self.wandb_mode = self.wandb.resolved_mode()
        self.spectra: SpectraConfig = built.spectra
        self.spectra.validate()
        self.spectra_seconds = 0.0
        self._task_parser = ArgumentParser(exit_on_error=False)
        self._task_parser.add_subclass_arguments(Task, "model")
        if self.wandb_mode == "online":
            check_wandb_credentials()
        elif self.wandb_mode == "offline":
            # wandb's own settings follow the environment: without this, offline runs still try to
            # send wandb's telemetry to its server
            os.environ["WANDB_MODE"] = "offline"

    def check(self) -> None:
        """Fail before the run dir is touched on what would otherwise fail mid-level: missing data,
        unknown spectra sites."""
        self.datamodule.setup("fit")
        if self.spectra.enabled:
            from channels.sites import resolve_sites

            pairs = [site for pair in self.spectra.pairs() for site in pair]
            resolve_sites(self.make_task().net, [*self.spectra.sites, *pairs])

    def make_task(self) -> Task:
        return self._task_parser.instantiate_classes(Namespace(model=self.cfg.model)).model

    def make_callbacks(self, job: Job) -> list[pl.Callback]:
        if not self.spectra.enabled or not (self.spectra.sites or self.spectra.jacobians):
            return []
        probe = probe_inputs(self.datamodule, self.spectra.probe_size)
        self._spectra = SpectraCallback(self.spectra, probe, out_path=job.dir / "spectra.npz")
        return [self._spectra]

    def rotate(self, net) -> None:
        from lth.rotation import rotate_residual_basis

        if type(net).__name__ != "GPT2LMHeadModel":
            raise LTCError(f"imp.rotation needs a GPT-2 language model, got {type(net).__name__}")
        rotate_residual_basis(net, torch.Generator().manual_seed(self.seed + 20_000))

    def test_error(self, task: Task, device: torch.device) -> float:
        """1 - test accuracy of the task's net; BatchNorm statistics are first recomputed on
        BN_BATCHES training batches of a fixed order (interpolated running statistics are not
        those of the interpolated net)."""
        if has_batchnorm(task.net):
            torch.manual_seed(self.seed)  # the augmentation draws of these batches
            self.datamodule.setup("fit")
            loader, _ = step_indexed_loader(self.datamodule.train_dataloader(), self.data_order_seed, BN_BATCHES)
            task.to(device)
            recompute_batchnorm_statistics(task.net, (move_data_to_device(batch[0], device) for batch in loader))
        self.datamodule.setup("test")
        return task.error_rate(self.datamodule.test_dataloader(), device)

    def make_logger(self, job: Job):
        if self.wandb_mode == "disabled":
            return None
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(
            project=self.wandb.project, entity=self.wandb.entity, group=self.experiment_id,
            job_type="level" if job.branch is None else f"branch:{job.branch}",
            name=f"{self.experiment_id}/{job.name}", save_dir=str(self.run_dir), mode=self.wandb_mode,
            tags=list(self.wandb.tags), config={"job": job.name, **self.cfg.clone().as_dict()},
        )

    def finish_logger(self, logger) -> None:
        import wandb

        wandb.finish()

    def report(self, job: Job, metrics: dict, skipped: bool) -> None:
        if not is_global_zero():
            return
        acc = metrics["test"].get("test/acc", float("nan"))
        note = "done earlier" if skipped else f"{metrics['train_time_s']:.1f} s"
        if not skipped and getattr(self, "_spectra", None) is not None:
            note += f", spectra {self._spectra.seconds:.1f} s"
            self._spectra = None
        stability = metrics.get("instability")
        if stability is not None:
            note += (f"; error barrier {100 * stability['barrier_vs_mean']:.2f} points between the copies "
                     f"(test error {stability['error_a']:.4f} / {stability['error_b']:.4f})")
        console.print(f"[bold]{job.name:<26}[/bold] {100 * metrics['density']:6.2f}% remaining   "
                      f"test acc {acc:.4f}   ({note})")


def check_wandb_credentials() -> None:
    """Online W&B needs an API key; without one (and no terminal to ask) say so in one line."""
    import wandb

    try:
        wandb.login(verify=False)
    except wandb.errors.UsageError as exc:
        raise LTCError(f"wandb.mode=online needs W&B credentials ({exc}); run `wandb login` or set "
                       "WANDB_API_KEY, or use --wandb.mode offline and `wandb sync` later") from exc


def probe_inputs(datamodule: pl.LightningDataModule, n: int):
    """The datamodule's fixed probe batch (`probe_inputs(n)`), or the first n validation inputs."""
    if hasattr(datamodule, "probe_inputs"):
        return datamodule.probe_inputs(n)
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return inputs[:n]


def prepare_run_dir(run_dir: Path, cfg: Namespace, parser: ArgumentParser, force: bool) -> None:
    """Create the run dir and its config.yaml, refusing one that belongs to another config.
    Only global rank 0 writes; other ranks of a multi-process run only check."""
    config_path = run_dir / "config.yaml"
    wanted = config_hash(identity(cfg))
    if config_path.exists():
        try:
            stored = parse(parser, ["--config", str(config_path)])
            existing = config_hash(identity(stored))
        except LTCError:
            existing = "unreadable"
        if existing != wanted:
            if not force or not is_global_zero():
                raise LTCError(f"{run_dir} holds a run of another config (hash {existing}, this one {wanted}); "
                               "pick another --run_dir, or pass --force to replace it")
            backup = run_dir.with_name(run_dir.name + ".old")
            shutil.rmtree(backup, ignore_errors=True)
            run_dir.rename(backup)
            console.print(f"--force: moved the old run to {backup}")
    elif run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise LTCError(f"{run_dir} exists, is not empty and has no config.yaml; pick another --run_dir or pass --force")
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
        main = results.get(f"level_{level:02d}")
        if main is None:
            continue
        row = [str(level), f"{100 * main['density']:.1f}", f"{main['test'].get('test/acc', float('nan')):.4f}"]
        for branch in branches:
            res = results.get(f"{branch}/level_{level:02d}")
            if res is None:
                row.append("-")
            elif branch == "instability":
                row.append(f"{100 * res['instability']['barrier_vs_mean']:.2f}")
            else:
                row.append(f"{res['test'].get('test/acc', float('nan')):.4f}")
        table.add_row(*row)
    console.print(table)


def main(argv: list[str]) -> int:
    quiet_libraries()
    parser = build_parser()
    cfg = parse(parser, argv)
    experiment_id = f"{cfg.experiment}-{config_hash(identity(cfg))}"
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg.experiment, cfg)
    imp_cfg = ImpConfig(**vars(cfg.imp))
    imp_cfg.validate(cfg.trainer.max_steps)
    env = LightningEnvironment(parser, cfg, run_dir, experiment_id)
    driver = IMPDriver(run_dir, imp_cfg, env)
    env.check()
    prepare_run_dir(run_dir, cfg, parser, cfg.force)
    if not is_global_zero():
        driver.run()
        return 0
    console.print(f"run dir: {run_dir}   experiment: {experiment_id}   W&B: {env.wandb_mode}")
    results = driver.run()
    print_table(results, imp_cfg.levels, imp_cfg.branches)
    if env.wandb_mode == "offline":
        console.print(f"W&B offline runs are in {run_dir / 'wandb'}; upload with `wandb sync {run_dir / 'wandb'}/offline-run-*`")
    return 0
