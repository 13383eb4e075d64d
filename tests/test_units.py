"""Unit layouts (`channels.units`) and the reparametrisations written with them (`lth.reparam`):
every layout of the MLP, LeNet, Conv-N, VGG-16, ResNet-20, GPT-2, GPT-NeoX and Llama (tiny, built
from configs) names the weights its site's units use; permuting units keeps every output, and so
does rescaling them exactly where the layout says it is a symmetry; weight matching undoes a
random permutation of neurons and of heads."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from channels.sites import replace, run_sites
from channels.units import (
    HEAD,
    NEURON,
    RESIDUAL,
    layout_for,
    mlp_unit_layout,
    permute_units,
    reparametrise,
    rescale_units,
    unit_keep_fraction,
    unit_layouts,
    unknown_units,
    weight_matching,
)
from experiments.models.mlp import MLP
from experiments.models.vision import VGG16, Conv2, LeNet300100, ResNet20
from lth.errors import LTCError
from lth.reparam import rescale_slots

VOCAB = 40


def _perturb(model: nn.Module) -> nn.Module:
    """Non-trivial norm gains and biases (folding and rescaling must see them), float64, eval."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or ".ln" in name or name.startswith("ln") or "bn" in name:
                param.uniform_(0.5, 1.5) if name.endswith("weight") else param.normal_(0.0, 0.2)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.double().eval()


def tiny_gpt2(activation: str = "gelu_new") -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return _perturb(GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=32, n_inner=48, n_positions=16, bos_token_id=0,
        eos_token_id=0, activation_function=activation, attn_implementation="eager")))


def tiny_neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return _perturb(GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=48,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=0, attn_implementation="eager")))


def tiny_llama(kv_heads: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return _perturb(LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads, hidden_size=32,
        intermediate_size=48, max_position_embeddings=16, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        attn_implementation="eager")))


TRANSFORMERS = {"gpt2": tiny_gpt2, "neox": tiny_neox, "llama": tiny_llama, "llama_gqa": lambda: tiny_llama(2)}
IDS = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(2))
# Llama's RMSNorm computes in float32 whatever the model's dtype: its outputs match to float32 rounding
TOLERANCE = {"llama": 1e-6, "llama_gqa": 1e-6}


def logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(inputs)
    return out.logits if hasattr(out, "logits") else out


def with_state(model: nn.Module, state: dict) -> nn.Module:
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other


def plain_nets() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    image = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    return {
        "mlp": (_perturb(MLP(10, [12, 9], 3)), torch.randn(5, 10, dtype=torch.float64)),
        "mlp_gelu": (_perturb(MLP(10, [12], 3, activation="gelu")), torch.randn(5, 10, dtype=torch.float64)),
        "lenet": (_perturb(LeNet300100(num_classes=3, in_features=20, width=0.05)), torch.randn(5, 20, dtype=torch.float64)),
        "conv2": (_perturb(Conv2(num_classes=3, image_size=8, width=0.1)), image),
        "vgg16": (_perturb(VGG16(num_classes=3, width=1 / 32)), torch.randn(2, 3, 32, 32, dtype=torch.float64)),
        "resnet20": (_perturb(ResNet20(num_classes=3, width=0.25)), image),
    }


def all_cases():
    cases = [(name, *built) for name, built in plain_nets().items()]
    cases += [(name, make(), IDS) for name, make in TRANSFORMERS.items()]
    return cases


CASES = all_cases()


