"""The LightningModule shape every task shares: a wrapped `net` (the thing IMP prunes) and its optimiser.

IMP builds a fresh task per level, so the optimiser and scheduler are fresh too. Mask keys are
parameter names of `task.net` (e.g. `layers.0.weight`), never of the wrapper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import Metric

from lth.errors import LTCError


@dataclass
class OptimConfig:
    """The optimiser and learning-rate schedule of a task (its recipe keys sit beside `net` in the
    task's init_args).

    Args:
        optimizer: `adam`, `adamw`, `sgd` or `sgdw` (SGD with decoupled weight decay).
        lr: learning rate.
        weight_decay: L2 (sgd, adam) or decoupled (adamw, sgdw: w <- w (1 - lr * wd) each step)
            weight decay.
        momentum: SGD momentum.
        scheduler: `constant`, `cosine` (decays to 0 at `trainer.max_steps`) or `multistep`
            (multiplies the rate by `gamma` at each step in `milestones`, as the ResNet/VGG recipes do).
        warmup_steps: linear warm-up length in optimiser steps.
        milestones: optimiser steps of the `multistep` decays.
        gamma: the `multistep` decay factor.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "constant"
    warmup_steps: int = 0
    milestones: list[int] | None = None
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd", "sgdw"):
            raise LTCError(f"unknown optimizer {self.optimizer!r}: use adam, adamw, sgd or sgdw")
        if self.scheduler not in ("constant", "cosine", "multistep"):
            raise LTCError(f"unknown scheduler {self.scheduler!r}: use constant, cosine or multistep")
        if self.lr <= 0:
            raise LTCError(f"lr must be positive, got {self.lr}")
        self.milestones = sorted(self.milestones or [])

    def build(self, params, total_steps: int):
        """The optimiser over `params` and, unless the rate is constant, a per-step LambdaLR."""
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        elif self.optimizer == "sgdw":
            opt = DecoupledSGD(params, lr=self.lr, momentum=self.momentum, decay=self.weight_decay)
        else:  # fused: one kernel per tensor; the unfused CPU path's sqrt was measured 5x slower on the
            # zero moments of pruned weights (half of LeNet-300-100's masked step; docs: Performance)
            adam = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
            opt = adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=True)
        if self.scheduler == "constant" and self.warmup_steps == 0:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.factor(step, total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def factor(self, step: int, total_steps: int) -> float:
        """The learning-rate multiplier at optimiser step `step` of `total_steps`."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.scheduler == "multistep":
            return self.gamma ** sum(step >= m for m in self.milestones)
        if self.scheduler == "constant":
            return 1.0
        progress = min((step - self.warmup_steps) / max(total_steps - self.warmup_steps, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _last_step(trainer: pl.Trainer) -> bool:
    """Whether the running training step is the last of the fit (by `max_steps` or `max_epochs`)."""
    if trainer.max_steps > 0 and trainer.global_step + 1 >= trainer.max_steps:
        return True
    return bool(trainer.is_last_batch and trainer.max_epochs and trainer.current_epoch + 1 >= trainer.max_epochs)


class MajorityChance(Metric):
    """Chance accuracy of a split: the accuracy of always predicting its most frequent label,
    max_c n_c / sum_c n_c over the labels seen (labels equal to `ignore` are not scored). Logged
    as `test/chance` beside `test/acc`: an accuracy is evidence of learning only above it."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore: int = -100) -> None:
        super().__init__()
        self.ignore = ignore
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, labels: torch.Tensor) -> None:
        scored = labels[labels != self.ignore].flatten()
        self.counts = self.counts + torch.bincount(scored, minlength=len(self.counts))[: len(self.counts)]

    def compute(self) -> torch.Tensor:
        return (self.counts.max() / self.counts.sum().clamp(min=1)).float()


class DecoupledSGD(torch.optim.SGD):
    """SGD with momentum and decoupled weight decay (Loshchilov & Hutter 2019): each step first
    shrinks every weight by (1 - lr * decay), at the step's learning rate, then takes the SGD step.
    Rotation-equivariant like plain SGD; pruned weights stay at zero."""

    def __init__(self, params, lr: float, momentum: float, decay: float) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        for group in self.param_groups:
            group["decay"] = decay

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the gradient at the current weights, before they shrink
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["decay"]:
                for param in group["params"]:
                    param.mul_(1.0 - group["lr"] * group["decay"])
        super().step()
        return loss


class Task(pl.LightningModule):
    """Base task: holds `net` and its optimiser settings (`OptimConfig`, passed as keyword
    arguments: a recipe's `optimizer`, `lr`, ... keys)."""

    def __init__(self, net: nn.Module, **optim) -> None:
        super().__init__()
        self.net = net
        self.optim = OptimConfig(**optim)
        self.step_metrics: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def log_step(self, name: str, value: torch.Tensor, prog_bar: bool = False) -> None:
        """`self.log` a training-step metric on the steps the loggers write (every
        `trainer.log_every_n_steps`) and on the last step: a `self.log` call costs about as much as a
        small MLP's whole step, and the values logged between those steps are never written. The
        latest value of a `prog_bar` metric is kept in `step_metrics` for the progress display."""
        if prog_bar:
            self.step_metrics[name] = value.detach()
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None)
        if connector is None or connector.should_update_logs or _last_step(trainer):
            self.log(name, value, prog_bar=prog_bar)

    def evaluation_pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs of `net`, labels aligned with its outputs) of one batch, for the ticket tests that
        run the network (`experiments.report.networks`)."""
        return batch[0], batch[1]

    def count_correct(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(number of correct predictions, number of predictions) in one batch."""
        raise NotImplementedError(f"{type(self).__name__} does not define count_correct")

    @torch.no_grad()
    def error_rate(self, loader: DataLoader, device: torch.device) -> float:
        """1 - accuracy of the net over every batch of `loader`, in eval mode on `device`
        (prediction-weighted: sum of wrong / sum of predictions)."""
        self.to(device)
        self.eval()
        correct = total = 0
        for batch in loader:
            right, n = self.count_correct(move_data_to_device(batch, device))
            correct, total = correct + int(right), total + int(n)
        if total == 0:
            raise LTCError("the evaluation set is empty: cannot measure an error rate")
        return 1.0 - correct / total

    def configure_optimizers(self):
        total = max(int(self.trainer.max_steps or 0), 1) if self.trainer else 1
        return self.optim.build([p for p in self.net.parameters() if p.requires_grad], total)
