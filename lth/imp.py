"""The iterative magnitude pruning driver (Frankle & Carbin 2019; rewinding: Frankle et al. 2020).

Level 0 trains the dense network from theta_0 and captures theta_k at step k (k = 0: theta_0).
Level L prunes `prune_fraction` of the weights that survived level L-1, using level L-1's
*trained* magnitudes, rewinds the survivors to theta_k and trains again with a fresh task
(fresh optimiser and scheduler): one `Trainer.fit` per level. After each level its control
branches run on the same sparsity. Everything lands in the run directory (see DESIGN.md);
the `instability` branch trains a second copy of a level with another data order and
measures the error barrier between the copies (linear mode connectivity). Levels with a `DONE` manifest are skipped (after checking every artifact's checksum), an
unfinished one resumes from its last checkpoint, bitwise as if never stopped on the CPU.

Multi-process runs (Lightning DDP) execute this driver in every process. Only global rank 0
writes; every rank computes each mask itself from the same saved files (deterministic CPU code,
checked equal across ranks at the start of fit), because no process group exists before fit to
broadcast one.

The driver knows nothing of data, models or W&B: an `Environment` supplied by the caller
builds tasks, trainers' extra callbacks and loggers.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pytorch_lightning as pl
import torch

from lth import rundir
from lth.connectivity import error_barrier
from lth.controls import random_mask_like, shuffle_within_tensors
from lth.data_order import StepBatchSampler, step_indexed_loader
from lth.enforce import MaskCallback
from lth.errors import LTCError
from lth.masks import Mask, density, full_mask, layer_density, load_mask, save_mask, validate_mask
from lth.pruning import check_fraction, magnitude_prune, resolve_rates, select_prunable

CONTROLS = ("random_reinit", "random_prune", "shuffle")
BRANCHES = (*CONTROLS, "instability")
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_global_zero() -> bool:
    """Whether this process owns the run directory: global rank 0 of a multi-process launch.

    Known before any Trainer exists from the launcher's environment (Lightning's own launcher,
    torchrun, SLURM): a process with a non-zero rank, local rank or node rank is not rank 0.
    """
    return all(int(os.environ.get(name) or 0) == 0 for name in RANK_VARIABLES)


@dataclass
class ImpConfig:
    """How tickets are found.

    Args:
        levels: pruning levels after the dense level 0 (the run has levels 0..levels).
        prune_fraction: fraction of the *remaining* prunable weights removed at each level.
        rewind_step: k, the optimiser step whose weights survivors are rewound to (0 = init).
        strategy: `global` (one magnitude threshold across tensors) or `layerwise`.
        rate_overrides: glob pattern -> rate, pruned layerwise at that rate (e.g. `out.*: 0.1`).
        include: glob patterns of extra parameters to prune (biases, embeddings...).
        ignore: glob patterns of default-prunable parameters to leave dense.
        branches: branches run at each pruned level: the controls random_reinit, random_prune,
            shuffle, and `instability` (a second copy of the level trained with another data
            order, and the error barrier between the two copies; this one runs at level 0 too).
        branch_levels: levels at which the branches run (default: every pruned level).
        instability_points: points on the line between the two copies where the error is measured.
        checkpoint_every_n_steps: how often an unfinished level saves a resumable checkpoint.
        rotation: also run a whole IMP line on the network with its basis rotated at init
            (function unchanged; `Environment.rotate`), in `branches/rotated/`.
    """

    levels: int = 5
    prune_fraction: float = 0.2
    rewind_step: int = 0
    strategy: str = "global"
    rate_overrides: dict[str, float] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=lambda: list(CONTROLS))
    branch_levels: list[int] | None = None
    instability_points: int = 11
    checkpoint_every_n_steps: int = 200
    rotation: bool = False

    def validate(self, max_steps: int) -> None:
        if self.levels < 0:
            raise LTCError(f"imp.levels must be >= 0, got {self.levels}")
        check_fraction(self.prune_fraction, "imp.prune_fraction")
        if self.strategy not in ("global", "layerwise"):
            raise LTCError(f"unknown imp.strategy {self.strategy!r}: use global or layerwise")
        if self.rewind_step < 0:
            raise LTCError(f"imp.rewind_step must be >= 0, got {self.rewind_step}")
        if max_steps <= 0:
            raise LTCError("trainer.max_steps must be set (> 0): IMP levels are measured in optimiser steps")
        if self.rewind_step > max_steps:
            raise LTCError(f"imp.rewind_step={self.rewind_step} is beyond the training length "
                           f"trainer.max_steps={max_steps}; choose a step in [0, {max_steps}]")
        unknown = [b for b in self.branches if b not in BRANCHES]
        if unknown:
            raise LTCError(f"unknown branch {unknown[0]!r}: use any of {list(BRANCHES)}")
        bad = [lvl for lvl in self.branch_levels or [] if not 1 <= lvl <= self.levels]
        if bad:
            raise LTCError(f"imp.branch_levels {bad} outside the pruned levels 1..{self.levels}")
        if self.checkpoint_every_n_steps < 1:
            raise LTCError("imp.checkpoint_every_n_steps must be >= 1")
        if self.instability_points < 2:
            raise LTCError(f"imp.instability_points must be >= 2 (both copies), got {self.instability_points}")


@dataclass
class Job:
    """One training run: a level of the main line or of a branch."""

    level: int
    branch: str | None
    dir: Path
    mask: Mask

    @property
    def name(self) -> str:
        return f"level_{self.level:02d}" if self.branch is None else f"{self.branch}/level_{self.level:02d}"


class Environment(Protocol):
    """What the driver needs from the experiment: init and controls seeded by `seed`, the
    training data order by `data_order_seed`."""

    seed: int
    data_order_seed: int
    datamodule: pl.LightningDataModule
    trainer_kwargs: dict

    def make_task(self) -> pl.LightningModule:
        """A fresh task with a `net` attribute, randomly initialised from the current RNG state."""

    def make_callbacks(self, job: Job) -> list[pl.Callback]:
        """Extra callbacks for this job (spectra, progress...)."""

    def make_logger(self, job: Job):
        """A Lightning logger for this job, or None."""

    def finish_logger(self, logger) -> None:
        """Close the job's logger (one W&B run per job, finished before the next)."""

    def report(self, job: Job, metrics: dict, skipped: bool) -> None:
        """Called once per job when it is finished (or found finished)."""

    def rotate(self, net: torch.nn.Module) -> None:
        """Change the net's basis in place without changing its function (the rotation control)."""

    def test_error(self, task: pl.LightningModule, device: torch.device) -> float:
        """Test error (1 - accuracy) of the task's net as loaded, on `device` (the instability
        branch; a net with BatchNorm gets its statistics recomputed first)."""


