"""Modular addition data: every pair once, correct answers, honoured fractions, seeded splits."""

import pytest
import torch

from experiments.data.modadd import ModularAdditionDataModule
from lth.errors import LTCError


def all_splits(data):
    return [data.train_set.tensors, data.val_set.tensors, data.test_set.tensors]


def test_every_pair_appears_exactly_once_across_splits():
    p = 113
    data = ModularAdditionDataModule(p=p)
    pairs = torch.cat([ids[:, 0] * p + ids[:, 1] for ids, _ in all_splits(data)])
    assert torch.equal(pairs.sort().values, torch.arange(p * p))


def test_sequences_and_labels_are_correct():
    p = 13
    data = ModularAdditionDataModule(p=p)
    for ids, labels in all_splits(data):
        a, b, equals, answer = ids.unbind(1)
        assert torch.equal(equals, torch.full_like(a, p))
        assert all((int(x) + int(y)) % p == int(c) for x, y, c in zip(a, b, answer))
        assert torch.equal(labels[:, 3], answer)
        assert (labels[:, :3] == -100).all()
    assert data.vocab_size == p + 1


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_train_fraction_is_honoured_and_the_rest_split_in_half(fraction):
    p = 113
    data = ModularAdditionDataModule(p=p, train_fraction=fraction)
    n_train, n_val, n_test = (len(ids) for ids, _ in all_splits(data))
    assert n_train == round(fraction * p * p)
    assert abs(n_val - n_test) <= 1 and n_train + n_val + n_test == p * p


def test_split_follows_the_seed():
    first, again, other = (
        ModularAdditionDataModule(p=17, seed=s).train_set.tensors[0] for s in (0, 0, 1)
    )
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_full_batch_loader_yields_the_whole_training_set_once():
    data = ModularAdditionDataModule(p=17)
    batches = list(data.train_dataloader())
    assert len(batches) == 1
    assert torch.equal(batches[0][0], data.train_set.tensors[0])
    assert torch.equal(batches[0][1], data.train_set.tensors[1])


def test_minibatch_loader_covers_the_training_set():
    data = ModularAdditionDataModule(p=17, batch_size=16)
    ids = torch.cat([b[0] for b in data.train_dataloader()])
    codes = ids[:, 0] * 17 + ids[:, 1]
    expected = data.train_set.tensors[0][:, 0] * 17 + data.train_set.tensors[0][:, 1]
    assert torch.equal(codes.sort().values, expected.sort().values)


def test_probe_inputs_are_fixed_validation_prompts_without_answers():
    data = ModularAdditionDataModule(p=17, probe_size=5)
    probe = data.probe_inputs()
    assert probe.shape == (5, 3)
    assert (probe[:, 2] == 17).all()
    assert torch.equal(data.probe_inputs(3), data.val_set.tensors[0][:3, :3])


@pytest.mark.parametrize(
    "kwargs", [{"p": 1}, {"train_fraction": 0.0}, {"train_fraction": 1.0}, {"batch_size": 0}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(LTCError):
        ModularAdditionDataModule(**kwargs)
