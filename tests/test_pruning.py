import numpy as np
import pytest
import torch
from torch import nn

from lth.controls import random_mask_like, random_mask_per_module, shuffle_within_tensors
from lth.errors import LTCError
from lth.masks import density, full_mask
from lth.pruning import default_prunable, magnitude_prune, select_prunable


def test_global_prunes_exact_count_with_one_threshold():
    w = {"a": torch.tensor([5.0, -1.0, 3.0, 0.5]), "b": torch.tensor([[2.0, -4.0], [0.1, 6.0]])}
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in w.items()}
    out = magnitude_prune(w, mask, 0.25)  # 8 weights -> remove the 2 smallest: 0.1 (b) and 0.5 (a)
    assert out["a"].tolist() == [True, True, True, False]
    assert out["b"].tolist() == [[True, True], [False, True]]
    # next level: 0.25 of the 6 remaining = round(1.5) = 2 more: -1.0 (a) and 2.0 (b)
    out2 = magnitude_prune(w, out, 0.25)
    assert out2["a"].tolist() == [True, False, True, False]
    assert out2["b"].tolist() == [[False, True], [False, True]]


def test_ties_broken_by_position_deterministically():
    w = {"a": torch.ones(6), "b": torch.ones(4)}
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in w.items()}
    out = magnitude_prune(w, mask, 0.3)  # 3 of 10, all tied: the first three positions go
    assert out["a"].tolist() == [False, False, False, True, True, True]
    assert out["b"].all()
    assert all(torch.equal(out[k], magnitude_prune(w, mask, 0.3)[k]) for k in w)


def test_already_pruned_weights_are_never_counted_again():
    w = {"a": torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0])}
    mask = {"a": torch.tensor([False, False, True, True, True])}
    out = magnitude_prune(w, mask, 1 / 3)
    assert out["a"].tolist() == [False, False, False, True, True]


def test_layerwise_and_overrides():
    torch.manual_seed(0)
    w = {"hidden.weight": torch.randn(10, 10), "out.weight": torch.randn(2, 10)}
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in w.items()}
    out = magnitude_prune(w, mask, 0.2, strategy="layerwise")
    assert int(out["hidden.weight"].sum()) == 80 and int(out["out.weight"].sum()) == 16
    over = magnitude_prune(w, mask, 0.2, overrides={"out.*": 0.1})
    assert int(over["out.weight"].sum()) == 18 and int(over["hidden.weight"].sum()) == 80
    # the override prunes the smallest of its own tensor
    kept = w["out.weight"].abs()[over["out.weight"]]
    dropped = w["out.weight"].abs()[~over["out.weight"]]
    assert kept.min() >= dropped.max()


def test_global_threshold_is_shared_across_tensors():
    w = {"small": torch.full((10,), 0.01) + torch.arange(10) * 1e-4, "big": torch.ones(10) + torch.arange(10)}
    mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in w.items()}
    out = magnitude_prune(w, mask, 0.5)
    assert not out["small"].any() and out["big"].all()


def test_bad_fractions_and_patterns():
    w = {"a": torch.ones(4)}
    mask = {"a": torch.ones(4, dtype=torch.bool)}
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(LTCError, match="prune_fraction"):
            magnitude_prune(w, mask, bad)
    with pytest.raises(LTCError, match="matches no"):
        magnitude_prune(w, mask, 0.2, overrides={"nothing.*": 0.1})
    with pytest.raises(LTCError, match="strategy"):
        magnitude_prune(w, mask, 0.2, strategy="random")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)


def test_default_prunable_excludes_biases_norms_embeddings():
    net = _Net()
    assert default_prunable(net) == ["conv.weight", "fc.weight"]
    assert select_prunable(net, include=["emb.*"]) == ["emb.weight", "conv.weight", "fc.weight"]
    assert select_prunable(net, ignore=["fc.*"]) == ["conv.weight"]
    with pytest.raises(LTCError, match="ignore pattern"):
        select_prunable(net, ignore=["nope*"])
    with pytest.raises(LTCError, match="no prunable tensors"):
        select_prunable(net, ignore=["*"])


def test_hf_conv1d_prunable_and_unembedding_excluded():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=20, n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    names = default_prunable(model)
    assert "transformer.h.0.attn.c_attn.weight" in names and "transformer.h.0.mlp.c_proj.weight" in names
    assert not any("wte" in n or "wpe" in n or "ln" in n or "lm_head" in n for n in names)


def test_controls_keep_per_tensor_counts():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 5))
    mask = magnitude_prune(dict(model.named_parameters()), full_mask(model, ["0.weight", "1.weight"]), 0.5)
    rand = random_mask_like(mask, gen)
    weights = {k: v.detach() for k, v in model.named_parameters()}
    shuf, shuf_w = shuffle_within_tensors(mask, weights, gen)
    for k in mask:
        assert int(rand[k].sum()) == int(mask[k].sum()) == int(shuf[k].sum())
        assert not torch.equal(rand[k], mask[k])
        # the shuffled tensor carries the ticket's surviving values, now at the shuffled places
        kept = torch.sort(weights[k][mask[k]]).values
        assert torch.equal(torch.sort(shuf_w[k][shuf[k]]).values, kept)
        assert (shuf_w[k][~shuf[k]] == 0).all()
    assert density(rand) == pytest.approx(density(mask))


def test_the_module_control_keeps_each_modules_count_but_not_its_split_between_weight_and_bias():
    # A ticket that kept every bias and 10% of the weights (the split a magnitude ticket tends to make).
    mask = {"fc.weight": torch.zeros(40, 50, dtype=torch.bool), "fc.bias": torch.ones(40, dtype=torch.bool),
            "out.weight": torch.zeros(10, 40, dtype=torch.bool), "out.bias": torch.ones(10, dtype=torch.bool)}
    mask["fc.weight"].view(-1)[:200] = True
    mask["out.weight"].view(-1)[:40] = True
    draws = [random_mask_per_module(mask, torch.Generator().manual_seed(s)) for s in range(20)]
    for rand in draws:
        for module in ("fc", "out"):
            kept = int(rand[f"{module}.weight"].sum() + rand[f"{module}.bias"].sum())
            assert kept == int(mask[f"{module}.weight"].sum() + mask[f"{module}.bias"].sum())
    # every entry of a module is equally likely: the biases keep about the module's fraction, 240/2040,
    # not all of them (a hypergeometric mean of 4.7 of 40 with sd ~2; all 40 would be 17 sd away)
    bias_kept = np.mean([float(r["fc.bias"].sum()) for r in draws])
    assert 2.5 < bias_kept < 7.5