def test_the_layouts_of_each_model():
    sites = {name: {lay.site: (lay.kind, lay.n_units, lay.unit_dims, lay.rescalable) for lay in unit_layouts(net)}
             for name, net, _ in CASES}
    assert sites["mlp"] == {"act.0": (NEURON, 12, 1, True), "act.1": (NEURON, 9, 1, True)}
    assert sites["mlp_gelu"] == {"act.0": (NEURON, 12, 1, False)}
    assert sites["lenet"] == {"fcs.0": (NEURON, 15, 1, True), "fcs.1": (NEURON, 5, 1, True)}
    assert sites["conv2"]["convs.1"] == ("channel", 6, 1, True) and "fcs.1" in sites["conv2"]
    assert len(sites["vgg16"]) == 13 and sites["vgg16"]["bns.12"] == ("channel", 16, 1, True)
    assert len(sites["resnet20"]) == 9 and sites["resnet20"]["stages.2.2.bn1"] == ("channel", 16, 1, True)
    for name in ("gpt2", "neox", "llama"):
        assert sites[name]["attn.1"] == (HEAD, 4, 8, True)
        assert sites[name]["resid_pre.0"] == (RESIDUAL, 32, 1, False) == sites[name]["resid_post.1"]
    assert sites["llama_gqa"]["attn.0"] == (HEAD, 2, 16, True)  # two key-value groups of two query heads
    assert sites["gpt2"]["mlp_hidden.0"] == (NEURON, 48, 1, False)  # GELU
    assert sites["neox"]["mlp_hidden.0"] == (NEURON, 48, 1, False)
    assert sites["llama"]["mlp_hidden.0"] == (NEURON, 48, 1, True)  # up row x s, down column / s
    assert layout_for(tiny_gpt2("relu"), "mlp_hidden.1").rescalable


def test_gpt2_heads_own_their_q_k_v_columns_and_output_rows():
    lay = layout_for(CASES[-4][1], "attn.1")
    weight = {s.offset: s for s in lay.slots if s.name == "transformer.h.1.attn.c_attn.weight"}
    assert sorted(weight) == [0, 32, 64] and all(s.axis == 1 and s.block == 8 for s in weight.values())
    mask = {"transformer.h.1.attn.c_attn.weight": torch.zeros(32, 96, dtype=torch.bool),
            "transformer.h.1.attn.c_proj.weight": torch.zeros(32, 32, dtype=torch.bool)}
    mask["transformer.h.1.attn.c_attn.weight"][:, 64 + 16: 64 + 24] = True  # head 2's v columns
    mask["transformer.h.1.attn.c_proj.weight"][8:16] = True                   # head 1's output rows
    kept = unit_keep_fraction(mask, lay)
    # a head owns 3 x 32 x 8 c_attn entries and 8 x 32 c_proj entries (the biases are not in the mask)
    np.testing.assert_allclose(kept, [0, 256 / 1024, 256 / 1024, 0])


@pytest.mark.parametrize("name,net,inputs", CASES, ids=[c[0] for c in CASES])
def test_permuting_and_rescaling_units_keep_the_function(name, net, inputs):
    before = logits(net, inputs)
    tol = TOLERANCE.get(name, 1e-10)
    state = net.state_dict()
    gen = np.random.default_rng(0)
    for lay in unit_layouts(net):
        perm = np.roll(gen.permutation(lay.n_units), 1)
        if np.array_equal(perm, np.arange(lay.n_units)):
            perm = np.roll(perm, 1)
        moved = permute_units(state, lay, perm)
        assert any(not torch.equal(moved[n], state[n]) for n in lay.tensors)
        torch.testing.assert_close(logits(with_state(net, moved), inputs), before, atol=tol, rtol=0)
        scales = np.exp(gen.normal(0.0, 1.0, lay.n_units))
        scaled = rescale_slots(state, lay.slots, scales)
        changed = (logits(with_state(net, scaled), inputs) - before).abs().max()
        if lay.rescalable:
            assert changed < tol, lay.site
            torch.testing.assert_close(rescale_units(state, lay, scales)[lay.tensors[0]], scaled[lay.tensors[0]])
        else:  # the layout says "not a symmetry", and it is not
            assert changed > 1e-3, lay.site
            with pytest.raises(LTCError, match="changes the function"):
                rescale_units(state, lay, scales)


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama_gqa"])
def test_ablating_a_unit_at_its_site_is_zeroing_its_outgoing_weights(name):
    """The layouts and the sites agree: zeroing unit j's activation at `mlp_hidden.l` / `attn.l`
    gives the output that zeroing its OUT slot does."""
    net = TRANSFORMERS[name]()
    for site in ("mlp_hidden.1", "attn.0"):
        lay = layout_for(net, site)
        j = 1
        dims = slice(j * lay.unit_dims, (j + 1) * lay.unit_dims)

        def zero(a):
            a = a.clone()
            a[..., dims] = 0.0
            return a

        with replace(net, site, zero):
            ablated = logits(net, IDS)
        state = dict(net.state_dict())
        for slot in lay.slots:
            if slot.role == "out":
                weight = state[slot.name].clone()
                weight.movedim(slot.axis, 0)[slot.indices(lay.n_units)[j]] = 0.0
                state[slot.name] = weight
        torch.testing.assert_close(logits(with_state(net, state), IDS), ablated, atol=1e-10, rtol=0)
        assert (ablated - logits(net, IDS)).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama"])
