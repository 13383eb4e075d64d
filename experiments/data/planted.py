"""Planted worlds: classification data whose answer to "channels or subcircuits?" is known by
construction, site by site, for calibrating the verdict (`ltc calibrate`).

Every world draws x ~ N(0, I_d), so no input coordinate is special by its statistics; what differs
is where the label reads its information, and, in the distilled worlds, how a teacher's hidden
layer carries it (the student's first hidden layer `act.0` is distilled to the teacher's h, so the
planted structure holds in the network that IMP prunes). A world plants a truth at the sites it
constructs, and nothing at the others:

- `input_subcircuit`: y = argmax A x_S on k = `rank` of the d coordinates. input: subcircuits.
- `input_channel`: y = argmax A F^T x, F a dense random orthonormal d x r frame. input: channels.
- `hidden_subcircuit`: m = `rank` teacher units h_j = relu(x_{c_j}) carry the label, y = argmax
  A (h_S - E h); a fraction `busy` of the other units is active, relu(w . x + 1/2) on dense
  directions orthogonal to the label's coordinates (independent of the label: variance that is
  not use); the rest are silent.
  input: subcircuits (the label reads m coordinates), act.0: subcircuits.
- `hidden_channel`: z = F^T x, h = s * relu(Q z + 1), Q a dense width x r map (every unit mixes
  every latent), s_j = exp(`unit_scale` * g_j) unequal unit scales (a parametrisation, not a
  structure), y = argmax A z. input: channels, act.0: channels. Rank 1 in 16 units is the narrow
  channel whose best few units carry much of it.
- `mixed`: variant `input_subcircuit` reads k coordinates (r latents of them) through a dense
  teacher layer (input: subcircuits, act.0: channels); variant `hidden_subcircuit` reads a dense
  subspace through r unit-aligned teacher units among busy ones (input: channels, act.0:
  subcircuits).
- `dial`: the frame and the teacher move from coordinate-aligned (alpha = 0: z = x_S, h_i =
  relu(z_i + 1) on r units, the rest silent; subcircuits at input and act.0) to dense (alpha = 1: a
  dense frame and h = relu(Q z + 1); channels at both) along F(alpha) = orth((1 - a) E_S + a G),
  M(alpha) = (1 - a) U + a Q; truths only at the ends.
- `no_ticket`: dense class means, every coordinate carries the label, so far apart
  (`NO_TICKET_SCALE`) that a network reading a random few coordinates separates them: a random
  sparse network does as well as a magnitude ticket (verdict: no ticket).
- `nothing_to_learn`: labels independent of x (verdict: nothing learned).

The world's structure is fixed by `world_seed`, the samples by `sample_seed`; a run's own
`seed_everything` varies only the student's init and data order. Training batches are (x, y) or,
for distilled worlds, (x, y, h) (`experiments.tasks.planted.PlantedTask` adds the distillation).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import TensorDataset

from channels.verdict.base import CHANNELS, MIXED, NO_TICKET, SUBCIRCUITS
from channels.verdict.learned import NOTHING_LEARNED
from experiments.data.splits import TensorSplits
from lth.errors import LTCError

NO_TICKET_SCALE = 2.5  # per coordinate: any 4 coordinates put two class means ~7 apart (1.2 left a random 8% net
#                       1 point below the dense one at d = 24: the world had a ticket, population 20261206)
RELU_MEAN = 1 / np.sqrt(2 * np.pi)  # E relu(g), g ~ N(0, 1)
INPUT, HIDDEN = "input", "act.0"
Sample = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class Spec:
    """A world instance's shape: inputs d, teacher width, classes, rank, and its family's knobs."""

    d: int
    width: int
    classes: int
    rank: int
    busy: float = 0.0
    unit_scale: float = 0.0
    variant: str = "input_subcircuit"
    alpha: float = 0.0
    coords: int = 0  # input coordinates the `mixed` input_subcircuit variant reads (0: `rank` of them)


@dataclass(frozen=True)
class World:
    """A planted world: its per-site truths (and the verdict they make) and its sampler
    (structure rng, sample rng, n, spec) -> (x, y, h or None)."""

    name: str
    truths: Callable[[Spec], dict[str, str]]
    sample: Callable[[np.random.Generator, np.random.Generator, int, Spec], Sample]
    verdict: Callable[[Spec], str] = field(default=lambda spec: "")

    def verdict_truth(self, spec: Spec) -> str:
        """The one-word truth: the preconditions' verdict, or the sites' (mixed when they differ)."""
        fixed = self.verdict(spec)
        if fixed:
            return fixed
        kinds = set(self.truths(spec).values())
        return "" if not kinds else MIXED if len(kinds) > 1 else kinds.pop()


def _frame(rng: np.random.Generator, d: int, r: int) -> np.ndarray:
    """A dense random orthonormal (d, r) frame (QR of a Gaussian)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return q


