"""The LightningModule shape every task shares: a wrapped `net` (the thing IMP prunes) and its optimiser.

IMP builds a fresh task per level, so the optimiser and scheduler are fresh too. Mask keys are
parameter names of `task.net` (e.g. `layers.0.weight`), never of the wrapper.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader

from lth.errors import LTCError


class Task(pl.LightningModule):
    """Base task: holds `net`, builds the optimiser and an optional warm-up + cosine schedule.

    Args:
        net: the network to train and prune.
        optimizer: `adam`, `adamw` or `sgd`.
        lr: learning rate.
        weight_decay: L2 (sgd, adam) or decoupled (adamw) weight decay.
        momentum: SGD momentum.
        scheduler: `constant`, `cosine` (decays to 0 at `trainer.max_steps`) or `multistep`
            (multiplies the rate by `gamma` at each step in `milestones`, as the ResNet/VGG recipes do).
        warmup_steps: linear warm-up length in optimiser steps.
        milestones: optimiser steps of the `multistep` decays.
        gamma: the `multistep` decay factor.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: str = "constant",
        warmup_steps: int = 0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "adamw", "sgd"):
            raise LTCError(f"unknown optimizer {optimizer!r}: use adam, adamw or sgd")
        if scheduler not in ("constant", "cosine", "multistep"):
            raise LTCError(f"unknown scheduler {scheduler!r}: use constant, cosine or multistep")
        if lr <= 0:
            raise LTCError(f"lr must be positive, got {lr}")
        self.net = net
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.milestones = sorted(milestones or [])
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

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
        params = [p for p in self.net.parameters() if p.requires_grad]
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "constant" and self.warmup_steps == 0:
            return opt
        total = max(int(self.trainer.max_steps or 0), 1) if self.trainer else 1
        warmup, name = self.warmup_steps, self.scheduler_name

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if name == "multistep":
                return self.gamma ** sum(step >= m for m in self.milestones)
            if name == "constant":
                return 1.0
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
