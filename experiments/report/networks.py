"""The runs' networks and held-out data, rebuilt from each run's config.yaml: what the tests that
run networks need (`channels.verdict.networks.NetworkSource`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from jsonargparse import ArgumentParser, Namespace
from torch import nn

from channels.verdict.rundata import RunData
from experiments.config import imp_parser, instantiate, load_run_config
from lth.errors import LTCError

EVALUATION_SIZE = 2000    # held-out examples the tests read ...
EVALUATION_ROWS = 8192    # ... and at most this many activation rows (a sequence gives one per position):
                          # every frame holds rows x width x probes sensitivities in float64


def run_configs(runs: Sequence[RunData], parser: ArgumentParser) -> dict[RunData, Namespace | None]:
    """Each run's config.yaml, parsed once; None where it cannot be (e.g. hand-written run dirs)."""
    configs: dict[RunData, Namespace | None] = {}
    for run in runs:
        try:
            configs[run] = load_run_config(run.dir, parser=parser)
        except LTCError:
            configs[run] = None
    return configs


class RunNetworks:
    """Builds each run's network (cached per run) and its validation data; `for_runs` gives None
    when a config cannot be rebuilt (e.g. hand-written run dirs)."""

    def __init__(self, configs: dict[RunData, Namespace], parser: ArgumentParser) -> None:
        self.parser, self.configs = parser, configs
        self.built: dict[int, object] = {}
        self.data: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def for_runs(cls, runs: Sequence[RunData], configs: dict[RunData, Namespace | None] | None = None,
                 parser: ArgumentParser | None = None) -> RunNetworks | None:
        """The runs' networks, from `configs` (`run_configs`) where the caller has parsed them already."""
        parser = parser or imp_parser()
        configs = run_configs(runs, parser) if configs is None else configs
        return None if any(cfg is None for cfg in configs.values()) else cls(configs, parser)

    def _built(self, run: RunData):
        if id(run) not in self.built:
            self.built[id(run)] = instantiate(self.parser, self.configs[run])
        return self.built[id(run)]

    def net(self, run: RunData, level: int | str) -> nn.Module:
        net = self._built(run).model.net
        net.load_state_dict(run.init_weights() if level == "init" else run.levels[level].weights)
        return net.eval()

    def evaluation_set(self, run: RunData) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation split's inputs of the network and labels aligned with its outputs (the
        task's `evaluation_pair`: a language model's labels shifted, -100 where not scored); at most
        EVALUATION_SIZE examples and EVALUATION_ROWS label positions (64-token contexts: 128)."""
        if id(run) not in self.data:
            built = self._built(run)
            task, datamodule = built.model, built.data
            if hasattr(datamodule, "evaluation_set"):
                self.data[id(run)] = task.evaluation_pair(datamodule.evaluation_set())
            else:
                datamodule.setup("fit")
                xs, ys, seen = [], [], 0
                for batch in datamodule.val_dataloader():
                    x, y = task.evaluation_pair(batch)
                    xs.append(x)
                    ys.append(y)
                    seen += len(x)
                    if seen >= EVALUATION_SIZE:
                        break
                self.data[id(run)] = (torch.cat(xs)[:EVALUATION_SIZE], torch.cat(ys)[:EVALUATION_SIZE])
            x, y = self.data[id(run)]
            rows_per_example = y[0].numel() if y.dim() > 1 else 1
            keep = max(1, min(len(x), EVALUATION_ROWS // rows_per_example))
            self.data[id(run)] = (x[:keep], y[:keep])
        return self.data[id(run)]