def test_the_attention_site_holds_the_heads_before_the_output_projection(name):
    net = TRANSFORMERS[name]()
    acts = run_sites(net, IDS, ["attn.0", "attn_out.0"])
    assert acts["attn.0"].shape == (*IDS.shape, 32)
    out_proj = {"gpt2": "transformer.h.0.attn.c_proj", "neox": "gpt_neox.layers.0.attention.dense",
                "llama": "model.layers.0.self_attn.o_proj"}[name]
    torch.testing.assert_close(net.get_submodule(out_proj)(acts["attn.0"]), acts["attn_out.0"])
    with replace(net, "attn.0", torch.zeros_like(acts["attn.0"])):
        assert torch.allclose(run_sites(net, IDS, ["attn_out.0"])["attn_out.0"],
                              net.get_submodule(out_proj).bias.expand(*IDS.shape, 32)
                              if net.get_submodule(out_proj).bias is not None else torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama"])
def test_weight_matching_recovers_a_permutation_of_neurons_and_of_heads(name):
    net = TRANSFORMERS[name]()
    layouts = [lay for lay in unit_layouts(net) if lay.kind in (NEURON, HEAD)]
    gen = np.random.default_rng(3)
    a = net.state_dict()
    hidden = [gen.permutation(lay.n_units) for lay in layouts]
    b = a
    for lay, perm in zip(layouts, hidden):
        b = permute_units(b, lay, perm)
    found = weight_matching(a, b, layouts)
    for lay, perm, inverse in zip(layouts, found, hidden):
        np.testing.assert_array_equal(inverse[perm], np.arange(lay.n_units))  # b's unit perm[j] is a's unit j
    aligned = b
    for lay, perm in zip(layouts, found):
        aligned = permute_units(aligned, lay, perm)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


def test_weight_matching_aligns_the_residual_stream_once_for_all_its_sites():
    net = tiny_gpt2()
    layouts = [lay for lay in unit_layouts(net) if lay.kind == RESIDUAL]
    perm = np.random.default_rng(4).permutation(32)
    b = permute_units(net.state_dict(), layouts[0], perm)
    found = weight_matching(net.state_dict(), b, layouts)
    assert all(np.array_equal(f, found[0]) for f in found)
    np.testing.assert_array_equal(perm[found[0]], np.arange(32))


def test_the_mlp_layout_from_names_counts_units_from_the_tensors():
    net = MLP(6, [7], 2)
    lay = mlp_unit_layout(net.state_dict().keys(), "act.0")
    assert lay.count(net.state_dict()) == 7 and lay.tensors == ["hidden.0.weight", "hidden.0.bias", "out.weight"]
    assert mlp_unit_layout(net.state_dict().keys(), "act.1") is None


def test_an_unknown_model_gets_one_line_naming_it_and_the_tests_that_cannot_run():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                                vocab_size=30, max_position_embeddings=8))
    for net, name in ((Custom(), "Custom"), (bert, "BertModel")):
        line = unknown_units(net)
        assert unit_layouts(net) == [] and "\n" not in line
        assert line.startswith(name) and "T3" in line and "T4" in line and "T5" in line
    assert unknown_units(MLP(3, [4], 2)) is None


@pytest.mark.parametrize("name,net,inputs", CASES, ids=[c[0] for c in CASES])
def test_reparametrise_keeps_the_function_and_moves_every_laid_out_weight(name, net, inputs):
    other = reparametrise(net, seed=0)
    torch.testing.assert_close(logits(other, inputs), logits(net, inputs), atol=TOLERANCE.get(name, 1e-9), rtol=0)
    before, after = net.state_dict(), other.state_dict()
    for lay in unit_layouts(net):
        assert any(not torch.allclose(before[n], after[n]) for n in lay.tensors), lay.site
