"""Read a finished IMP run directory: its config, its levels and branches, and their artifacts.

Every artifact is checked against its level's `DONE` manifest before it is read, and loaded
only when first asked for (a report touches a few of the many files a run holds).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import yaml

from channels.keys import EIGENVALUES, EIGENVECTORS, SpectrumKey, stored_keys
from channels.spectra import load_npz
from lth import rundir
from lth.errors import LTCError
from lth.layout import DONE, MASK, METRICS, SPECTRA, WEIGHTS, RunLayout, level_name
from lth.masks import Mask, load_mask


@dataclass(eq=False)
class Trained:
    """One finished training of a run: a level of the ticket line or of a branch (a control)."""

    dir: Path
    level: int
    branch: str | None
    metrics: dict

    @property
    def density(self) -> float:
        return float(self.metrics["density"])

    def test_metric(self, name: str = "test/acc") -> float:
        return float(self.metrics.get("test", {}).get(name, float("nan")))

    @cached_property
    def mask(self) -> Mask:
        return load_mask(rundir.verify(self.dir, MASK))

    @cached_property
    def weights(self) -> dict[str, torch.Tensor]:
        return rundir.load_tensors(rundir.verify(self.dir, WEIGHTS))

    @cached_property
    def spectra(self) -> dict[str, np.ndarray] | None:
        """The level's spectra, or None when the run measured none."""
        if SPECTRA not in rundir.read_manifest(self.dir):
            return None
        return load_npz(rundir.verify(self.dir, SPECTRA))


@dataclass(eq=False)
class RunData:
    """A run directory: the resolved config, finished levels and branches (name -> level -> job)."""

    dir: Path
    config: dict
    levels: dict[int, Trained]
    branches: dict[str, dict[int, Trained]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed_everything") or 0)

    @property
    def data_order_seed(self) -> int:
        value = self.config.get("data_order_seed")
        return self.seed if value is None else int(value)

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment", self.dir.name))

    @property
    def name(self) -> str:
        """Short label: `s<seed>` or `s<seed>/d<data order>` when the data order differs."""
        return f"s{self.seed}" if self.data_order_seed == self.seed else f"s{self.seed}/d{self.data_order_seed}"

    @property
    def dense(self) -> Trained:
        return self.levels[0]

    def init_weights(self) -> dict[str, torch.Tensor]:
        return rundir.load_tensors(RunLayout(self.dir).init)

    def line(self, branch: str | None) -> dict[int, Trained]:
        """The ticket line (None) or a branch, by level."""
        return self.levels if branch is None else self.branches.get(branch, {})


def _finished(layout: RunLayout, branch: str | None) -> dict[int, Trained]:
    out: dict[int, Trained] = {}
    for level, directory in layout.level_dirs(branch).items():
        if rundir.is_done(directory):
            metrics = json.loads(rundir.verify(directory, METRICS).read_text())
            out[level] = Trained(directory, level, branch, metrics)
    return out


def load_run(path: str | Path) -> RunData:
    """Read run directory `path`; LTCError when it is no run or has no finished dense level."""
    path = Path(path)
    layout = RunLayout(path)
    if not path.is_dir():
        raise LTCError(f"{path} is not a directory; pass a run directory written by `ltc imp`")
    if not layout.config.is_file():
        raise LTCError(f"{path} is not an IMP run directory (no {layout.config.name}); pass a directory "
                       "written by `ltc imp`")
    try:
        config = yaml.safe_load(layout.config.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LTCError(f"{layout.config} is not valid YAML ({' '.join(str(exc).split())[:200]})") from exc
    levels = _finished(layout, None)
    if not levels:
        raise LTCError(f"{path} has no finished levels (no {level_name(0)}/{DONE}...); let `ltc imp` finish at "
                       "least level 0 first")
    if 0 not in levels:
        raise LTCError(f"{path} has no finished dense level ({level_name(0)}/{DONE}); the ticket tests compare "
                       "against it")
    branches = {name: found for name in layout.branch_names() if (found := _finished(layout, name))}
    return RunData(path, config, levels, branches)


def spectrum_keys(spectra: dict[str, np.ndarray]) -> list[str]:
    """The spectra measured (`channels.keys`: `<site>/cov`, `<a>-><b>/jac`), in file order."""
    return [str(key) for key in stored_keys(spectra)]


def final_eigenvalues(spectra: dict[str, np.ndarray], key: str) -> np.ndarray:
    """The spectrum at the end of training (the last measurement)."""
    return np.asarray(spectra[SpectrumKey.parse(key).field(EIGENVALUES)])[-1]


def top_vectors(spectra: dict[str, np.ndarray], key: str) -> np.ndarray:
    """The final top-k eigenvectors (d, k), as columns."""
    return np.asarray(spectra[SpectrumKey.parse(key).field(EIGENVECTORS)])
