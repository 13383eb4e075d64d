"""A planted sequence world of known truth for transformers: a previous-token lookup through a
residual route that is either coordinate-aligned or dense.

Tokens are uniform over a vocabulary of `vocab` symbols, sequences `length` long; at position t
the model must output pi(token at t - 1), pi a fixed random permutation of the symbols (`lookup`;
`copy`: pi = identity): an attention head moves the token and maps it, nothing else carries it.
The permutation matters: the identity map is the same matrix in every basis, a permutation is
sparse in the planted coordinates and dense in a rotated basis. The token embedding, the position embedding and the unembedding
are planted and frozen (`experiments.models.gpt.planted_gpt2`):

- route `subcircuit`: token v writes residual coordinate v, position t coordinate vocab + t, and
  the unembedding reads token v off coordinate v. The information flows through s = vocab + length
  named coordinates of the `width`-wide stream (a privileged basis; the other coordinates carry
  nothing planted).
- route `channel`: the same three matrices times a random orthogonal R that fixes the all-ones
  direction (so it commutes with LayerNorm's centring): the same route in an s-dimensional
  subspace spread over every coordinate. Under SGD from GPT-2's isotropic Gaussian init, the
  trained network is the `subcircuit` one written in the basis R, as nearly as LayerNorm's
  elementwise gains allow.

Truth, per site: at the residual stream (`resid_pre.l`, `resid_post.l`) the route is `subcircuits`
(a few coordinates carry it) or `channels` (a dense subspace carries it); the MLP neurons and the
heads carry no planted truth. `route_check` checks the truth in a trained network: projecting the
residual stream onto the route keeps the loss in both worlds, projecting it onto the first s
coordinates keeps it only where the route is coordinate-aligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from channels.verdict.base import CHANNELS, SUBCIRCUITS
from experiments.data.splits import TensorSplits
from lth.errors import LTCError
from lth.orthogonal import random_rotation_fixing_ones

ROUTES = ("subcircuit", "channel")
TASKS = ("lookup", "copy")
IGNORE = -100
RESIDUAL_SITES = ("resid_pre.0", "resid_post.0")  # the residual stream of the recipes' one layer


def route_truths(route: str) -> dict[str, str]:
    """The planted truth per site of a one-layer `planted_gpt2`: the route's picture at both
    residual sites; `mlp_hidden.0` and `attn.0` plant none, so they are absent (not scored)."""
    if route not in ROUTES:
        raise LTCError(f"unknown route {route!r}: use one of {ROUTES}")
    return dict.fromkeys(RESIDUAL_SITES, SUBCIRCUITS if route == "subcircuit" else CHANNELS)


@dataclass(frozen=True)
class Route:
    """The planted matrices (float32) and an orthonormal basis (d, s) of the route's subspace."""

    embedding: torch.Tensor    # (vocab, width)
    positions: torch.Tensor    # (length, width)
    unembedding: torch.Tensor  # (vocab, width)
    basis: torch.Tensor        # (width, vocab + length)


def planted_route(route: str, vocab: int, length: int, width: int, world_seed: int) -> Route:
    """The route's matrices: one-hot rows into the first vocab + length coordinates, rotated by a
    random R (Q 1 = 1, drawn from `world_seed`) for the `channel` route."""
    if route not in ROUTES:
        raise LTCError(f"unknown route {route!r}: use one of {ROUTES}")
    if vocab < 2 or length < 3:
        raise LTCError(f"the sequence world needs vocab >= 2 and length >= 3, got {vocab} and {length}")
    s = vocab + length
    if s > width:
        raise LTCError(f"width {width} is narrower than the route (vocab + length = {s}): widen the model")
    eye = torch.eye(width, dtype=torch.float64)
    frame = eye if route == "subcircuit" else random_rotation_fixing_ones(
        width, torch.Generator().manual_seed(world_seed))
    rows = eye[:s] @ frame
    return Route(rows[:vocab].float(), rows[vocab:].float(), rows[:vocab].float(), rows.T.contiguous().float())


def lookup_table(task: str, vocab: int, world_seed: int) -> torch.Tensor:
    """The map applied to the previous token: the identity (`copy`) or a random permutation of the
    symbols drawn from `world_seed` (`lookup`)."""
    if task not in TASKS:
        raise LTCError(f"unknown sequence task {task!r}: use one of {TASKS}")
    if task == "copy":
        return torch.arange(vocab)
    return torch.randperm(vocab, generator=torch.Generator().manual_seed(world_seed + 1))


