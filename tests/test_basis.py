"""Function-preserving changes of basis (`lth.basis`) and the basis branches' one-shot masks."""
from __future__ import annotations

import copy

import torch

from experiments.models.mlp import MLP
from lth.basis import Identity, InputRotation, ResidualRotation, haar_orthogonal
from lth.masks import density
from lth.pruning import prune_to_counts
from tests.test_rotation import IDS, logits, tiny_gpt


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
    change = ResidualRotation(lambda: tiny_gpt(), seed=5)
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