def _dense_map(rng: np.random.Generator, width: int, r: int) -> np.ndarray:
    """A dense width x r map whose rows have unit norm: every unit mixes every latent, unit variance."""
    q = _frame(rng, width, r)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _rule(rng: np.random.Generator, r: int, classes: int) -> np.ndarray:
    return rng.standard_normal((classes, r))


def _busy(world, x: np.ndarray, h: np.ndarray, free: np.ndarray, fraction: float, read: np.ndarray) -> None:
    """Make `fraction` of the `free` units of h active on dense input directions orthogonal to the
    label's input subspace `read` (d, r): x ~ N(0, I), so they carry nothing about the label."""
    chosen = world.choice(free, size=round(fraction * len(free)), replace=False)
    directions = world.standard_normal((len(chosen), x.shape[1]))
    directions -= directions @ read @ read.T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    h[:, chosen] = np.maximum(x @ directions.T + 0.5, 0.0)


def _input_subcircuit(world, data, n, spec: Spec) -> Sample:
    coords = world.choice(spec.d, size=spec.rank, replace=False)
    rule = _rule(world, spec.rank, spec.classes)
    x = data.standard_normal((n, spec.d))
    return x, (x[:, coords] @ rule.T).argmax(1), None


def _input_channel(world, data, n, spec: Spec) -> Sample:
    frame = _frame(world, spec.d, spec.rank)
    rule = _rule(world, spec.rank, spec.classes)
    x = data.standard_normal((n, spec.d))
    return x, (x @ frame @ rule.T).argmax(1), None


def _circuit_teacher(world, x: np.ndarray, read: np.ndarray, spec: Spec) -> np.ndarray:
    """h: one unit-aligned unit relu(x . read_i) per column of the frame `read` (d, r), at random
    positions, and a `busy` share of the other units active off the frame."""
    units = world.choice(spec.width, size=read.shape[1], replace=False)
    h = np.zeros((len(x), spec.width))
    h[:, units] = np.maximum(x @ read, 0.0)
    _busy(world, x, h, np.setdiff1d(np.arange(spec.width), units), spec.busy, read)
    return h


def _hidden_subcircuit(world, data, n, spec: Spec) -> Sample:
    read = np.eye(spec.d)[:, world.choice(spec.d, size=spec.rank, replace=False)]
    rule = _rule(world, spec.rank, spec.classes)
    x = data.standard_normal((n, spec.d))
    h = _circuit_teacher(world, x, read, spec)
    return x, ((np.maximum(x @ read, 0.0) - RELU_MEAN) @ rule.T).argmax(1), h


def _hidden_channel(world, data, n, spec: Spec) -> Sample:
    frame = _frame(world, spec.d, spec.rank)
    mix = _dense_map(world, spec.width, spec.rank)
    scale = np.exp(spec.unit_scale * world.standard_normal(spec.width))
    rule = _rule(world, spec.rank, spec.classes)
    x = data.standard_normal((n, spec.d))
    z = x @ frame
    return x, (z @ rule.T).argmax(1), scale * np.maximum(z @ mix.T + 1.0, 0.0)


