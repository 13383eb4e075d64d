"""Planted worlds: classification data whose answer to "channels or subcircuits?" is known by
construction, for calibrating the verdict (`ltc calibrate`).

Every world draws x ~ N(0, I_d) (no input coordinate is special by its statistics) and a label
from a fixed random rule; what differs is *where* the rule reads its information:

- `input_subcircuit`: y = argmax A x_S on k = `rank` of the d input coordinates: a privileged,
  sparse set of input weights carries the function (truth: subcircuits, at the input);
- `input_channel`: y = argmax A Q^T x with Q a dense random orthonormal d x r frame: the same
  rule on an r-dimensional subspace spread over every coordinate (truth: channels);
- `hidden_subcircuit`: a teacher h = relu(W x) whose function runs through m = `rank` of its
  units (every other unit is silent), y = argmax A (h - E h); the student's first hidden layer is
  distilled to h, so a handful of particular units carries it (truth: subcircuits, hidden);
- `hidden_channel`: a teacher h = relu(Q z + b), z = P x, with Q a dense random width x r map:
  the hidden representation is a rotated r-dimensional subspace spread over all units,
  y = argmax A z, distilled the same way (truth: channels, in the hidden layer);
- `no_ticket`: every coordinate carries the label (class means dense and far apart), so a random
  sparse network does as well as a magnitude ticket (truth: no ticket).

The world's structure (rule, frame, teacher) is fixed by `world_seed`; the training samples by
`sample_seed`; a run's own `seed_everything` varies only the student's init and data order.
Training batches are (x, y) or, for distilled worlds, (x, y, h) with h the teacher's hidden
activations (`experiments.tasks.planted.PlantedTask` adds the distillation loss).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from channels.verdict.base import CHANNELS, NO_TICKET, SUBCIRCUITS
from experiments.data.splits import TensorSplits
from lth.errors import LTCError

RELU_MEAN = 1 / np.sqrt(2 * np.pi)  # E relu(g), g ~ N(0, 1)
Sample = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class World:
    """A planted world: its truth and its sampler."""

    name: str
    truth: str
    sample: Callable[[np.random.Generator, np.random.Generator, int, int, int, int, int], Sample]


def _frame(rng: np.random.Generator, d: int, r: int) -> np.ndarray:
    """A dense random orthonormal (d, r) frame (QR of a Gaussian)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return q


def _argmax_rule(rng: np.random.Generator, r: int, classes: int) -> np.ndarray:
    return rng.standard_normal((classes, r))


def _input_subcircuit(world, data, n, d, width, classes, k) -> Sample:
    coords = world.choice(d, size=k, replace=False)
    rule = _argmax_rule(world, k, classes)
    x = data.standard_normal((n, d))
    return x, (x[:, coords] @ rule.T).argmax(1), None


def _input_channel(world, data, n, d, width, classes, r) -> Sample:
    frame = _frame(world, d, r)
    rule = _argmax_rule(world, r, classes)
    x = data.standard_normal((n, d))
    return x, (x @ frame @ rule.T).argmax(1), None


def _hidden_subcircuit(world, data, n, d, width, classes, m) -> Sample:
    units = world.choice(width, size=m, replace=False)
    directions = _frame(world, d, m).T  # m orthonormal dense input directions: w_j . x ~ N(0, 1)
    rule = _argmax_rule(world, m, classes)
    x = data.standard_normal((n, d))
    active = np.maximum(x @ directions.T, 0.0)
    h = np.zeros((n, width))
    h[:, units] = active
    return x, ((active - RELU_MEAN) @ rule.T).argmax(1), h


def _hidden_channel(world, data, n, d, width, classes, r) -> Sample:
    project = _frame(world, d, r).T  # z = P x ~ N(0, I_r)
    mix = _frame(world, width, r) * np.sqrt(width / r)  # dense: every unit mixes every latent, unit variance
    rule = _argmax_rule(world, r, classes)
    x = data.standard_normal((n, d))
    z = x @ project.T
    h = np.maximum(z @ mix.T + 1.0, 0.0)  # offset 1: most units in their linear range
    return x, (z @ rule.T).argmax(1), h


