"""The Lightning callbacks every IMP job trains with: what makes a level exact to resume, safe
to run on several processes, and recorded.

- `StepSeed`: in-step randomness is a function of (seed, step, rank);
- `AtomicCheckpoint` (+ `resumable_checkpoint`): a resumable `last.ckpt`, written by rename;
- `RewindCapture`: theta_k at step k;
- `DivergenceGuard`: a non-finite loss stops every rank together;
- `MaskAgreement`: every rank trains the same mask;
- `EvalRecorder`: every validation result, for `metrics.json`.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from lth import rundir
from lth.data_order import StepBatchSampler
from lth.errors import LTCError
from lth.masks import Mask
from lth.seeds import derive_seed


class RewindCapture(pl.Callback):
    """Saves the net's state at optimiser step k as the run's rewind weights (theta_k)."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.step and not self.path.exists() and trainer.is_global_zero:
            rundir.save_tensors(self.path, pl_module.net.state_dict())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._capture(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._capture(trainer, pl_module)


class StepSeed(pl.Callback):
    """Seeds torch, numpy and `random` at the start of every training step from (seed, step, rank).

    Randomness drawn inside a step (dropout, random probes) is then a function of the step alone,
    so a level resumed from a checkpoint draws exactly what an uninterrupted one would, whatever
    the data loaders and validation drew from the global generators in between.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seed = derive_seed(self.seed, trainer.global_step, trainer.global_rank)
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds every lazy device
        if torch.cuda.is_initialized():  # backend, recording a stack trace each: 0.5 ms a step on a CPU
            torch.cuda.manual_seed_all(seed)
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
        self.mask = mask

    @cached_property
    def digest(self) -> str:
        """The mask's content hash, computed only when ranks compare it."""
        return rundir.tensors_sha256(self.mask)

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
    """Every n optimiser steps, save a full Lightning checkpoint to `path` by rename.

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
