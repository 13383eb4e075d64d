"""What the tests that run networks need from the experiment: the runs' networks rebuilt with
their saved weights, and held-out labelled data (`NetworkSource`, implemented by
`experiments.report.networks`); and `DenseReader`, which reads each run's dense network once for
every test (in float64, so that reparametrised networks give the same statistics to 1e-6)."""
from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from channels.verdict.coordinates import Frame, canonical_frame
from channels.verdict.rundata import RunData
from channels.verdict.unit_sites import UnitSite, unit_sites


class NetworkSource(Protocol):
    def net(self, run: RunData, level: int | str) -> nn.Module:
        """The run's network with a level's trained weights (or "init": theta_0), in eval mode."""

    def evaluation_set(self, run: RunData) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out inputs and labels of the run's data (the validation split)."""


def as_double(x: torch.Tensor) -> torch.Tensor:
    return x.double() if torch.is_floating_point(x) else x


class DenseReader:
    """Each run's dense network (float64, frozen), its held-out data, its unit sites and their
    canonical frames, computed once and shared by the tests."""

    def __init__(self, source: NetworkSource) -> None:
        self.source = source
        self._nets: dict[int, nn.Module] = {}
        self._frames: dict[tuple[int, str], Frame] = {}

    def net(self, run: RunData, level: int | str) -> nn.Module:
        return self.source.net(run, level)

    def evaluation_set(self, run: RunData) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.evaluation_set(run)

    def dense(self, run: RunData) -> nn.Module:
        if id(run) not in self._nets:
            net = copy.deepcopy(self.source.net(run, 0)).double().eval()
            for p in net.parameters():
                p.requires_grad_(False)
            self._nets[id(run)] = net
        return self._nets[id(run)]

    def data(self, run: RunData) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.source.evaluation_set(run)
        return as_double(x), y

    def sites(self, run: RunData) -> list[UnitSite]:
        return unit_sites(run.dense.mask, self.data(run)[0])

    def frame(self, run: RunData, site: UnitSite) -> Frame:
        key = (id(run), site.name)
        if key not in self._frames:
            self._frames[key] = canonical_frame(self.dense(run), self.data(run)[0], site.name)
        return self._frames[key]


def reader(networks) -> DenseReader | None:
    """`networks` as a `DenseReader` (None stays None; a reader is returned as it is)."""
    if networks is None or isinstance(networks, DenseReader):
        return networks
    return DenseReader(networks)