class RewindCapture(pl.Callback):
    """Saves the net's state at optimiser step k as the run's `rewind.safetensors`."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.step and not self.path.exists() and trainer.is_global_zero:
            rundir.save_tensors(self.path, pl_module.net.state_dict())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._capture(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._capture(trainer, pl_module)


def _step_seed(*parts: int | str) -> int:
    """A 63-bit seed from the sha256 of the parts (independent streams for neighbouring steps)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


class StepSeed(pl.Callback):
    """Seeds torch, numpy and `random` at the start of every training step from (seed, step, rank).

    Randomness drawn inside a step (dropout, random probes) is then a function of the step alone,
    so a level resumed from a checkpoint draws exactly what an uninterrupted one would, whatever
    the data loaders and validation drew from the global generators in between.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seed = _step_seed(self.seed, trainer.global_step, trainer.global_rank)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)


class DivergenceGuard(pl.Callback):
    """Stops the level with `FloatingPointError` at the first non-finite training loss, on all ranks
    together (a rank that stopped alone would leave the others waiting in a collective)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        finite = loss is None or bool(torch.isfinite(loss).all())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise FloatingPointError(f"non-finite training loss at step {trainer.global_step}")


class MaskAgreement(pl.Callback):
    """With several processes, checks at the start of fit that every rank trains the same mask."""

    def __init__(self, mask: Mask) -> None:
        self.digest = rundir.tensors_sha256(mask)

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.world_size == 1:
            return
        same = trainer.strategy.broadcast(self.digest, src=0) == self.digest
        if not trainer.strategy.reduce_boolean_decision(same, all=True):
            raise RuntimeError("the ranks computed different masks from the same files; "
                               "pruning must be deterministic (please report this)")


