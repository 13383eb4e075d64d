"""Function-preserving changes of basis (`lth.basis`) and the basis branches' one-shot masks."""
from __future__ import annotations

import copy

import pytest
import torch

from experiments.models.mlp import MLP
from channels.units import residual_layout
from experiments.models.vision import Conv2
from experiments.tasks.base import DecoupledSGD
from lth.basis import Identity, InputRotation, ResidualRotation
from lth.errors import LTCError
from lth.orthogonal import haar_orthogonal
from lth.masks import density
from lth.pruning import prune_to_counts
from lth.reparam import rotate_slots
from lth.rotation import rotate_residual_basis
from tests.test_rotation import IDS, logits, tiny_gpt
from tests.test_units import IDS as SMALL_VOCAB_IDS
from tests.test_units import tiny_llama, tiny_neox


def _rotated(net, change):
    other = copy.deepcopy(net)
    other.load_state_dict(change.weights(net.state_dict()))
    change.attach(other)
    return other


def test_haar_rotation_is_orthogonal():
    q = haar_orthogonal(9, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q @ q.T, torch.eye(9, dtype=torch.float64))


def test_input_rotation_keeps_the_function_and_changes_the_coordinates():
    torch.manual_seed(0)
    net = MLP(12, [16], 3).double().eval()
    x = torch.randn(20, 12, dtype=torch.float64)
    change = InputRotation(net, seed=1)
    rotated = _rotated(net, change)
    torch.testing.assert_close(rotated(x), net(x))
    assert not torch.allclose(rotated.hidden[0].weight, net.hidden[0].weight)
    torch.testing.assert_close(rotated.hidden[0].weight, net.hidden[0].weight @ change.rotation.T)


def test_sgd_is_equivariant_to_the_input_rotation():
    """One SGD step with momentum and L2 from rotated weights lands on the rotated step: under SGD
    the rotation changes nothing but the coordinates magnitude pruning sees."""
    torch.manual_seed(0)
    net = MLP(6, [8], 2).double()
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 2, (32,))
    change = InputRotation(net, seed=3)
    rotated = _rotated(net, change)
    for model in (net, rotated):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.testing.assert_close(change.weights(net.state_dict())["hidden.0.weight"], rotated.hidden[0].weight)


def test_residual_rotation_keeps_a_trained_gpt2_function():
    model = tiny_gpt()
    change = ResidualRotation(lambda: tiny_gpt(), 5, residual_layout(model).slots)
    rotated = copy.deepcopy(model)
    rotated.load_state_dict(change.weights(model.state_dict()))
    torch.testing.assert_close(logits(rotated, IDS), logits(model, IDS))
    assert Identity().weights(model.state_dict()).keys() == model.state_dict().keys()


def test_prune_to_counts_keeps_the_largest_entries_at_the_given_counts():
    weights = {"a": torch.tensor([[0.1, -3.0], [2.0, 0.5]]), "b": torch.tensor([1.0, -1.0, 0.2])}
    like = {"a": torch.tensor([[True, False], [False, True]]), "b": torch.tensor([False, False, True])}
    mask = prune_to_counts(weights, like)
    assert mask["a"].tolist() == [[False, True], [True, False]]  # the two largest |w| of a
    assert mask["b"].tolist() == [False, True, False]  # ties broken by position: the earlier one is pruned
    assert density(mask) == density(like)


def _magnitudes(state, names):
    return torch.cat([state[n].abs().flatten() for n in names]).sort().values


@pytest.mark.parametrize("make", [tiny_gpt, tiny_neox, tiny_llama], ids=["gpt2", "neox", "llama"])
def test_the_two_basis_arms_are_like_for_like_when_q_is_the_identity(make):
    """Both residual arms fold the norms: with Q = I the rotated arm's change and the identity arm
    give the same network, the same function and the same weight magnitudes, so magnitude pruning
    sees one network; the unfolded weights (the old identity arm) have other magnitudes."""
    model = make()
    slots = residual_layout(model).slots
    identity_arm = ResidualRotation(make, 0, slots, rotate=False).weights(model.state_dict())
    folded = copy.deepcopy(model)
    q = rotate_residual_basis(folded, slots, identity=True)
    assert torch.equal(q, torch.eye(q.shape[0], dtype=torch.float64))
    rotated_with_identity = {k: v.clone() for k, v in folded.state_dict().items()}
    folded_twice = copy.deepcopy(folded)
    folded_twice.load_state_dict(rotate_slots(rotated_with_identity, slots, q))  # the rotation itself at Q = I
    prunable = [n for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n and "wte" not in n
                and "wpe" not in n and "lm_head" not in n and "embed_out" not in n]
    for state in (rotated_with_identity, folded_twice.state_dict()):
        torch.testing.assert_close(_magnitudes(state, prunable), _magnitudes(identity_arm, prunable), atol=1e-12, rtol=0)
        mask_a, mask_b = prune_to_counts(identity_arm, _half(model, prunable)), prune_to_counts(state, _half(model, prunable))
        assert all(torch.equal(mask_a[n], mask_b[n]) for n in prunable)
    arm = copy.deepcopy(model)
    arm.load_state_dict(identity_arm)
    torch.testing.assert_close(logits(arm, SMALL_VOCAB_IDS), logits(model, SMALL_VOCAB_IDS), atol=1e-6, rtol=0)
    unfolded = model.state_dict()
    assert (_magnitudes(unfolded, prunable) - _magnitudes(identity_arm, prunable)).abs().max() > 1e-2


def _half(model, names):
    gen = torch.Generator().manual_seed(0)
    return {n: torch.rand(dict(model.named_parameters())[n].shape, generator=gen) < 0.5 for n in names}


@pytest.mark.parametrize("make", [tiny_neox, tiny_llama], ids=["neox", "llama"])
def test_the_residual_rotation_keeps_a_neox_and_a_llama_function(make):
    model = make()
    change = ResidualRotation(make, 5, residual_layout(model).slots)
    rotated = copy.deepcopy(model)
    rotated.load_state_dict(change.weights(model.state_dict()))
    torch.testing.assert_close(logits(rotated, SMALL_VOCAB_IDS), logits(model, SMALL_VOCAB_IDS), atol=1e-6, rtol=0)
    assert not torch.allclose(rotated.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_the_input_rotation_refuses_a_net_whose_input_layer_is_not_linear():
    with pytest.raises(LTCError, match="Conv2d.*cannot apply"):
        InputRotation(Conv2(num_classes=3, image_size=8, width=0.1), seed=0)
    with pytest.raises(LTCError, match="Embedding.*cannot apply"):
        InputRotation(tiny_gpt(), seed=0)


def test_decoupled_sgd_shrinks_then_steps_and_is_rotation_equivariant():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.0]))
    opt = DecoupledSGD([w], lr=0.1, momentum=0.9, decay=0.5)
    (w * torch.tensor([1.0, 1.0, 1.0])).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0, 0.0]) * (1 - 0.05) - 0.1)
    net = MLP(6, [8], 2).double()
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 2, (32,))
    change = InputRotation(net, seed=3)
    rotated = _rotated(net, change)
    for model in (net, rotated):
        opt = DecoupledSGD(model.parameters(), lr=0.1, momentum=0.9, decay=0.3)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.testing.assert_close(change.weights(net.state_dict())["hidden.0.weight"], rotated.hidden[0].weight)
