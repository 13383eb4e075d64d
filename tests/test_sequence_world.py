"""The planted sequence world (`experiments.data.sequence_world`): its routes are what they say,
the labels are previous-token copies, and a trained network carries the task through the route
(coordinate-aligned in one world, dense in the other), checked by projecting its residual stream."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math

import pytest
import torch

from channels.units import residual_layout
from experiments.data.sequence_world import (
    SequenceWorldDataModule,
    lookup_table,
    planted_route,
    previous_token_labels,
    route_check,
)
from experiments.models.gpt import planted_gpt2
from experiments.tasks.language import LanguageModelTask
from lth.errors import LTCError
from lth.orthogonal import random_rotation_fixing_ones
from lth.pruning import select_prunable
from lth.reparam import rotate_slots

SMALL = {"vocab": 8, "length": 6, "width": 32}


def test_the_routes_are_one_hot_or_a_rotation_of_it():
    coords = planted_route("subcircuit", 8, 6, 32, 0)
    assert torch.equal(coords.embedding, torch.eye(32)[:8]) and torch.equal(coords.positions, torch.eye(32)[8:14])
    dense = planted_route("channel", 8, 6, 32, 0)
    torch.testing.assert_close(dense.basis.T @ dense.basis, torch.eye(14), atol=1e-6, rtol=0)
    torch.testing.assert_close(dense.embedding @ dense.embedding.T, torch.eye(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(dense.embedding.sum(1), torch.ones(8), atol=1e-5, rtol=0)  # R fixes the ones direction
    assert dense.embedding.abs().max() < 0.8 and (dense.embedding.abs() > 1e-3).float().mean() > 0.9
    assert not torch.equal(dense.basis, planted_route("channel", 8, 6, 32, 1).basis)
    with pytest.raises(LTCError, match="narrower"):
        planted_route("subcircuit", 30, 6, 32, 0)


def test_the_labels_are_the_lookup_of_the_previous_token():
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    assert previous_token_labels(tokens).tolist() == [[-100, -100, 3, 1, 4]]
    table = lookup_table("lookup", 6, 0)
    assert sorted(table.tolist()) == list(range(6)) and not torch.equal(table, torch.arange(6))
    assert previous_token_labels(tokens, table).tolist() == [[-100, -100, *table[[3, 1, 4]].tolist()]]
    assert torch.equal(lookup_table("copy", 6, 0), torch.arange(6))


def test_the_planted_model_freezes_its_route_and_norm_gains():
    net = planted_gpt2("channel", **SMALL)
    frozen = sorted(n for n, p in net.named_parameters() if not p.requires_grad)
    assert frozen == ["lm_head.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_2.weight",
                      "transformer.ln_f.weight", "transformer.wpe.weight", "transformer.wte.weight"]
    torch.testing.assert_close(net.transformer.wte.weight, planted_route("channel", 8, 6, 32, 0).embedding)
    assert not any("wte" in n or "wpe" in n or "lm_head" in n for n in select_prunable(net, [], []))


def _trained(route: str) -> tuple:
    torch.manual_seed(0)
    data = SequenceWorldDataModule(route=route, num_train=2000, num_test=300, batch_size=64, **SMALL)
    net = planted_gpt2(route, **SMALL)
    task = LanguageModelTask(net)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    step = 0
    while step < 250:
        for batch in data.train_dataloader():
            loss_sum, _, count = task.token_sums(batch)
            opt.zero_grad()
            (loss_sum / count).backward()
            opt.step()
            step += 1
    return net.eval(), data


@pytest.mark.parametrize("route", ["subcircuit", "channel"])
def test_a_trained_network_carries_the_task_through_the_planted_route(route):
    net, data = _trained(route)
    rows = {(r["site"], r["projection"]): r for r in route_check(net, data, ["resid_pre.0", "resid_post.0"])}
    intact = rows[("-", "none")]
    assert intact["accuracy"] > 0.95
    for site in ("resid_pre.0", "resid_post.0"):
        assert rows[(site, "route")]["loss"] < 1.1 * intact["loss"] + 1e-3
        assert rows[(site, "off_route")]["accuracy"] < 2.0 / 8  # chance is 1/8
        coordinates = rows[(site, "coordinates")]["loss"]
        if route == "subcircuit":
            assert coordinates < 1.1 * intact["loss"] + 1e-3
        else:
            assert coordinates > 5 * intact["loss"] and coordinates > 0.05
    assert math.isfinite(intact["loss"])


def _sgd_steps(net, data, steps):
    task = LanguageModelTask(net)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.3, momentum=0.9)
    for step, batch in zip(range(steps), data.train_dataloader()):
        loss_sum, _, count = task.token_sums(batch)
        opt.zero_grad()
        (loss_sum / count).backward()
        opt.step()


def test_the_channel_world_trains_as_the_subcircuit_world_in_another_basis():
    """SGD in the channel world from the rotated init lands on the rotated subcircuit network: the
    worlds differ by the basis of the stream only."""
    torch.manual_seed(0)
    sub, chan = planted_gpt2("subcircuit", **SMALL).double(), planted_gpt2("channel", **SMALL).double()
    frame = random_rotation_fixing_ones(32, torch.Generator().manual_seed(0))
    slots = residual_layout(sub).slots
    chan.load_state_dict(rotate_slots(sub.state_dict(), slots, frame))
    torch.testing.assert_close(chan.transformer.wte.weight.float(), planted_route("channel", 8, 6, 32, 0).embedding)
    data = SequenceWorldDataModule(route="subcircuit", num_train=320, batch_size=32, **SMALL)
    _sgd_steps(sub, data, 10)
    _sgd_steps(chan, data, 10)
    back = rotate_slots(chan.state_dict(), slots, frame.T)
    for name, value in sub.state_dict().items():
        torch.testing.assert_close(back[name], value, atol=1e-7, rtol=0)
    assert not torch.allclose(chan.transformer.h[0].mlp.c_fc.weight, sub.transformer.h[0].mlp.c_fc.weight)
