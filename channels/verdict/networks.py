"""What the tests that run networks need from the experiment: the runs' networks rebuilt with
their saved weights, and held-out labelled data (`NetworkSource`, implemented by
`experiments.report.networks`)."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from channels.verdict.rundata import RunData


class NetworkSource(Protocol):
    def net(self, run: RunData, level: int | str) -> nn.Module:
        """The run's network with a level's trained weights (or "init": theta_0), in eval mode."""

    def evaluation_set(self, run: RunData) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out inputs and labels of the run's data (the validation split)."""
