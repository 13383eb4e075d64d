"""Image/signal classification: cross-entropy loss, torchmetrics accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from experiments.tasks.base import Task


class ClassificationTask(Task):
    """Trains `net` with cross-entropy (optimiser arguments as in `Task`); logs `train/loss`, `val/loss`, `val/acc`, `test/loss`, `test/acc`."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 10,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: str = "constant",
        warmup_steps: int = 0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
    ) -> None:
        super().__init__(net, optimizer, lr, weight_decay, momentum, scheduler, warmup_steps, milestones, gamma)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)  # a non-finite loss stops every rank together (DivergenceGuard)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, split: str, metric: torchmetrics.Metric) -> None:
        x, y = batch
        logits = self.net(x)
        metric(logits, y)
        self.log(f"{split}/loss", F.cross_entropy(logits, y), prog_bar=split == "val")
        self.log(f"{split}/acc", metric, prog_bar=split == "val")

    def count_correct(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return (self.net(x).argmax(-1) == y).sum(), torch.tensor(y.numel())

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)
