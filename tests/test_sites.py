import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from channels.sites import available_sites, capture, replace, resolve_site, run_sites
from lth.errors import LTCError

NAMED = ["resid_pre", "resid_post", "mlp_hidden", "attn_out"]


def gpt2_config() -> GPT2Config:
    return GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_inner=48,
        vocab_size=100,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )


def bert_config() -> BertConfig:
    return BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        vocab_size=100,
        max_position_embeddings=32,
    )


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(gpt2_config()).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))


def hooks_of(model: nn.Module) -> set[int]:
    """Ids of every forward (pre-)hook; transformers adds its own on a first forward."""
    return {
        id(h)
        for m in model.modules()
        for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    }


@pytest.mark.parametrize(
    "model, blocks",
    [
        (lambda: GPT2LMHeadModel(gpt2_config()), "transformer.h"),
        (lambda: GPT2Model(gpt2_config()), "h"),
        (lambda: BertModel(bert_config()), "encoder.layer"),
        (lambda: BertForSequenceClassification(bert_config()), "bert.encoder.layer"),
        (
            lambda: GPTNeoXForCausalLM(
                GPTNeoXConfig(
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=48,
                    vocab_size=100,
                    max_position_embeddings=32,
                )
            ),
            "gpt_neox.layers",
        ),
        (
            lambda: LlamaForCausalLM(
                LlamaConfig(
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    num_key_value_heads=2,
                    intermediate_size=48,
                    vocab_size=100,
                    max_position_embeddings=32,
                )
            ),
            "model.layers",
        ),
    ],
)
def test_named_sites_resolve_and_capture_for_each_family(model, blocks, ids):
    model = model().eval()
    sites = [f"{kind}.{layer}" for kind in NAMED for layer in (0, -1)]
    model(ids)
    before = hooks_of(model)
    assert {f"{kind}.{layer}" for kind in NAMED for layer in (0, 1)} <= set(available_sites(model))
    assert resolve_site(model, "resid_post.-1").module is model.get_submodule(f"{blocks}.1")
    assert resolve_site(model, "resid_pre.0").take == "input"
    with torch.no_grad(), capture(model, sites) as acts:
        model(ids)
    assert acts["resid_pre.0"].shape == (2, 7, 32)
    assert acts["attn_out.-1"].shape == (2, 7, 32)
    assert acts["mlp_hidden.0"].shape == (2, 7, 48)
    assert hooks_of(model) == before


def test_residual_capture_matches_output_hidden_states(gpt2, ids):
    sites = ["resid_pre.0", "resid_pre.1", "resid_post.0", "resid_post.-1"]
    with torch.no_grad(), capture(gpt2, sites) as acts:
        hidden = gpt2(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["resid_pre.0"], hidden[0], rtol=0, atol=0)
    torch.testing.assert_close(acts["resid_pre.1"], hidden[1], rtol=0, atol=0)
    torch.testing.assert_close(acts["resid_post.0"], hidden[1], rtol=0, atol=0)
    # GPT-2's last hidden state has the final layer norm applied; the residual has not.
    torch.testing.assert_close(gpt2.transformer.ln_f(acts["resid_post.-1"]), hidden[2])
    assert not torch.allclose(acts["resid_post.-1"], hidden[2])


def test_bert_residual_capture_matches_output_hidden_states(ids):
    model = BertModel(bert_config()).eval()
    with torch.no_grad(), capture(model, ["resid_pre.1", "resid_post.1"]) as acts:
        hidden = model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["resid_pre.1"], hidden[1], rtol=0, atol=0)
    torch.testing.assert_close(acts["resid_post.1"], hidden[2], rtol=0, atol=0)


def test_attention_and_mlp_sites_rebuild_the_block(gpt2, ids):
    block = gpt2.transformer.h[0]
    sites = ["resid_pre.0", "attn_out.0", "mlp_hidden.0", "transformer.h.0.mlp", "resid_post.0"]
    with torch.no_grad():
        acts = run_sites(gpt2, ids, sites)
        middle = acts["resid_pre.0"] + acts["attn_out.0"]
        hidden = block.mlp.act(block.mlp.c_fc(block.ln_2(middle)))
    torch.testing.assert_close(acts["mlp_hidden.0"], hidden)
    torch.testing.assert_close(acts["resid_post.0"], middle + acts["transformer.h.0.mlp"])


def test_module_paths_and_keep_graph(gpt2, ids):
    with capture(gpt2, ["transformer.h.1.ln_2"], keep_graph=True) as kept:
        gpt2(ids)
    with capture(gpt2, ["transformer.h.1.ln_2"]) as detached:
        gpt2(ids)
    assert kept["transformer.h.1.ln_2"].requires_grad
    assert not detached["transformer.h.1.ln_2"].requires_grad


def test_hooks_are_removed_after_an_exception(gpt2, ids):
    gpt2(ids)
    before = hooks_of(gpt2)
    with pytest.raises(RuntimeError, match="boom"), capture(gpt2, ["resid_pre.0", "resid_post.1"]):
        gpt2(ids)
        raise RuntimeError("boom")
    with (
        pytest.raises(LTCError, match="shape"),
        replace(gpt2, "resid_pre.1", torch.zeros(1, 1, 32)),
    ):
        gpt2(ids)
    assert hooks_of(gpt2) == before


def test_unknown_site_lists_available_sites(gpt2):
    with pytest.raises(LTCError) as error:
        resolve_site(gpt2, "resid_mid.0")
    message = str(error.value)
    assert "resid_mid.0" in message and "resid_pre.{0..1}" in message
    assert "transformer.h.0.attn" in message and "more" in message
    with pytest.raises(LTCError, match="out of range"):
        resolve_site(gpt2, "resid_post.2")
    with pytest.raises(LTCError, match="available sites: input, output, 0, 1"):
        resolve_site(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "resid_pre.0")


def test_the_whole_network_input_and_output_are_sites():
    from channels.jacobian import site_jacobian

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).eval()
    x = torch.randn(4, 5)
    blocks = site_jacobian(net, x, "input", "output")
    reference = torch.stack([torch.autograd.functional.jacobian(net, x[i : i + 1])[0, :, 0] for i in range(4)])
    torch.testing.assert_close(blocks, reference)
    with pytest.raises(LTCError, match="unknown site"):
        resolve_site(net, "inputs")


def test_non_tensor_output_is_a_clear_error(gpt2, ids):
    gpt2(ids)
    before = hooks_of(gpt2)
    with pytest.raises(LTCError, match="tuple, not a tensor"):
        run_sites(gpt2, ids, ["transformer.h.0.attn"])
    assert hooks_of(gpt2) == before


def test_replace_feeds_through_the_model(gpt2, ids):
    with torch.no_grad():
        clean = run_sites(gpt2, ids, ["resid_pre.1", "resid_post.1"])
        with replace(gpt2, "resid_pre.1", clean["resid_pre.1"]):
            same = run_sites(gpt2, ids, ["resid_post.1"])["resid_post.1"]
        with replace(gpt2, "resid_pre.1", torch.zeros_like(clean["resid_pre.1"])):
            zeroed = run_sites(gpt2, ids, ["resid_post.1"])["resid_post.1"]
        expected = gpt2.transformer.h[1](torch.zeros_like(clean["resid_pre.1"]))
    torch.testing.assert_close(same, clean["resid_post.1"], rtol=0, atol=0)
    torch.testing.assert_close(zeroed, expected)
