"""Config sections shared by the `ltc` commands, as dataclasses (jsonargparse turns them into flags)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from lth.config import run_only
from lth.errors import LTCError


@dataclass
class TrainerConfig:
    """The subset of `pytorch_lightning.Trainer` arguments an experiment sets (fields tagged
    `run_only` say where and how visibly a run trains, not what it computes).

    Args:
        max_steps: optimiser steps per level (IMP measures training in steps).
        val_check_interval: validate every this many steps.
        accelerator: cpu, gpu, auto...
        devices: number of devices (or `auto`).
        strategy: auto, ddp...
        num_nodes: machines in a multi-node launch.
        precision: 32-true, bf16-mixed...
        gradient_clip_val: clip gradients to this norm (None = off).
        log_every_n_steps: how often training scalars are logged.
        deterministic: ask torch for deterministic kernels.
        enable_progress_bar: the per-level training bar.
    """

    max_steps: int = 2000
    val_check_interval: int = 250
    accelerator: str = run_only("cpu")
    devices: int | str = run_only(1)
    strategy: str = run_only("auto")
    num_nodes: int = run_only(1)
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    log_every_n_steps: int = run_only(25)
    deterministic: bool = False
    enable_progress_bar: bool = run_only(True)

    def kwargs(self) -> dict:
        if self.val_check_interval < 1:
            raise LTCError(f"trainer.val_check_interval must be >= 1, got {self.val_check_interval}")
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["val_check_interval"] = min(self.val_check_interval, self.max_steps) if self.max_steps > 0 else 1
        out["check_val_every_n_epoch"] = None
        out["enable_model_summary"] = False
        return out


@dataclass
class WandbConfig:
    """Weights & Biases logging: one run per level and branch, grouped by experiment.

    Args:
        mode: offline (default; sync later with `wandb sync`), online or disabled.
            Unset = the WANDB_MODE environment variable, else offline.
        project: W&B project name.
        entity: W&B entity (team or user), None = your default.
        tags: extra run tags.
    """

    mode: str | None = None
    project: str = "lottery-channels"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)

    def resolved_mode(self) -> str:
        mode = self.mode or os.environ.get("WANDB_MODE") or "offline"
        if mode not in ("offline", "online", "disabled"):
            raise LTCError(f"wandb.mode must be offline, online or disabled, got {mode!r}")
        return mode


def check_wandb_credentials() -> None:
    """Online W&B needs an API key; without one (and no terminal to ask) say so in one line."""
    import wandb

    try:
        wandb.login(verify=False)
    except wandb.errors.UsageError as exc:
        raise LTCError(f"wandb.mode=online needs W&B credentials ({exc}); run `wandb login` or set "
                       "WANDB_API_KEY, or use --wandb.mode offline and `wandb sync` later") from exc
