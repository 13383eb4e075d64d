"""What the tests that run networks need from the experiment: the runs' networks rebuilt with
their saved weights, and held-out labelled data (`NetworkSource`, implemented by
`experiments.report.networks`; for sequence models the targets are aligned with the network's
outputs, -100 where a position is not scored); and `DenseReader`, which reads each run's dense
network once for every test (in float64, so that reparametrised networks give the same statistics
to 1e-6)."""
from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from channels.units import unknown_units
from channels.verdict.coordinates import Frame, canonical_frame
from channels.verdict.rundata import RunData
from channels.verdict.unit_sites import UnitSite, unit_sites

IGNORE = -100


class NetworkSource(Protocol):
    def net(self, run: RunData, level: int | str) -> nn.Module:
        """The run's network with a level's trained weights (or "init": theta_0), in eval mode."""

    def evaluation_set(self, run: RunData) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out inputs and labels of the run's data (the validation split); for a sequence
        model the labels of the network's output positions, -100 where not scored."""


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

    def scored(self, run: RunData) -> torch.Tensor | None:
        """The output positions the task scores (labels != -100) of a sequence model; None for a
        classifier (one output per input, all scored)."""
        y = self.data(run)[1]
        return None if y.dim() < 2 else y != IGNORE

    def sites(self, run: RunData) -> list[UnitSite]:
        """The run's unit sites: from its network's unit layouts (`unit_sites`)."""
        return unit_sites(run.dense.mask, self.data(run)[0], self.dense(run))

    def unknown(self, runs) -> str | None:
        """`channels.units.unknown_units`'s line for the first run whose network no layout knows."""
        return next((line for run in runs if (line := unknown_units(self.dense(run))) is not None), None)

    def frame(self, run: RunData, site: UnitSite) -> Frame:
        key = (id(run), site.name)
        if key not in self._frames:
            self._frames[key] = canonical_frame(self.dense(run), self.data(run)[0], site.name, site.unit_of(),
                                                scored=self.scored(run))
        return self._frames[key]


def unit_reader(result, runs, networks) -> DenseReader | None:
    """The `DenseReader` of a unit-level test, or None with `result.note` saying it needs the
    networks; a model no unit layout knows is named in the note whatever else runs."""
    source = reader(networks)
    if source is None:
        result.note = "needs the runs' networks (rebuilt from their config.yaml)"
        return None
    result.note = source.unknown(runs) or ""
    return source


def reader(networks) -> DenseReader | None:
    """`networks` as a `DenseReader` (None stays None; a reader is returned as it is)."""
    if networks is None or isinstance(networks, DenseReader):
        return networks
    return DenseReader(networks)