def _validates_after_this_batch(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates right after the current training batch (its own test)."""
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


class AtomicCheckpoint(pl.Callback):
    """Every n optimiser steps, save a full Lightning checkpoint to `last.ckpt` by rename.

    It saves where Lightning's own checkpointing does, so that Lightning's loops resume
    consistently: after the training batch, or, when validation follows the batch, after the
    validation (whose results are then in the checkpoint, with `EvalRecorder`'s state). Loading
    moves the step-indexed sampler to the checkpoint's step; with `StepSeed`, the resumed level
    continues exactly where it stopped.
    """

    def __init__(self, path: Path, every_n_steps: int, sampler: StepBatchSampler | None) -> None:
        self.path, self.every, self.sampler = path, every_n_steps, sampler
        self._after_validation = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["world_size"] = trainer.world_size

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        saved = checkpoint.get("world_size", trainer.world_size)
        if saved != trainer.world_size:  # each step's batch is split across the processes
            raise LTCError(f"{self.path} was saved by {saved} processes, this run has {trainer.world_size}: "
                           "resume with the same trainer.devices and num_nodes, or delete it to restart the level")
        self.sampler.start_step = int(checkpoint["global_step"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0 and trainer.global_step < (trainer.max_steps or 0):
            if _validates_after_this_batch(trainer):
                self._after_validation = True
            else:
                self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                tmp.replace(self.path)
        except OSError as exc:
            raise LTCError(f"cannot write the checkpoint {self.path}: {' '.join(str(exc).split())}; "
                           "free disk space, then re-run the same command to resume") from exc


def resumable_checkpoint(path: Path) -> Path | None:
    """`path` if a checkpoint is there, after checking that it loads as plain tensors and types
    (`weights_only`: a pickle that would run code is refused, not run)."""
    if not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types on corrupt or unsafe files
        reason = " ".join(str(exc).split())[:300]
        raise LTCError(f"cannot resume from {path} ({type(exc).__name__}: {reason}); it is corrupt or not a "
                       "checkpoint of this program: delete it to restart that level from its beginning") from exc
    return path


class EvalRecorder(pl.Callback):
    """Collects every validation result with its step, for `metrics.json`."""

    def __init__(self) -> None:
        self.evaluations: list[dict] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.evaluations.append({"step": trainer.global_step, **values})

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluations = list(state_dict["evaluations"])


def _prunable_state(state: dict[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """`state` with every masked tensor multiplied by its mask."""
    out = dict(state)
    for name, m in mask.items():
        out[name] = state[name] * m.to(state[name].dtype)
    return out


class IMPDriver:
    """Runs levels 0..L and their branches inside `run_dir`, resuming where it stopped."""

    def __init__(self, run_dir: Path, config: ImpConfig, env: Environment, line: str | None = None) -> None:
        """`line` names a secondary IMP line (its jobs are `<line>/level_LL`); None = the main line."""
        self.run_dir, self.cfg, self.env, self.line = Path(run_dir), config, env, line
        self.cfg.validate(int(env.trainer_kwargs.get("max_steps") or 0))
        self.net = self.env.make_task().net  # the reference every loaded mask and state is checked against
        self.names = self._prunable_names()  # fails early on patterns that match nothing
        self.results: dict[str, dict] = {}

    # ---- weights -------------------------------------------------------------------------
    def _theta0(self) -> dict[str, torch.Tensor]:
        path = self.run_dir / "init.safetensors"
        if path.exists():
            return self._state(path)
        pl.seed_everything(self.env.seed, verbose=False)
        net = self.env.make_task().net
        if self.line == "rotated":
            self.env.rotate(net)
        if is_global_zero():  # other ranks build the same weights from the same seed
            rundir.save_tensors(path, net.state_dict())
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def _theta_k(self) -> dict[str, torch.Tensor]:
        if self.cfg.rewind_step == 0:
            return self._theta0()
        path = self.run_dir / "rewind.safetensors"
        if not path.exists():
            raise LTCError(f"{path} is missing although level 0 is finished; delete level_00 to recompute it")
        return self._state(path)

    def _trained(self, directory: Path) -> dict[str, torch.Tensor]:
        return self._state(rundir.verify(directory, "weights.safetensors"))

    def _state(self, path: Path) -> dict[str, torch.Tensor]:
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
    def _mask(self, directory: Path) -> Mask:
        """A finished job's mask, checked against its checksum and this config's network."""
        mask = load_mask(rundir.verify(directory, "mask.safetensors"))
        validate_mask(mask, self.net)
        if sorted(mask) != sorted(self.names):
            raise LTCError(f"{directory / 'mask.safetensors'} covers other tensors than this config prunes; "
                           f"it belongs to another config: delete {directory} to recompute it")
        return mask

    def _level_mask(self, level: int, names: list[str]) -> Mask:
        if level == 0:
            return full_mask(self.net, names)
        prev = self.run_dir / f"level_{level - 1:02d}"
        return magnitude_prune(self._trained(prev), self._mask(prev), self.cfg.prune_fraction,
                               self.cfg.strategy, self.cfg.rate_overrides)

    # ---- running -------------------------------------------------------------------------
    def run(self) -> dict[str, dict]:
        names = self.names
        if is_global_zero():  # leftovers of a write interrupted at the top (init, rewind, config)
            for path in self.run_dir.glob("*"):
                if rundir.is_temporary(path):
                    path.unlink()
        self._theta0()
        branch_levels = self.cfg.branch_levels or list(range(1, self.cfg.levels + 1))
        for level in range(self.cfg.levels + 1):
            job_dir = self.run_dir / f"level_{level:02d}"
            if rundir.is_done(job_dir):
                self._skip(Job(level, self.line, job_dir, self._mask(job_dir)))
            else:
                mask = self._level_mask(level, names)
                start = None if level == 0 else _prunable_state(self._theta_k(), mask)
                self._train(Job(level, self.line, job_dir, mask), start)
            for branch in self.cfg.branches:
                if level in branch_levels or (level == 0 and branch == "instability"):
                    self._run_branch(branch, level)
        if self.cfg.rotation:
            line_cfg = ImpConfig(**{**vars(self.cfg), "rotation": False, "branches": []})
            rotated = IMPDriver(self.run_dir / "branches" / "rotated", line_cfg, self.env, line="rotated")
            self.results.update(rotated.run())
        return self.results

    def _run_branch(self, branch: str, level: int) -> None:
        job_dir = self.run_dir / "branches" / branch / f"level_{level:02d}"
        if rundir.is_done(job_dir):
            self._skip(Job(level, branch, job_dir, self._mask(job_dir)))
            return
        ticket = self._mask(self.run_dir / f"level_{level:02d}")
        gen = torch.Generator().manual_seed(self.env.seed * 1000 + level)
        theta_k = self._theta_k()
        if branch == "instability":
            start = None if level == 0 else _prunable_state(theta_k, ticket)
            self._train(Job(level, branch, job_dir, ticket), start, data_order_seed=self.instability_data_order,
                        finish=lambda task, trainer, logger: self._instability(level, task, trainer, logger))
            return
        if branch == "random_reinit":
            pl.seed_everything(self.env.seed + 10_000 + level, verbose=False)
            mask, start = ticket, _prunable_state(self.env.make_task().net.state_dict(), ticket)
        elif branch == "random_prune":
            mask = random_mask_like(ticket, gen)
            start = _prunable_state(theta_k, mask)
        else:
            mask, shuffled = shuffle_within_tensors(ticket, theta_k, gen)
            start = {**theta_k, **shuffled}
        self._train(Job(level, branch, job_dir, mask), start)

    @property
    def instability_data_order(self) -> int:
        """The data order of the instability branch's copy: another stream than the ticket line's."""
        return _step_seed(self.env.data_order_seed, "instability") % 2**31

    def _instability(self, level: int, task: pl.LightningModule, trainer: pl.Trainer, logger) -> dict:
        """The error barrier between the level's ticket (copy a) and the branch's copy b, logged."""
        copy_a = self._trained(self.run_dir / f"level_{level:02d}")
        copy_b = {k: v.detach().cpu().clone() for k, v in task.net.state_dict().items()}
        device = trainer.strategy.root_device
        result = error_barrier(task.net, copy_a, copy_b, lambda net: self.env.test_error(task, device),
                               self.cfg.instability_points)
        if logger is not None:
            logger.log_metrics({f"instability/{k}": result[k] for k in
                                ("barrier", "barrier_vs_mean", "error_a", "error_b")}, step=trainer.global_step)
            if hasattr(logger, "log_table"):
                logger.log_table("instability/line", columns=["alpha", "test_error"],
                                 data=[list(p) for p in zip(result["alphas"], result["errors"])])
        return result

    def _skip(self, job: Job) -> None:
        rundir.verify_all(job.dir)  # a finished level is trusted only whole
        metrics = json.loads((job.dir / "metrics.json").read_text())
        if is_global_zero():  # a stop between `DONE` and the checkpoint's removal leaves it behind
            shutil.rmtree(job.dir / "checkpoints", ignore_errors=True)
        self.results[job.name] = metrics
        self.env.report(job, metrics, skipped=True)

    def _train(self, job: Job, start: dict[str, torch.Tensor] | None, data_order_seed: int | None = None,
               finish: Callable[[pl.LightningModule, pl.Trainer, object], dict] | None = None) -> None:
        """Train one job from `start` (None = theta_0) and write its artifacts, `DONE` last.

        `data_order_seed` replaces the environment's; `finish(task, trainer, logger)` measures
        something of the trained job, stored in metrics.json under the branch's name.
        """
        task = self.env.make_task()
        validate_mask(job.mask, task.net)
        task.net.load_state_dict(self._theta0() if start is None else start)
        ckpt = job.dir / "checkpoints" / "last.ckpt"
        if is_global_zero():
            _clear_unfinished(job.dir)
            rundir.atomic_write(job.dir / "mask.safetensors", lambda tmp: save_mask(tmp, job.mask))
            ckpt.parent.mkdir(exist_ok=True)
        resume = resumable_checkpoint(ckpt)

        recorder = EvalRecorder()
        callbacks: list[pl.Callback] = [StepSeed(self.env.seed), DivergenceGuard(), MaskAgreement(job.mask),
                                        MaskCallback(job.mask), recorder]
        if job.level == 0 and job.branch == self.line and self.cfg.rewind_step > 0:
            callbacks.append(RewindCapture(self.cfg.rewind_step, self.run_dir / "rewind.safetensors"))
        callbacks += self.env.make_callbacks(job)
        logger = self.env.make_logger(job)
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
            train, checkpointer.sampler = step_indexed_loader(
                dm.train_dataloader(), self.env.data_order_seed if data_order_seed is None else data_order_seed,
                trainer.max_steps,
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
            extra = {} if finish is None else {job.branch: finish(task, trainer, logger)}
        finally:
            if logger is not None:
                self.env.finish_logger(logger)
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
            rundir.save_tensors(job.dir / "weights.safetensors", task.net.state_dict())
            rundir.write_json(job.dir / "metrics.json", metrics)
            files = ["mask.safetensors", "weights.safetensors", "metrics.json"]
            files += [f for f in ("spectra.npz",) if (job.dir / f).exists()]
            rundir.mark_done(job.dir, files)
            shutil.rmtree(ckpt.parent, ignore_errors=True)
        trainer.strategy.barrier("level written")  # the other ranks read these files next
        self.results[job.name] = metrics
        self.env.report(job, metrics, skipped=False)

    def _fail(self, job: Job, trainer: pl.Trainer, exc: FloatingPointError) -> None:
        """Mark a diverged job failed in its `metrics.json` (no `DONE`) and stop the run."""
        if trainer.is_global_zero:
            rundir.write_json(job.dir / "metrics.json", {
                "job": job.name, "level": job.level, "branch": job.branch, "density": density(job.mask),
                "diverged": True, "step": trainer.global_step, "error": str(exc)})
        raise LTCError(f"{job.name} diverged ({exc}); the level is marked failed in {job.dir / 'metrics.json'}: "
                       "lower the learning rate or clip gradients (trainer.gradient_clip_val), "
                       "in a new run dir") from exc


def _clear_unfinished(directory: Path) -> None:
    """Remove what an interrupted attempt at this job left behind (artifacts written before its
    `DONE`, temporary files), keeping only the resumable checkpoint."""
    for path in [*directory.glob("*"), *directory.glob("checkpoints/*")]:
        if path.is_file() and path.name != "last.ckpt":
            path.unlink()