def previous_token_labels(tokens: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """HF-aligned labels (the task shifts them by one): position t is scored on table[token t - 1]
    (the token itself without a table), so labels[:, s] = table[tokens[:, s - 2]] for s >= 2; the
    rest is not scored."""
    labels = torch.full_like(tokens, IGNORE)
    labels[:, 2:] = tokens[:, :-2] if table is None else table[tokens[:, :-2]]
    return labels


class SequenceWorldDataModule(TensorSplits):
    """Random token sequences labelled for the previous-token lookup (see the module docstring).

    Args:
        route: `subcircuit` or `channel`: which planted world (its model: `planted_gpt2` with the
            same route, vocab, length, width and world_seed).
        vocab: number of symbols (chance accuracy about 1 / vocab).
        length: sequence length.
        width: the model's residual width (the route needs vocab + length of it).
        world_seed: seed of the planted rotation (the `channel` route) and of the lookup table.
        task: `lookup` (a random permutation of the previous token) or `copy` (the token itself).
        num_train, num_val, num_test: sequences per split.
        batch_size: training batch size.
        probe_size: validation sequences of the fixed probe batch (spectra).
        seed: seed of the sequences.
    """

    def __init__(self, route: str = "subcircuit", vocab: int = 16, length: int = 8, width: int = 48,
                 world_seed: int = 0, task: str = "lookup", num_train: int = 4000, num_val: int = 500,
                 num_test: int = 500, batch_size: int = 64, probe_size: int = 64, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(batch_size, probe_size, num_workers, seed)
        self.route = planted_route(route, vocab, length, width, world_seed)
        self.table = lookup_table(task, vocab, world_seed)
        self.route_name, self.vocab_size, self.length, self.seed = route, vocab, length, seed
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        if min(self.sizes.values()) < 1:
            raise LTCError(f"every split needs at least one sequence, got {self.sizes}")

    def _build(self) -> dict[str, TensorDataset]:
        gen = torch.Generator().manual_seed(self.seed)
        splits = {}
        for split, n in self.sizes.items():
            tokens = torch.randint(0, self.vocab_size, (n, self.length), generator=gen)
            splits[split] = TensorDataset(tokens, previous_token_labels(tokens, self.table))
        return splits


def lookup_scores(net: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, site: str | None = None,
                  basis: torch.Tensor | None = None) -> tuple[float, float]:
    """(accuracy, cross-entropy in nats) over the scored positions of HF-aligned `labels`, with the
    residual at `site` projected onto span(basis) when given."""
    import torch.nn.functional as F

    from channels.sites import replace

    labels = labels[:, 1:]
    with torch.no_grad():
        if site is None:
            logits = net(tokens).logits[:, :-1]
        else:
            b = basis.to(torch.float64)
            projector = b @ b.T
            with replace(net, site, lambda a: (a.double() @ projector).to(a.dtype)):
                logits = net(tokens).logits[:, :-1]
    scored = labels != IGNORE
    loss = F.cross_entropy(logits[scored].double(), labels[scored])
    return float((logits.argmax(-1) == labels)[scored].double().mean()), float(loss)


def route_check(net: nn.Module, datamodule: SequenceWorldDataModule, sites: list[str]) -> list[dict]:
    """The truth check, one row per (site, projection): accuracy and cross-entropy on the test
    split with the residual stream at the site projected onto the route (`route`), onto its
    orthogonal complement (`off_route`) and onto the first s coordinates (`coordinates`), beside
    the intact network (`none`). The route carries the function when `route` keeps the loss and
    `off_route` falls to chance; the route is coordinate-aligned when `coordinates` keeps the loss
    too (a dense route keeps only about s / width of its signal there)."""
    datamodule.setup()
    tokens, labels = datamodule._splits["test"].tensors
    basis = datamodule.route.basis.double()
    width, s = basis.shape
    complement = torch.linalg.svd(torch.eye(width, dtype=torch.float64) - basis @ basis.T).U[:, : width - s]
    frames = {"route": basis, "off_route": complement, "coordinates": torch.eye(width, dtype=torch.float64)[:, :s]}
    acc, loss = lookup_scores(net, tokens, labels)
    rows = [{"site": "-", "projection": "none", "accuracy": acc, "loss": loss}]
    for site in sites:
        for name, frame in frames.items():
            acc, loss = lookup_scores(net, tokens, labels, site, frame)
            rows.append({"site": site, "projection": name, "accuracy": acc, "loss": loss})
    return rows