def _mixed(world, data, n, spec: Spec) -> Sample:
    rule = _rule(world, spec.rank, spec.classes)
    x = data.standard_normal((n, spec.d))
    if spec.variant == "input_subcircuit":  # `coords` coordinates -> r latents, read by a dense teacher layer
        coords = world.choice(spec.d, size=spec.coords or spec.rank, replace=False)
        z = x[:, coords] if len(coords) == spec.rank else x[:, coords] @ _frame(world, len(coords), spec.rank)
        h = np.maximum(z @ _dense_map(world, spec.width, spec.rank).T + 1.0, 0.0)
        return x, (z @ rule.T).argmax(1), h
    read = _frame(world, spec.d, spec.rank)  # a dense subspace, through unit-aligned teacher units
    z = x @ read
    return x, ((np.maximum(z, 0.0) - RELU_MEAN) @ rule.T).argmax(1), _circuit_teacher(world, x, read, spec)


def _dial(world, data, n, spec: Spec) -> Sample:
    coords = world.choice(spec.d, size=spec.rank, replace=False)
    aligned = np.eye(spec.d)[:, coords]
    frame, _ = np.linalg.qr((1 - spec.alpha) * aligned + spec.alpha * _frame(world, spec.d, spec.rank))
    units = np.zeros((spec.width, spec.rank))
    units[world.choice(spec.width, size=spec.rank, replace=False), np.arange(spec.rank)] = 1.0
    mix = (1 - spec.alpha) * units + spec.alpha * _dense_map(world, spec.width, spec.rank)
    rule = _rule(world, spec.rank, spec.classes)
    x = data.standard_normal((n, spec.d))
    z = x @ frame
    return x, (z @ rule.T).argmax(1), np.maximum(z @ mix.T + 1.0, 0.0)


def _no_ticket(world, data, n, spec: Spec) -> Sample:
    means = NO_TICKET_SCALE * world.standard_normal((spec.classes, spec.d))
    y = data.integers(0, spec.classes, size=n)
    return means[y] + data.standard_normal((n, spec.d)), y, None


def _nothing_to_learn(world, data, n, spec: Spec) -> Sample:
    return data.standard_normal((n, spec.d)), data.integers(0, spec.classes, size=n), None


def _dial_truths(spec: Spec) -> dict[str, str]:
    kind = SUBCIRCUITS if spec.alpha == 0 else CHANNELS if spec.alpha == 1 else None
    return {INPUT: kind, HIDDEN: kind} if kind else {}


def _mixed_truths(spec: Spec) -> dict[str, str]:
    if spec.variant == "input_subcircuit":
        return {INPUT: SUBCIRCUITS, HIDDEN: CHANNELS}
    return {INPUT: CHANNELS, HIDDEN: SUBCIRCUITS}


WORLDS: dict[str, World] = {w.name: w for w in (
    World("input_subcircuit", lambda s: {INPUT: SUBCIRCUITS}, _input_subcircuit),
    World("input_channel", lambda s: {INPUT: CHANNELS}, _input_channel),
    World("hidden_subcircuit", lambda s: {INPUT: SUBCIRCUITS, HIDDEN: SUBCIRCUITS}, _hidden_subcircuit),
    World("hidden_channel", lambda s: {INPUT: CHANNELS, HIDDEN: CHANNELS}, _hidden_channel),
    World("mixed", _mixed_truths, _mixed),
    World("dial", _dial_truths, _dial),
    World("no_ticket", lambda s: {}, _no_ticket, lambda s: NO_TICKET),
    World("nothing_to_learn", lambda s: {}, _nothing_to_learn, lambda s: NOTHING_LEARNED),
)}
DISTILLED = ("hidden_subcircuit", "hidden_channel", "mixed", "dial")
MIXED_VARIANTS = ("input_subcircuit", "hidden_subcircuit")