def _no_ticket(world, data, n, d, width, classes, rank) -> Sample:
    means = 0.8 * world.standard_normal((classes, d))
    y = data.integers(0, classes, size=n)
    return means[y] + data.standard_normal((n, d)), y, None


WORLDS: dict[str, World] = {w.name: w for w in (
    World("input_subcircuit", SUBCIRCUITS, _input_subcircuit),
    World("input_channel", CHANNELS, _input_channel),
    World("hidden_subcircuit", SUBCIRCUITS, _hidden_subcircuit),
    World("hidden_channel", CHANNELS, _hidden_channel),
    World("no_ticket", NO_TICKET, _no_ticket),
)}


class PlantedDataModule(TensorSplits):
    """One planted world as train / val / test splits (val and test batches are (x, y)).

    Args:
        world: one of `WORLDS`.
        in_features: input dimension d.
        width: the teacher's hidden width (the distilled student layer must have it).
        num_classes: classes of the rule.
        rank: coordinates, subspace dimensions or teacher units the rule reads (k, r or m).
        label_noise: fraction of training labels replaced at random (val and test stay clean).
        num_train: training examples; num_val, num_test: evaluation examples.
        world_seed: seed of the world's structure (its rule, frame, teacher).
        sample_seed: seed of the samples.
        batch_size: training batch size.
        probe_size: validation examples used as the fixed probe set for spectra.
    """

    def __init__(self, world: str = "input_subcircuit", in_features: int = 40, width: int = 64,
                 num_classes: int = 5, rank: int = 4, label_noise: float = 0.0, num_train: int = 4000, num_val: int = 500,
                 num_test: int = 2000, world_seed: int = 0, sample_seed: int = 0, batch_size: int = 128,
                 probe_size: int = 500, num_workers: int = 0) -> None:
        super().__init__(batch_size, probe_size, num_workers, shuffle_seed=sample_seed)
        if world not in WORLDS:
            raise LTCError(f"unknown planted world {world!r}: use one of {', '.join(WORLDS)}")
        if not 1 <= rank <= min(in_features, width):
            raise LTCError(f"rank must be in [1, min(in_features, width)] = [1, {min(in_features, width)}], got {rank}")
        if not 0 <= label_noise < 1:
            raise LTCError(f"label_noise must be in [0, 1), got {label_noise}")
        if min(num_train, num_val, num_test, batch_size, probe_size) < 1:
            raise LTCError("num_train, num_val, num_test, batch_size and probe_size must be >= 1")
        self.world = WORLDS[world]
        self.in_features, self.width, self.num_classes, self.rank = in_features, width, num_classes, rank
        self.label_noise, self.sizes = label_noise, (num_train, num_val, num_test)
        self.world_seed, self.sample_seed = world_seed, sample_seed

    def _build(self) -> dict[str, TensorDataset]:
        structure = np.random.default_rng([self.world_seed, 0])
        samples = np.random.default_rng([self.world_seed, self.sample_seed, 1])
        total = sum(self.sizes)
        x, y, h = self.world.sample(structure, samples, total, self.in_features, self.width, self.num_classes,
                                    self.rank)
        n_train, n_val, _ = self.sizes
        flip = samples.random(n_train) < self.label_noise
        y = y.copy()
        y[:n_train][flip] = samples.integers(0, self.num_classes, size=int(flip.sum()))
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        train = [xt[:n_train], yt[:n_train]]
        if h is not None:
            train.append(torch.as_tensor(h[:n_train], dtype=torch.float32))
        return {"train": TensorDataset(*train),
                "val": TensorDataset(xt[n_train:n_train + n_val], yt[n_train:n_train + n_val]),
                "test": TensorDataset(xt[n_train + n_val:], yt[n_train + n_val:])}
