"""The rotation control (T6): a random orthogonal change of a GPT-2's residual-stream basis.

The rotated network computes the same function, but its weights are expressed in a random basis
of the residual stream. Magnitude pruning depends on the basis: tickets that are basis-free
channels should survive the rotation, subcircuits living in a privileged basis should not.

Convention: residual vectors are rows, and the rotated residual is `x' = x @ Q`.

LayerNorm is not rotation invariant, so it is made so first:
  LN(x) = n(x) * g + b with n(x) = (x - mean(x)) / std(x).
Its gain and bias are folded into the linear map that reads it, leaving weight 1 and bias 0.
Then n(x @ Q) = n(x) @ Q holds whenever Q maps the all-ones direction to itself (centring and
the norm commute with such a Q), so Q is drawn as a random rotation of the subspace
orthogonal to the ones vector and the identity on 1/sqrt(d). With that:
  embeddings (rows written into the stream)   W_E -> W_E @ Q,  W_P -> W_P @ Q
  writes, Conv1D `y = h @ W + c` (W: in x out)  W -> W @ Q,      c -> c @ Q
  reads,  Conv1D after a folded LayerNorm       W -> Q^T @ W
  unembedding, nn.Linear weight (vocab x d)     W_U -> W_U @ Q
The unembedding has no bias, so `ln_f`'s bias b cannot be folded into it; it stays in `ln_f` as
b / g (then rotated), which needs every final LayerNorm gain g to be non-zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from lth.basis import haar_orthogonal
from lth.errors import LTCError


def random_rotation_fixing_ones(
    d: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A Haar-random orthogonal (d, d) matrix Q with Q @ 1 = 1.

    Q = u u^T + U R U^T, where u = 1 / sqrt(d), U is an orthonormal basis of the complement of u
    and R is Haar on O(d-1) (QR of a Gaussian matrix with the signs of R's diagonal fixed).
    """
    u = torch.full((d, 1), 1.0 / math.sqrt(d), dtype=torch.float64)
    complement = torch.linalg.qr(
        torch.cat([u, torch.eye(d, dtype=torch.float64)[:, : d - 1]], 1)
    ).Q[:, 1:]
    r = haar_orthogonal(d - 1, generator)
    return (u @ u.T + complement @ r @ complement.T).to(dtype)


def untie_embeddings(model: GPT2LMHeadModel) -> None:
    """Give `lm_head` its own copy of the token embedding, and keep HF from re-tying them."""
    if model.lm_head.weight is model.transformer.wte.weight:
        model.lm_head.weight = nn.Parameter(model.transformer.wte.weight.detach().clone())
    model.config.tie_word_embeddings = False
    model.all_tied_weights_keys = {}


@torch.no_grad()
def fold_layer_norms(model: GPT2LMHeadModel) -> None:
    """Fold every LayerNorm's gain and bias into the weights that read its output, in place.

    For a Conv1D read `(n * g + b) @ W + c`: W -> diag(g) @ W, c -> c + b @ W, and the LN becomes
    (1, 0). For `ln_f` read by the bias-free unembedding: W_U -> W_U diag(g), ln_f -> (1, b / g).
    The function is unchanged (up to rounding).
    """
    if getattr(model.config, "add_cross_attention", False):
        raise LTCError("rotation supports decoder-only GPT-2 only: set add_cross_attention=False")
    untie_embeddings(model)
    for block in model.transformer.h:
        _fold_into_conv1d(block.ln_1, block.attn.c_attn)
        _fold_into_conv1d(block.ln_2, block.mlp.c_fc)
    ln_f, unembed = model.transformer.ln_f, model.lm_head
    gain, bias = _float64_copy(ln_f.weight), _float64_copy(ln_f.bias)
    if bool((gain == 0).any()):
        raise LTCError(
            "ln_f has a zero gain, so its bias cannot be folded: give ln_f non-zero weights"
        )
    unembed.weight.copy_(unembed.weight.double() * gain)
    ln_f.weight.fill_(1.0)
    ln_f.bias.copy_(bias / gain)


def _float64_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A float64 copy that never aliases the parameter (`.double()` does when it already is)."""
    return tensor.detach().to(torch.float64, copy=True)


def _fold_into_conv1d(norm: nn.LayerNorm, read: nn.Module) -> None:
    gain, bias = _float64_copy(norm.weight), _float64_copy(norm.bias)
    weight = _float64_copy(read.weight)
    read.bias.copy_(read.bias.double() + bias @ weight)
    read.weight.copy_(gain[:, None] * weight)
    norm.weight.fill_(1.0)
    norm.bias.zero_()


@torch.no_grad()
def rotate_residual_basis(
    model: GPT2LMHeadModel, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fold the LayerNorms, then rotate the residual stream by a random Q; returns Q (float64).

    Modifies `model` in place (parameter names and shapes stay the same, lm_head is untied from
    wte). Afterwards the residual stream at every layer equals the original one times Q, and the
    logits are unchanged.
    """
    fold_layer_norms(model)
    q = random_rotation_fixing_ones(model.config.n_embd, generator)
    transformer = model.transformer
    # residual index last: embeddings, writes (Conv1D out), LN biases, the unembedding (Linear in)
    residual_last = [
        transformer.wte.weight,
        transformer.wpe.weight,
        transformer.ln_f.bias,
        model.lm_head.weight,
    ]
    # residual index first: Conv1D reads (weight is in x out)
    residual_first = []
    for block in transformer.h:
        residual_last += [block.attn.c_proj.weight, block.attn.c_proj.bias, block.mlp.c_proj.weight]
        residual_last += [block.mlp.c_proj.bias, block.ln_1.bias, block.ln_2.bias]
        residual_first += [block.attn.c_attn.weight, block.mlp.c_fc.weight]
    for param in residual_last:
        param.copy_(param.double() @ q)
    for param in residual_first:
        param.copy_(q.T @ param.double())
    return q
