"""Image/signal classification: cross-entropy loss, torchmetrics accuracy, chance accuracy of the test split."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from experiments.tasks.base import MajorityChance, Task


class ClassificationTask(Task):
    """Trains `net` with cross-entropy (optimiser arguments: `OptimConfig`); logs `train/loss`, `val/loss`,
    `val/acc`, `test/loss`, `test/acc` and `test/chance` (the test split's most frequent class share)."""

    def __init__(self, net: nn.Module, num_classes: int = 10, **optim) -> None:
        super().__init__(net, **optim)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.test_chance = MajorityChance(num_classes)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)  # a non-finite loss stops every rank together (DivergenceGuard)
        self.log_step("train/loss", loss, prog_bar=True)
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
        self.test_chance.update(batch[1])
        self.log("test/chance", self.test_chance)