class PlantedDataModule(TensorSplits):
    """One planted world as train / val / test splits (val and test batches are (x, y)).

    Args:
        world: one of `WORLDS`.
        in_features: input dimension d.
        width: the teacher's hidden width (the distilled student layer must have it).
        num_classes: classes of the rule.
        rank: coordinates, subspace dimensions or teacher units the rule reads (k, r or m).
        busy: share of a circuit teacher's other units that are active and ignored by the label.
        unit_scale: sigma of the lognormal scales of a dense teacher's units.
        variant: the `mixed` world's variant (`input_subcircuit` or `hidden_subcircuit`).
        coords: input coordinates the `mixed` input_subcircuit variant reads (0: `rank`).
        alpha: the `dial` world's position, 0 (coordinate-aligned) .. 1 (dense).
        label_noise: fraction of training labels replaced at random (val and test stay clean).
        num_train: training examples; num_val, num_test: evaluation examples.
        world_seed: seed of the world's structure (its rule, frame, teacher).
        sample_seed: seed of the samples.
        batch_size: training batch size.
        probe_size: validation examples used as the fixed probe set for spectra.
    """

    def __init__(self, world: str = "input_subcircuit", in_features: int = 40, width: int = 64,
                 num_classes: int = 5, rank: int = 4, busy: float = 0.0, unit_scale: float = 0.0,
                 variant: str = "input_subcircuit", alpha: float = 0.0, coords: int = 0, label_noise: float = 0.0,
                 num_train: int = 4000, num_val: int = 1000, num_test: int = 2000, world_seed: int = 0,
                 sample_seed: int = 0, batch_size: int = 128, probe_size: int = 500, num_workers: int = 0) -> None:
        super().__init__(batch_size, probe_size, num_workers, shuffle_seed=sample_seed)
        if world not in WORLDS:
            raise LTCError(f"unknown planted world {world!r}: use one of {', '.join(WORLDS)}")
        if not 1 <= rank <= min(in_features, width):
            raise LTCError(f"rank must be in [1, min(in_features, width)] = [1, {min(in_features, width)}], got {rank}")
        if not (0 <= label_noise < 1 and 0 <= busy <= 1 and 0 <= alpha <= 1 and unit_scale >= 0):
            raise LTCError(f"need 0 <= label_noise < 1, 0 <= busy <= 1, 0 <= alpha <= 1, unit_scale >= 0; got "
                           f"{label_noise}, {busy}, {alpha}, {unit_scale}")
        if variant not in MIXED_VARIANTS:
            raise LTCError(f"unknown variant {variant!r}: use one of {', '.join(MIXED_VARIANTS)}")
        if min(num_train, num_val, num_test, batch_size, probe_size) < 1:
            raise LTCError("num_train, num_val, num_test, batch_size and probe_size must be >= 1")
        self.world = WORLDS[world]
        self.spec = Spec(in_features, width, num_classes, rank, busy, unit_scale, variant, alpha, coords)
        self.label_noise, self.sizes = label_noise, (num_train, num_val, num_test)
        self.world_seed, self.sample_seed = world_seed, sample_seed

    def _build(self) -> dict[str, TensorDataset]:
        structure = np.random.default_rng([self.world_seed, 0])
        samples = np.random.default_rng([self.world_seed, self.sample_seed, 1])
        x, y, h = self.world.sample(structure, samples, sum(self.sizes), self.spec)
        n_train, n_val, _ = self.sizes
        flip = samples.random(n_train) < self.label_noise
        y = y.copy()
        y[:n_train][flip] = samples.integers(0, self.spec.classes, size=int(flip.sum()))
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        train = [xt[:n_train], yt[:n_train]]
        if h is not None:
            train.append(torch.as_tensor(h[:n_train], dtype=torch.float32))
        return {"train": TensorDataset(*train),
                "val": TensorDataset(xt[n_train:n_train + n_val], yt[n_train:n_train + n_val]),
                "test": TensorDataset(xt[n_train + n_val:], yt[n_train + n_val:])}
