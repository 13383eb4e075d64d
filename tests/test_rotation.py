"""The rotation control keeps a GPT-2's function and moves its weights off the standard basis."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from experiments.models.gpt import gpt2
from lth.errors import LTCError
from channels.units import residual_layout
from lth.folding import fold_norms
from lth.orthogonal import random_rotation_fixing_ones
from lth.rotation import rotate_residual_basis


def tiny_gpt(dtype: torch.dtype = torch.float64, tie: bool = False, seed: int = 0):
    """A 2-layer GPT-2 whose LayerNorms have non-trivial gains and biases, so folding matters."""
    torch.manual_seed(seed)
    model = gpt2(
        vocab_size=50, n_layer=2, n_head=2, n_embd=16, n_positions=12, tie_word_embeddings=tie
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                if name.endswith("weight"):
                    param.uniform_(0.5, 1.5)
                else:
                    param.normal_(0.0, 0.2)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))


def test_rotation_matrix_is_orthogonal_and_fixes_ones():
    q = random_rotation_fixing_ones(16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.T @ q, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        q @ torch.ones(16, dtype=torch.float64), torch.ones(16, dtype=torch.float64)
    )
    assert torch.det(q).abs().item() == pytest.approx(1.0)
    assert (q - torch.eye(16, dtype=torch.float64)).abs().max() > 0.1


def test_rotation_matrix_follows_the_generator():
    same = [random_rotation_fixing_ones(8, torch.Generator().manual_seed(3)) for _ in range(2)]
    other = random_rotation_fixing_ones(8, torch.Generator().manual_seed(4))
    assert torch.equal(same[0], same[1])
    assert not torch.allclose(same[0], other)


def test_folding_layer_norms_keeps_the_function():
    model = tiny_gpt()
    before = logits(model, IDS)
    fold_norms(model)
    torch.testing.assert_close(logits(model, IDS), before, atol=1e-10, rtol=0)
    for block in model.transformer.h:
        assert torch.equal(block.ln_1.weight, torch.ones(16, dtype=torch.float64))
        assert torch.equal(block.ln_2.bias, torch.zeros(16, dtype=torch.float64))
    assert torch.equal(model.transformer.ln_f.weight, torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize("tie", [False, True])
def test_rotation_keeps_logits_in_float64(tie):
    model = tiny_gpt(tie=tie)
    before = logits(model, IDS)
    rotate_residual_basis(model, residual_layout(model).slots, torch.Generator().manual_seed(0))
    assert model.lm_head.weight is not model.transformer.wte.weight
    torch.testing.assert_close(logits(model, IDS), before, atol=1e-9, rtol=0)


def test_rotation_keeps_logits_in_float32():
    model = tiny_gpt(torch.float32)
    before = logits(model, IDS)
    rotate_residual_basis(model, residual_layout(model).slots, torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(model, IDS), before, atol=1e-4, rtol=0)


def test_rotation_rotates_the_residual_stream_by_q():
    """The pre-LN residual after each block is the original residual times Q."""
    model = tiny_gpt()
    captured = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: captured.append(o[0])) for b in model.transformer.h
    ]
    logits(model, IDS)
    q = rotate_residual_basis(model, residual_layout(model).slots, torch.Generator().manual_seed(0))
    logits(model, IDS)
    for hook in hooks:
        hook.remove()
    original, rotated = captured[:2], captured[2:]
    for x, y in zip(original, rotated):
        torch.testing.assert_close(y, x @ q, atol=1e-9, rtol=0)


def test_rotation_changes_the_embedding_basis_but_not_its_geometry():
    model = tiny_gpt()
    wte = model.transformer.wte.weight.clone()
    rotate_residual_basis(model, residual_layout(model).slots, torch.Generator().manual_seed(0))
    rotated = model.transformer.wte.weight
    assert (rotated - wte).abs().max() > 0.1 * wte.abs().max()
    torch.testing.assert_close(rotated @ rotated.T, wte @ wte.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(rotated.sum(1), wte.sum(1), atol=1e-10, rtol=0)


def test_rotation_moves_the_largest_weights():
    """Large weights planted on one residual coordinate spread out: no privileged basis is left."""
    model = gpt2(vocab_size=50, n_layer=1, n_head=2, n_embd=64, n_positions=8).double()
    c_fc = model.transformer.h[0].mlp.c_fc.weight
    with torch.no_grad():
        c_fc[5, :10] = 1.0
    top_before = set(c_fc.abs().flatten().topk(10).indices.tolist())
    rotate_residual_basis(model, residual_layout(model).slots, torch.Generator().manual_seed(0))
    top_after = set(c_fc.abs().flatten().topk(10).indices.tolist())
    assert len(top_before & top_after) <= 1
    assert c_fc.abs().max() < 0.6


def test_zero_final_gain_is_refused():
    model = tiny_gpt()
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = 0.0
    with pytest.raises(LTCError, match="ln_f"):
        rotate_residual_basis(model, residual_layout(model).slots)
