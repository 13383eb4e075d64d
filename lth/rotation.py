"""The rotation control: a random orthogonal change of a transformer's residual-stream basis.

The rotated network computes the same function, but its weights are expressed in a random basis
of the residual stream. Magnitude pruning depends on the basis: tickets that are basis-free
channels should survive the rotation, subcircuits living in a privileged basis should not.

Convention: residual vectors are rows, and the rotated residual is `x' = x @ Q`.

Norms are not rotation invariant, so they are made so first (`lth.folding`: gains and biases
folded into the weights that read them). Then RMSNorm commutes with any orthogonal Q, and
LayerNorm with every Q that maps the all-ones direction to itself (centring and the norm commute
with such a Q), so for LayerNorm models Q is drawn as a random rotation of the subspace
orthogonal to the ones vector and the identity on 1/sqrt(d). With that, every tensor that writes
into the stream (embeddings, output projections and their biases, norm biases) becomes W Q along
its residual axis and every tensor that reads it becomes Q^T W: `lth.reparam.rotate_slots` over the
residual coordinates' slots, which the caller takes from the model's residual unit layout
(`channels.units.residual_layout`), the one place that lists them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lth.errors import LTCError
from lth.folding import LAYER_NORM, fold_norms
from lth.orthogonal import haar_orthogonal, random_rotation_fixing_ones
from lth.reparam import Slot, rotate_slots


@torch.no_grad()
def rotate_residual_basis(model: nn.Module, residual: Sequence[Slot], generator: torch.Generator | None = None,
                          identity: bool = False) -> torch.Tensor:
    """Fold the norms, then rotate the residual stream by a random Q drawn from `generator`;
    returns Q (float64). `identity=True` is the control arm: the same folding, Q = I.

    In place: parameter names and shapes stay the same, the unembedding is untied from the
    embedding. Afterwards the residual stream at every layer equals the original one times Q, and
    the logits are unchanged.
    """
    kind = fold_norms(model)
    d = model.get_input_embeddings().weight.shape[1]
    if identity:
        return torch.eye(d, dtype=torch.float64)
    q = random_rotation_fixing_ones(d, generator) if kind == LAYER_NORM else haar_orthogonal(d, generator)
    params = dict(model.named_parameters())
    missing = [s.name for s in residual if s.name not in params]
    if missing:
        raise LTCError(f"the residual layout names tensors the model lacks: {missing[:3]}")
    rotated = rotate_slots({s.name: params[s.name] for s in residual}, residual, q)
    for name, value in rotated.items():
        params[name].copy_(value)
    return q
