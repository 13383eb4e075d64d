"""The environment that binds Lightning and W&B to the IMP driver (`lth.driver.Environment`).

It builds, from a parsed recipe, what the driver asks for: fresh tasks, the datamodule, the
trainer's arguments, each job's extra callbacks (the SpectraCallback, the progress bar) and
logger (one W&B run per job, `experiments.environment.wandb_jobs`), the rotation of the rotated line, and the
test error of the instability branch; it prints one line per finished job with the experiment's ETA.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.utilities import move_data_to_device

from channels.callback import SpectraCallback
from channels.spectra import SpectraConfig
from experiments.environment import wandb_jobs
from experiments.config import instantiate
from experiments.environment.progress import ExperimentClock, JobProgress
from experiments.runtime import console
from experiments.settings import WandbConfig, check_wandb_credentials
from experiments.tasks.base import Task
from lth.basis import BasisChange, Identity, InputRotation, ResidualRotation
from lth.connectivity import has_batchnorm, recompute_batchnorm_statistics
from lth.data_order import step_indexed_loader
from lth.driver import is_global_zero
from lth.errors import LTCError
from lth.folding import family
from lth.jobs import Job

BASIS_BRANCHES = "basis_"  # the branches that change the net's basis (`lth.branches._basis`)
BN_BATCHES = 30  # training batches that re-estimate BatchNorm statistics at each point of an instability line


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
        self._spectra: SpectraCallback | None = None
        self.clock = ExperimentClock()
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
        unknown spectra sites, basis branches on a net whose basis they cannot change."""
        self.datamodule.setup("fit")
        if self.spectra.enabled:
            from channels.sites import resolve_sites

            pairs = [site for pair in self.spectra.pairs() for site in pair]
            resolve_sites(self.make_task().net, [*self.spectra.sites, *pairs])
        if any(name.startswith(BASIS_BRANCHES) for name in self.cfg.imp.branches):
            self.basis_change(0)  # a net the basis test cannot change is refused before any training
        if self.cfg.imp.rotation and family(self.make_task().net) is None:
            self.rotate(self.make_task().net, torch.Generator())  # refused in one line

    def make_task(self, overrides: dict | None = None) -> Task:
        model = self.cfg.model.clone()
        for key, value in (overrides or {}).items():
            model.init_args[key] = value
        return self._task_parser.instantiate(Namespace(model=model)).model

    def make_callbacks(self, job: Job) -> list[pl.Callback]:
        self.clock.job_started()
        callbacks: list[pl.Callback] = []
        if self.trainer_kwargs.get("enable_progress_bar"):
            callbacks.append(JobProgress(job, self.clock, console))
        if self.spectra.enabled and (self.spectra.sites or self.spectra.jacobians):
            probe = probe_inputs(self.datamodule, self.spectra.probe_size)
            self._spectra = SpectraCallback(self.spectra, probe, out_path=job.files.spectra)
            callbacks.append(self._spectra)
        return callbacks

    def rotate(self, net, generator: torch.Generator) -> None:
        from channels.units import residual_layout
        from lth.rotation import rotate_residual_basis

        if family(net) is None:
            raise LTCError(f"imp.rotation rotates the residual stream of a GPT-2, GPT-NeoX or Llama language "
                           f"model, got {type(net).__name__}")
        rotate_residual_basis(net, residual_layout(net).slots, generator)

    def basis_change(self, seed: int, rotate: bool = True) -> BasisChange:
        """The basis arms' change (`rotate=False`: their control arm, the same change with the
        identity): for a GPT-2, GPT-NeoX or Llama model the residual stream, its norms folded in
        both arms; for a net that reads its input with a linear layer the input space; any other
        net is refused in one line."""
        net = self.make_task().net
        if family(net) is not None:
            from channels.units import residual_layout

            return ResidualRotation(lambda: self.make_task().net, seed, residual_layout(net).slots, rotate)
        change = InputRotation(net, seed)  # refuses nets whose input layer is not linear
        return change if rotate else Identity()

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
        config = wandb_jobs.job_config(job, self.experiment_id, self.seed, self.data_order_seed, self.run_dir,
                                       self.cfg.clone().as_dict())
        return wandb_jobs.make_logger(self.wandb, self.wandb_mode, self.experiment_id, job, config, self.run_dir)

    def finish_logger(self, logger, job: Job, metrics: dict | None) -> None:
        import wandb

        if metrics is not None and is_global_zero():
            wandb_jobs.record_finished(logger.experiment, job, metrics, self.experiment_id, self.run_dir)
        wandb.finish()

    def report(self, job: Job, metrics: dict, skipped: bool) -> None:
        if not is_global_zero():
            return
        acc = metrics["test"].get("test/acc", float("nan"))
        note = "done earlier" if skipped else f"{metrics['train_time_s']:.1f} s"
        if not skipped and self._spectra is not None:
            note += f", spectra {self._spectra.seconds:.1f} s"
            self._spectra = None
        stability = metrics.get("instability")
        if stability is not None:
            note += (f"; error barrier {100 * stability['barrier_vs_mean']:.2f} points between the copies "
                     f"(test error {stability['error_a']:.4f} / {stability['error_b']:.4f})")
        self.clock.job_finished(skipped, metrics.get("train_time_s"))
        eta = "" if job.position is None or job.position.number == job.position.total else \
            f"   [dim]{job.position.number}/{job.position.total} jobs, {self.clock.eta(job.position)}[/dim]"
        console.print(f"[bold]{job.name:<26}[/bold] {100 * metrics['density']:6.2f}% remaining   "
                      f"test acc {acc:.4f}   ({note}){eta}")


def probe_inputs(datamodule: pl.LightningDataModule, n: int):
    """The datamodule's fixed probe batch (`probe_inputs(n)`), or the first n validation inputs."""
    if hasattr(datamodule, "probe_inputs"):
        return datamodule.probe_inputs(n)
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return inputs[:n]
