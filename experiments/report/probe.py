"""Site activations of runs' networks on one shared probe set, for the tests that compare networks
of different inits (they need activations, which the run directories do not store)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from channels.covariance import rows_from_activation
from channels.rundata import RunData
from channels.sites import run_sites
from experiments.config import imp_parser, instantiate, load_run_config
from experiments.environment import probe_inputs
from lth.errors import LTCError


class ProbeActivations:
    """Site activations of a run's networks (a level's trained weights, or "init") on one probe.

    Networks are rebuilt from each run's config.yaml; the probe is the first run's. `for_runs`
    returns None when the configs cannot be rebuilt (e.g. hand-written run dirs).
    """

    def __init__(self, configs: dict[RunData, object], probe, sites: list[str]) -> None:
        self.parser, self.configs, self.probe, self.sites = imp_parser(), configs, probe, sites
        self.cache: dict[tuple[int, object], dict[str, np.ndarray]] = {}
        self.nets: dict[int, torch.nn.Module] = {}

    @classmethod
    def for_runs(cls, runs: Sequence[RunData]) -> ProbeActivations | None:
        try:
            configs = {run: load_run_config(run.dir) for run in runs}
            first = instantiate(imp_parser(), configs[runs[0]])
        except LTCError:
            return None
        sites = list(first.spectra.sites)
        if not sites:
            return None
        return cls(configs, probe_inputs(first.data, first.spectra.probe_size), sites)

    def __call__(self, run: RunData, which) -> dict[str, np.ndarray]:
        key = (id(run), which)
        if key not in self.cache:
            if id(run) not in self.nets:
                self.nets[id(run)] = instantiate(self.parser, self.configs[run]).model.net
            net = self.nets[id(run)]
            net.load_state_dict(run.init_weights() if which == "init" else run.levels[which].weights)
            net.eval()
            with torch.no_grad():
                acts = run_sites(net, self.probe, self.sites)
            self.cache[key] = {name: rows_from_activation(a, 1 if a.ndim == 4 else None).double().numpy()
                               for name, a in acts.items()}
        return self.cache[key]
