"""Classification with a distilled hidden layer, for the planted worlds whose structure sits in a
hidden layer (`experiments.data.planted`).

loss = cross-entropy(y) + distill_weight * mean_j (a_j(x) - h_j(x))^2, where a is the student's
activation at `distill_site` and h the teacher's (training batches (x, y, h)); batches (x, y)
train on the cross-entropy alone. Distillation pins the student's hidden basis to the teacher's,
so the planted truth (a few units, or a dense subspace over all units) holds in the network that
IMP prunes, not only in the teacher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from channels.sites import capture
from experiments.tasks.classification import ClassificationTask


class PlantedTask(ClassificationTask):
    """`ClassificationTask` plus the distillation term (optimiser arguments: `OptimConfig`).

    Args:
        net: the student network.
        num_classes: classes of the world's rule.
        distill_site: the student site matched to the teacher's hidden activations.
        distill_weight: weight of the distillation term.
    """

    def __init__(self, net: nn.Module, num_classes: int = 5, distill_site: str = "act.0",
                 distill_weight: float = 1.0, **optim) -> None:
        super().__init__(net, num_classes, **optim)
        self.distill_site, self.distill_weight = distill_site, distill_weight

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if len(batch) == 2:
            return super().training_step(batch, batch_idx)
        x, y, h = batch
        with capture(self.net, [self.distill_site], keep_graph=True) as acts:
            logits = self.net(x)
        ce = F.cross_entropy(logits, y)
        distill = F.mse_loss(acts[self.distill_site], h)
        self.log_step("train/distill", distill)
        self.log_step("train/loss", ce, prog_bar=True)
        return ce + self.distill_weight * distill
