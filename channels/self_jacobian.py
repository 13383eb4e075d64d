"""The self blocks J(t, t) = d b[t] / d a[t] of every position of a causal transformer, at once.

In a causal model b[t] depends on a[t] through position t's own stream only: earlier positions do
not see a[t], later ones are not read by b[t]. The other positions enter position t's stream
through attention alone, as keys and values. `self_only_attention` computes softmax attention
with the model's own value, but with the gradient of every query's output reaching the keys and
values of its own position only (the others are constants, as for J(t, t) they are). With it, a
cotangent e_j placed at every position at once returns row j of J(t, t) at every t: d_b backward
passes give every self block of a sequence, where a per-target sweep needs d_b per target.

`self_jacobians` switches a Hugging Face model (GPT-2, GPT-NeoX, Llama: attention through
transformers' attention interface) to that attention while it runs. Encoders are not causal (b[t]
also reads a[t] through later positions, which this would cut): callers check causality.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from channels.jacobian import DEFAULT_CHUNK, Inputs, batched_vjp, forward_with_graph
from channels.sites import Site
from lth.errors import LTCError

SELF_ONLY = "ltc_self_only"


def self_only_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                        attention_mask: Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                        **kwargs) -> tuple[Tensor, Tensor]:
    """Eager softmax attention (the value of transformers' eager path) whose gradient reaches key
    and value at each query's own position only.

    Scores S = q K_c^T * scale with K_c = K detached, plus on the diagonal q_t . (k_t - k_c,t) * scale
    (zero in value, live in gradient); output P V_c + P_tt (v_t - v_c,t). Query i is key position
    T_k - T_q + i (a cache of earlier positions is allowed). Grouped keys (num_key_value_groups)
    are repeated as the models do.
    """
    if dropout:
        raise LTCError("self-only attention measures Jacobians: put the model in eval mode (no dropout)")
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    n_q, n_k = query.shape[2], key.shape[2]
    own = torch.arange(n_q, device=query.device)
    own_k = n_k - n_q + own
    key_c, value_c = key.detach(), value.detach()
    scores = torch.matmul(query, key_c.transpose(-1, -2)) * scale
    live = ((query * key[:, :, own_k]).sum(-1) - (query * key_c[:, :, own_k]).sum(-1)) * scale
    correction = torch.zeros_like(scores)
    correction[..., own, own_k] = live
    scores = scores + correction
    if attention_mask is not None:
        mask = attention_mask[..., :n_k]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    upcast = scores.dtype in (torch.float16, torch.bfloat16)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if upcast else scores.dtype).to(value.dtype)
    out = torch.matmul(weights, value_c) + weights[..., own, own_k].unsqueeze(-1) * (value - value_c)[:, :, own_k]
    return out.transpose(1, 2).contiguous(), weights


@contextmanager
def self_only(model: nn.Module) -> Iterator[None]:
    """Run a Hugging Face model with `self_only_attention` inside the block."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        raise LTCError(f"{type(model).__name__} is not a Hugging Face transformer: self blocks need its attention")
    AttentionInterface.register(SELF_ONLY, self_only_attention)
    AttentionMaskInterface.register(SELF_ONLY, ALL_MASK_ATTENTION_FUNCTIONS["eager"])  # the eager path's masks
    configs = {id(c): c for c in [config, *(getattr(config, k) for k in getattr(config, "sub_configs", {}))]
               if c is not None and hasattr(c, "_attn_implementation")}
    before = {key: c._attn_implementation for key, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = SELF_ONLY
        yield
    finally:
        for key, c in configs.items():
            c._attn_implementation = before[key]


def self_jacobians(
    model: nn.Module,
    inputs: Inputs,
    site_a: str | Site,
    site_b: str | Site,
    positions: Sequence[int] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """J(t, t) = d b[t] / d a[t] for each t of `positions` (default all) of one sequence (batch 1) of a
    causal Hugging Face model: shape (n_positions, d_b, d_a), from d_b backward passes in all."""
    with self_only(model):
        a, b, act_a, act_b = forward_with_graph(model, inputs, site_a, site_b)
    if act_a.dim() != 3 or act_b.dim() != 3 or act_a.shape[:2] != act_b.shape[:2] or act_a.shape[0] != 1:
        raise LTCError(f"self blocks need two sites of one sequence, shape (1, T, d); got {a.name} "
                       f"{tuple(act_a.shape)} and {b.name} {tuple(act_b.shape)}")
    length, d_b = act_b.shape[1], act_b.shape[2]
    chosen = torch.arange(length, device=act_a.device) if positions is None else \
        torch.as_tensor(list(positions), device=act_a.device)
    if len(chosen) and not (0 <= int(chosen.min()) and int(chosen.max()) < length):
        raise LTCError(f"positions must lie in 0..{length - 1}")
    out = act_a.new_empty(len(chosen), d_b, act_a.shape[2])
    for first in range(0, d_b, chunk_size):
        rows = torch.arange(first, min(first + chunk_size, d_b), device=act_a.device)
        cotangents = act_b.new_zeros(len(rows), *act_b.shape)
        cotangents[torch.arange(len(rows)), 0, :, rows] = 1  # e_j at every position
        grads = batched_vjp(act_b, act_a, cotangents, a, b, retain_graph=True)[:, 0]  # (n, T, d_a)
        out[:, rows] = grads[:, chosen].transpose(0, 1)
    if not torch.isfinite(out).all():
        raise LTCError(f"self blocks d {b.name} / d {a.name} have non-finite entries (NaN or inf)")
    return out
