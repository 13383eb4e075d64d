"""A small randomly initialised GPT-2 built from a config: nothing is downloaded.

Returns the Hugging Face model itself, so parameter names (the keys of masks) are the HF ones,
e.g. `transformer.h.0.attn.c_attn.weight`. Attention is the eager implementation because
torch.func transforms (vmap, jvp) need it for Jacobian measurements.
"""

from __future__ import annotations

from transformers import GPT2Config, GPT2LMHeadModel


def gpt2(
    vocab_size: int = 256,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 128,
    n_positions: int = 256,
    dropout: float = 0.0,
    tie_word_embeddings: bool = False,
    **extra,
) -> GPT2LMHeadModel:
    """Build a GPT-2 language model with random weights.

    `dropout` sets the residual, embedding and attention dropout together; `extra` goes to
    `GPT2Config` unchanged (e.g. `n_inner`, `activation_function`, `layer_norm_epsilon`).
    The bos/eos ids are the last token of the vocabulary so they stay inside it.
    """
    config = GPT2Config(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_positions=n_positions,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        tie_word_embeddings=tie_word_embeddings,
        attn_implementation="eager",
        **extra,
    )
    return GPT2LMHeadModel(config)


def planted_gpt2(
    route: str = "subcircuit",
    vocab: int = 16,
    length: int = 8,
    width: int = 48,
    world_seed: int = 0,
    n_layer: int = 1,
    n_head: int = 4,
    **extra,
) -> GPT2LMHeadModel:
    """A GPT-2 for the planted sequence world (`experiments.data.sequence_world`): its token and
    position embeddings and its unembedding are the world's route, frozen (no gradient, so no
    optimiser or weight decay moves them; IMP leaves embeddings dense), and so are its LayerNorm
    gains, at 1: a trained elementwise gain would be a privileged basis of the stream that the
    world did not plant. The rest is GPT-2's usual random init (isotropic: a rotation of the
    stream that fixes the ones direction leaves its distribution and SGD's updates equivariant)."""
    from experiments.data.sequence_world import planted_route

    planted = planted_route(route, vocab, length, width, world_seed)
    model = gpt2(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=width, n_positions=length, **extra)
    for module, weight in ((model.transformer.wte, planted.embedding), (model.transformer.wpe, planted.positions),
                           (model.lm_head, planted.unembedding)):
        module.weight.data.copy_(weight)
        module.weight.requires_grad_(False)
    for name, param in model.named_parameters():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            param.requires_grad_(False)
    return model
