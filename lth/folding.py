"""Fold the gains (and biases) of a transformer's LayerNorms or RMSNorms into the weights that read
them, leaving every norm at gain 1 (bias 0): the function is unchanged, and the residual stream is
then rotation-equivariant up to the norm's own centring (`lth.rotation`).

For a norm N(x) = n(x) * g + b (n: the centred and scaled x of LayerNorm, or x / rms(x) of
RMSNorm, which has no b) read by linear maps y = N(x) W + c:
  W -> diag(g) W,  c -> c + b W,  N -> (1, 0)      when every reader has a bias;
  W -> diag(g) W,  N -> (1, b / g)                 otherwise (the unembedding has no bias), which
                                                   needs every gain g to be non-zero.
GPT-2 reads with `Conv1D` (weight in x out), GPT-NeoX and Llama with nn.Linear (out x in). A model
whose unembedding is tied to its embedding is untied first (folding changes one and not the other).
"""
from __future__ import annotations

import torch
from torch import nn

from lth.errors import LTCError

# model_type -> the family whose module names it shares
FAMILIES = {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "llama": "llama", "mistral": "llama", "qwen2": "llama"}
# family -> ((norm inside a block, (its readers inside the block)), ...)
BLOCK_NORMS = {
    "gpt2": (("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",))),
    "gpt_neox": (("input_layernorm", ("attention.query_key_value",)),
                 ("post_attention_layernorm", ("mlp.dense_h_to_4h",))),
    "llama": (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
              ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))),
}
# family -> (the base model's block list, its final norm)
BASE_PARTS = {"gpt2": ("h", "ln_f"), "gpt_neox": ("layers", "final_layer_norm"), "llama": ("layers", "norm")}
LAYER_NORM, RMS_NORM = "layernorm", "rmsnorm"
NORM_KIND = {"gpt2": LAYER_NORM, "gpt_neox": LAYER_NORM, "llama": RMS_NORM}


def family(model: nn.Module) -> str | None:
    """`gpt2`, `gpt_neox` or `llama` for a Hugging Face model of those families, else None."""
    config = getattr(model, "config", None)
    return FAMILIES.get(getattr(config, "model_type", None))


def require_family(model: nn.Module, what: str) -> str:
    """The model's family, or one LTCError line saying that `what` needs GPT-2, GPT-NeoX or Llama."""
    found = family(model)
    if found is None:
        raise LTCError(f"{what} knows GPT-2, GPT-NeoX and Llama-style transformers; "
                       f"{type(model).__name__} is none of them")
    if getattr(model.config, "add_cross_attention", False):
        raise LTCError(f"{what} supports decoder-only models: set add_cross_attention=False")
    return found


def untie_embeddings(model: nn.Module) -> None:
    """Give the unembedding its own copy of the token embedding, and keep HF from re-tying them."""
    unembed, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if unembed is not None and unembed.weight is embed.weight:
        unembed.weight = nn.Parameter(embed.weight.detach().clone())
    model.config.tie_word_embeddings = False
    model.all_tied_weights_keys = {}


def _float64_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A float64 copy that never aliases the parameter (`.double()` does when it already is)."""
    return tensor.detach().to(torch.float64, copy=True)


def _input_axis(reader: nn.Module) -> int:
    """The axis of the reader's weight indexed by its input: 0 for GPT-2's Conv1D, 1 for nn.Linear."""
    return 0 if type(reader).__name__ == "Conv1D" else 1


@torch.no_grad()
def fold_norm(norm: nn.Module, readers: list[nn.Module], name: str) -> None:
    """Fold one norm's gain (and bias) into its readers, in place (see the module docstring)."""
    gain = _float64_copy(norm.weight)
    bias = getattr(norm, "bias", None)
    bias = None if bias is None else _float64_copy(bias)
    into_readers = bias is not None and all(r.bias is not None for r in readers)
    if bias is not None and not into_readers and bool((gain == 0).any()):
        raise LTCError(f"{name} has a zero gain, so its bias cannot be folded: give {name} non-zero weights")
    for reader in readers:
        axis = _input_axis(reader)
        weight = _float64_copy(reader.weight)
        if into_readers:
            reader.bias.copy_(reader.bias.double() + (bias @ weight if axis == 0 else weight @ bias))
        reader.weight.copy_(weight * (gain[:, None] if axis == 0 else gain[None, :]))
    norm.weight.fill_(1.0)
    if bias is not None:
        norm.bias.copy_(torch.zeros_like(bias) if into_readers else bias / gain)


@torch.no_grad()
def fold_norms(model: nn.Module) -> str:
    """Fold every norm of a GPT-2, GPT-NeoX or Llama model into its readers, in place; returns the
    norm kind (`layernorm` or `rmsnorm`). The final norm is folded into the unembedding when the
    model has one (a bare base model keeps its final norm)."""
    fam = require_family(model, "norm folding")
    untie_embeddings(model)
    base = model.base_model
    blocks_name, final_name = BASE_PARTS[fam]
    for index, block in enumerate(getattr(base, blocks_name)):
        for norm_name, reader_names in BLOCK_NORMS[fam]:
            readers = [block.get_submodule(r) for r in reader_names]
            fold_norm(block.get_submodule(norm_name), readers, f"{blocks_name}.{index}.{norm_name}")
    unembed = model.get_output_embeddings()
    if unembed is not None:
        fold_norm(getattr(base, final_name), [unembed], final_name)
    return NORM_KIND[fam]
