"""The iterative magnitude pruning driver (Frankle & Carbin 2019; rewinding: Frankle et al. 2020).

Level 0 trains the dense network from theta_0 and captures theta_k at step k (k = 0: theta_0).
Level L prunes `prune_fraction` of the weights that survived level L-1, using level L-1's
*trained* magnitudes, rewinds the survivors to theta_k and trains again with a fresh task
(fresh optimiser and scheduler): one `Trainer.fit` per level. After each level its branches
(`lth.branches`: the controls, the instability copy) run on the same sparsity; a line branch
(the rotated line) is a whole second IMP line run after the first. Everything lands in the run
directory (`lth.layout`, docs/architecture.md). Levels with a `DONE` manifest are skipped (after
checking every artifact's checksum), an unfinished one resumes from its last checkpoint,
bitwise as if never stopped on the CPU.

Multi-process runs (Lightning DDP) execute this driver in every process. Only global rank 0
writes; every rank computes each mask itself from the same saved files (deterministic CPU code,
checked equal across ranks at the start of fit), because no process group exists before fit to
broadcast one.

The driver knows nothing of data, models or W&B: an `Environment` supplied by the caller
builds tasks, trainers' extra callbacks and loggers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Protocol

import pytorch_lightning as pl
import torch

from lth import rundir
from lth.basis import BasisChange
from lth.branches import Branch, LineBranch
from lth.branches.base import BranchContext, JobPlan, State
from lth.callbacks import (
    AtomicCheckpoint,
    DivergenceGuard,
    EvalRecorder,
    MaskAgreement,
    RewindCapture,
    StepSeed,
    resumable_checkpoint,
)
from lth.config import ImpConfig
from lth.data_order import step_indexed_loader
from lth.enforce import MaskCallback
from lth.errors import LTCError
from lth.jobs import Job, JobCounter, branches_at, job_count, secondary_lines
from lth.layout import CHECKPOINTS, LAST_CHECKPOINT, JobFiles, RunLayout
from lth.masks import (
    Mask,
    apply_mask,
    density,
    full_mask,
    layer_density,
    load_mask,
    save_mask,
    validate_mask,
)
from lth.pruning import magnitude_prune, resolve_rates, select_prunable
from lth.seeds import generator

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_global_zero() -> bool:
    """Whether this process owns the run directory: global rank 0 of a multi-process launch.

    Known before any Trainer exists from the launcher's environment (Lightning's own launcher,
    torchrun, SLURM): a process with a non-zero rank, local rank or node rank is not rank 0.
    """
    return all(int(os.environ.get(name) or 0) == 0 for name in RANK_VARIABLES)


class Environment(Protocol):
    """What the driver needs from the experiment: init and controls seeded by `seed`, the
    training data order by `data_order_seed`."""

    seed: int
    data_order_seed: int
    datamodule: pl.LightningDataModule
    trainer_kwargs: dict

    def make_task(self, overrides: dict | None = None) -> pl.LightningModule:
        """A fresh task with a `net` attribute, randomly initialised from the current RNG state;
        `overrides` replace task arguments (optimiser settings) of the recipe."""

    def make_callbacks(self, job: Job) -> list[pl.Callback]:
        """Extra callbacks for this job (spectra, progress...)."""

    def make_logger(self, job: Job):
        """A Lightning logger for this job, or None."""

    def finish_logger(self, logger, job: Job, metrics: dict | None) -> None:
        """Close the job's logger (one W&B run per job, finished before the next); `metrics` are
        the finished job's (its files are written), None when the job failed."""

    def report(self, job: Job, metrics: dict, skipped: bool) -> None:
        """Called once per job when it is finished (or found finished)."""

    def rotate(self, net: torch.nn.Module, generator: torch.Generator) -> None:
        """Change the net's basis in place without changing its function (the rotated line)."""

    def basis_change(self, seed: int, rotate: bool = True) -> BasisChange:
        """A function-preserving random change of the net's basis (`lth.basis`), drawn from `seed`;
        `rotate=False`: the same change with the identity (the control arm)."""

    def test_error(self, task: pl.LightningModule, device: torch.device) -> float:
        """Test error (1 - accuracy) of the task's net as loaded, on `device` (the instability
        branch; a net with BatchNorm gets its statistics recomputed first)."""


class IMPDriver:
    """Runs levels 0..L and their branches inside `run_dir`, resuming where it stopped."""

    def __init__(self, run_dir: Path, config: ImpConfig, env: Environment, line: LineBranch | None = None,
                 counter: JobCounter | None = None) -> None:
        """`line` is a secondary IMP line (its jobs are `<line>/level_LL`); None = the ticket line.
        `counter` numbers the jobs of the whole experiment (a secondary line shares the first's)."""
        self.layout, self.cfg, self.env, self.line = RunLayout(run_dir), config, env, line
        self.counter = counter
        self.cfg.validate(int(env.trainer_kwargs.get("max_steps") or 0))
        self.net = self.env.make_task().net  # the reference every loaded mask and state is checked against
        self.names = self._prunable_names()  # fails early on patterns that match nothing
        self.results: dict[str, dict] = {}

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    @property
    def line_name(self) -> str | None:
        return None if self.line is None else self.line.name

    # ---- weights -------------------------------------------------------------------------
    def _theta0(self) -> State:
        path = self.layout.init
        if path.exists():
            return self._state(path)
        pl.seed_everything(self.env.seed, verbose=False)
        net = self.env.make_task().net
        if self.line is not None:
            self.line.transform(self.env, net, generator(self.env.seed, self.line.name))
        if is_global_zero():  # other ranks build the same weights from the same seed
            rundir.save_tensors(path, net.state_dict())
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def _theta_k(self) -> State:
        if self.cfg.rewind_step == 0:
            return self._theta0()
        path = self.layout.rewind
        if not path.exists():
            raise LTCError(f"{path} is missing although level 0 is finished; delete level 0 to recompute it")
        return self._state(path)

    def _trained(self, files: JobFiles) -> State:
        return self._state(rundir.verify(files.dir, files.weights.name))

    def _fresh_init(self, seed: int) -> State:
        pl.seed_everything(seed, verbose=False)
        return self.env.make_task().net.state_dict()

    def _state(self, path: Path) -> State:
        """A saved state dict, checked to fit this config's network."""
        state = rundir.load_tensors(path)
        expected = {k: tuple(v.shape) for k, v in self.net.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != expected:
            diff = sorted(set(found.items()) ^ set(expected.items()))[:3]
            raise LTCError(f"{path} holds the weights of another model (differences: {diff}); "
                           "it belongs to another config: delete it (or its level) to recompute it")
        return state

    def _prunable_names(self) -> list[str]:
        names = select_prunable(self.net, self.cfg.include, self.cfg.ignore)
        resolve_rates(names, self.cfg.prune_fraction, self.cfg.rate_overrides)  # fail early on bad patterns
        return names

    # ---- masks ---------------------------------------------------------------------------
    def _mask(self, files: JobFiles) -> Mask:
        """A finished job's mask, checked against its checksum and this config's network."""
        mask = load_mask(rundir.verify(files.dir, files.mask.name))
        validate_mask(mask, self.net)
        if sorted(mask) != sorted(self.names):
            raise LTCError(f"{files.mask} covers other tensors than this config prunes; "
                           f"it belongs to another config: delete {files.dir} to recompute it")
        return mask

    def _level_mask(self, level: int) -> Mask:
        if level == 0:
            return full_mask(self.net, self.names)
        prev = self.layout.job(level - 1)
        return magnitude_prune(self._trained(prev), self._mask(prev), self.cfg.prune_fraction,
                               self.cfg.strategy, self.cfg.rate_overrides)

    # ---- running -------------------------------------------------------------------------
    def run(self) -> dict[str, dict]:
        if is_global_zero():  # leftovers of a write interrupted at the top (init, rewind, config)
            for path in self.run_dir.glob("*"):
                if rundir.is_temporary(path):
                    path.unlink()
        self._theta0()
        if self.counter is None:
            self.counter = JobCounter(job_count(self.cfg))
        for level in range(self.cfg.levels + 1):
            files = self.layout.job(level)
            if rundir.is_done(files.dir):
                self._skip(self._job(level, self.line_name, files, self._mask(files)))
            else:
                mask = self._level_mask(level)
                start = None if level == 0 else apply_mask(self._theta_k(), mask)
                self._train(self._job(level, self.line_name, files, mask), JobPlan(mask, start))
            for branch in branches_at(self.cfg, level):
                self._run_branch(branch, level)
        for line in secondary_lines(self.cfg) if self.line is None else []:
            line_cfg = dataclasses.replace(self.cfg, rotation=False, branches=[])
            driver = IMPDriver(self.layout.line(line.name).root, line_cfg, self.env, line=line, counter=self.counter)
            self.results.update(driver.run())
        return self.results

    def _job(self, level: int, branch: str | None, files: JobFiles, mask: Mask) -> Job:
        """The job, numbered among the experiment's; a line's dense level also completes theta_0/theta_k."""
        job = Job(level, branch, files, mask, self.counter.next(self.cfg.levels))
        if level == 0 and branch == self.line_name:
            job.run_files["theta_0"] = self.layout.init
            if self.cfg.rewind_step > 0:
                job.run_files["theta_k"] = self.layout.rewind
        return job

    def _run_branch(self, branch: Branch, level: int) -> None:
        files = self.layout.job(level, branch.name)
        if rundir.is_done(files.dir):
            self._skip(self._job(level, branch.name, files, self._mask(files)))
            return
        ticket_files = self.layout.job(level)
        context = BranchContext(
            name=branch.name, level=level, seed=self.env.seed, data_order_seed=self.env.data_order_seed,
            ticket=self._mask(ticket_files), theta_k=self._theta_k,
            ticket_weights=lambda: self._trained(ticket_files),
            dense_weights=lambda: self._trained(self.layout.job(0)), fresh_init=self._fresh_init,
            test_error=self.env.test_error, basis_change=self.env.basis_change,
            instability_points=self.cfg.instability_points, sgd_lr=self.cfg.basis_sgd_lr,
            sgd_weight_decay=self.cfg.basis_sgd_weight_decay)
        plan = branch.plan(context)
        self._train(self._job(level, branch.name, files, plan.mask), plan)

    def _skip(self, job: Job) -> None:
        rundir.verify_all(job.dir)  # a finished level is trusted only whole
        metrics = json.loads(job.files.metrics.read_text())
        if is_global_zero():  # a stop between `DONE` and the checkpoint's removal leaves it behind
            shutil.rmtree(job.dir / CHECKPOINTS, ignore_errors=True)
        self.results[job.name] = metrics
        self.env.report(job, metrics, skipped=True)

    def _callbacks(self, job: Job) -> list[pl.Callback]:
        callbacks: list[pl.Callback] = [StepSeed(self.env.seed), DivergenceGuard(), MaskAgreement(job.mask),
                                        MaskCallback(job.mask)]
        if job.level == 0 and job.branch == self.line_name and self.cfg.rewind_step > 0:
            callbacks.append(RewindCapture(self.cfg.rewind_step, self.layout.rewind))
        return callbacks + self.env.make_callbacks(job)

    def _train(self, job: Job, plan: JobPlan) -> None:
        """Train one job from `plan.start` (None = theta_0) and write its artifacts, `DONE` last.

        A branch's plan may replace the data order and optimiser settings, prepare the net, and
        `finish(task, trainer, logger)` measures something of the trained job, stored in
        metrics.json under the branch's name.
        """
        task = self.env.make_task(plan.task_overrides)
        if plan.prepare is not None:
            plan.prepare(task.net)
        validate_mask(job.mask, task.net)
        task.net.load_state_dict(self._theta0() if plan.start is None else plan.start)
        ckpt = job.files.checkpoint
        if is_global_zero():
            _clear_unfinished(job.dir)
            rundir.atomic_write(job.files.mask, lambda tmp: save_mask(tmp, job.mask))
            ckpt.parent.mkdir(exist_ok=True)
        resume = resumable_checkpoint(ckpt)
        recorder = EvalRecorder()
        callbacks = [*self._callbacks(job), recorder]
        logger = self.env.make_logger(job)
        finished: dict | None = None
        try:
            if logger is not None:
                sparsity = {"sparsity/global": 1.0 - density(job.mask)}
                sparsity.update({f"sparsity/{n}": 1.0 - d for n, d in layer_density(job.mask).items()})
                logger.log_metrics(sparsity, step=0)
            checkpointer = AtomicCheckpoint(ckpt, self.cfg.checkpoint_every_n_steps, sampler=None)
            trainer = pl.Trainer(**self.env.trainer_kwargs, callbacks=[*callbacks, checkpointer],
                                 logger=logger or False, enable_checkpointing=False,
                                 use_distributed_sampler=False, default_root_dir=str(job.dir))
            dm = self.env.datamodule
            dm.prepare_data()
            dm.setup("fit")
            order = self.env.data_order_seed if plan.data_order_seed is None else plan.data_order_seed
            train, checkpointer.sampler = step_indexed_loader(dm.train_dataloader(), order, trainer.max_steps,
                                                              trainer.global_rank, trainer.world_size)
            pl.seed_everything(self.env.seed, verbose=False)
            started = time.perf_counter()
            try:
                trainer.fit(task, train_dataloaders=train, val_dataloaders=dm.val_dataloader(),
                            ckpt_path=resume, weights_only=True)
            except FloatingPointError as exc:
                self._fail(job, trainer, exc)
            train_time = time.perf_counter() - started
            dm.setup("test")
            tested = trainer.test(task, dataloaders=dm.test_dataloader(), verbose=False)[0]
            extra = {} if plan.finish is None else {job.branch: plan.finish(task, trainer, logger)}
            metrics = {
                "job": job.name,
                "level": job.level,
                "branch": job.branch,
                "density": density(job.mask),
                "layer_density": layer_density(job.mask),
                "evaluations": recorder.evaluations,
                "test": {k: float(v) for k, v in tested.items()},
                "steps": trainer.global_step,
                "train_time_s": train_time,
                **extra,
            }
            if trainer.is_global_zero:
                rundir.save_tensors(job.files.weights, task.net.state_dict())
                rundir.write_json(job.files.metrics, metrics)
                rundir.mark_done(job.dir, job.files.artifacts())
                shutil.rmtree(ckpt.parent, ignore_errors=True)
            trainer.strategy.barrier("level written")  # the other ranks read these files next
            finished = metrics
        finally:
            if logger is not None:
                self.env.finish_logger(logger, job, finished)
        self.results[job.name] = metrics
        self.env.report(job, metrics, skipped=False)

    def _fail(self, job: Job, trainer: pl.Trainer, exc: FloatingPointError) -> None:
        """Mark a diverged job failed in its `metrics.json` (no `DONE`) and stop the run."""
        if trainer.is_global_zero:
            rundir.write_json(job.files.metrics, {
                "job": job.name, "level": job.level, "branch": job.branch, "density": density(job.mask),
                "diverged": True, "step": trainer.global_step, "error": str(exc)})
        raise LTCError(f"{job.name} diverged ({exc}); the level is marked failed in {job.files.metrics}: "
                       "lower the learning rate or clip gradients (trainer.gradient_clip_val), "
                       "in a new run dir") from exc


def _clear_unfinished(directory: Path) -> None:
    """Remove what an interrupted attempt at this job left behind (artifacts written before its
    `DONE`, temporary files), keeping only the resumable checkpoint."""
    for path in [*directory.glob("*"), *directory.glob(f"{CHECKPOINTS}/*")]:
        if path.is_file() and path.name != LAST_CHECKPOINT:
            path.unlink()
