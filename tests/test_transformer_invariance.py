"""The voting statistics at a transformer's unit sites (MLP neurons `mlp_hidden.0`, heads `attn.0`
as blocks, residual coordinates `resid_pre.0` / `resid_post.0`) are unchanged by the network's
exact reparametrisations (`channels.units.reparametrise`: norms folded, every layout's units
permuted, MLP neurons and heads rescaled by lognormal(0, 1) factors) to 1e-6, and changed by a
rotation of the residual stream, which is no symmetry of the units: it is what the tests measure.

A one-layer GPT-2 and a GPT-NeoX (interleaved fused q k v, rotary positions), both with ReLU MLP
neurons so that rescaling them is a symmetry too, are trained for a few hundred Adam steps on a planted
previous-token lookup, only positions t >= 1 scored (labels -100 at t = 0)."""
from __future__ import annotations

import copy
from collections import namedtuple

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from channels.units import permute_like, reparametrise, residual_layout
from channels.verdict import localisation as localisation_test
from channels.verdict.alignment import alignment
from channels.verdict.base import NO_POWER, midpoint, read_sites
from channels.verdict.causal import ablations, ticket_order
from channels.verdict.coordinates import canonical_frame
from channels.verdict.localisation import localisation
from channels.verdict.unit_sites import ticket_paths, unit_sites
from experiments.models.gpt import gpt2, planted_gpt2
from lth.pruning import magnitude_prune
from lth.rotation import rotate_residual_basis

TOLERANCE = 1e-6  # relative (and absolute near 0); the networks run in float64
VOCAB, LENGTH = 8, 6
SITES = ("mlp_hidden.0", "attn.0", "resid_pre.0", "resid_post.0")


def _lookup(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and labels: position t predicts pi(token at t - 1); position 0 is not scored."""
    gen = torch.Generator().manual_seed(seed)
    pi = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(99))
    x = torch.randint(0, VOCAB, (n, LENGTH), generator=gen)
    y = torch.full_like(x, -100)
    y[:, 1:] = pi[x[:, :-1]]
    return x, y


def _gpt2() -> torch.nn.Module:
    return gpt2(vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16, n_inner=32, n_positions=LENGTH,
                activation_function="relu")


def _neox() -> torch.nn.Module:
    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, max_position_embeddings=LENGTH, hidden_act="relu",
                           attn_implementation="eager")
    return GPTNeoXForCausalLM(config)


def _trained(build, steps: int = 250):
    torch.manual_seed(0)
    net = build().double()
    x, y = _lookup(512, 0)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        logits = net(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in net.parameters():
        p.requires_grad_(False)
    x, y = _lookup(128, 1)
    weights = {k: v for k, v in net.state_dict().items() if k.endswith("weight") and (".attn" in k or ".attention" in k or "mlp" in k)}
    mask = magnitude_prune(weights, {k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items()}, 0.8,
                           strategy="global")
    return net.eval(), x, y, mask


def _statistics(net, x, y, mask) -> dict[str, float]:
    found = {}
    scored = y != -100
    sites = unit_sites(mask, x, net)
    paths = ticket_paths(mask, sites)
    for site in sites:
        frame = canonical_frame(net, x, site.name, site.unit_of(), scored=scored)
        t2 = localisation(frame)
        t3 = ablations(net, x, y, frame, ticket_order(frame, paths[site.name]))
        t4 = alignment(net, x, frame, scored=scored)
        # each score (nan where the test has no power here) and its part that the units set
        found |= {f"T2 {site.name}": t2["rho"], f"T2 n_units {site.name}": t2["n_units"],
                  f"T3 {site.name}": t3["score"], f"T3 drop {site.name}": t3["drop_ticket_units"],
                  f"T4 {site.name}": t4["score"], f"T4 iia {site.name}": t4["iia_units"]}
    return found


@pytest.fixture(scope="module", params=["gpt2", pytest.param("neox", marks=pytest.mark.slow)])
def trained(request):
    return _trained(_gpt2 if request.param == "gpt2" else _neox)


def test_the_tiny_transformers_learn_the_lookup(trained):
    net, x, y, _ = trained
    scored = y != -100
    assert float((net(x).logits.argmax(-1) == y)[scored].double().mean()) > 0.5


def test_every_voting_statistic_at_neurons_heads_and_the_residual_stream_is_unchanged_by_reparametrisation(trained):
    net, x, y, mask = trained
    twin = reparametrise(net, seed=3)
    twin_mask = permute_like(mask, net, seed=3)
    assert torch.allclose(net(x).logits, twin(x).logits, rtol=1e-9, atol=1e-9)
    moved = [k for k, v in net.state_dict().items() if not torch.equal(v, twin.state_dict()[k])]
    assert any("mlp" in k for k in moved) and any("attn" in k or "attention" in k for k in moved)
    before, after = _statistics(net, x, y, mask), _statistics(twin, x, y, twin_mask)
    assert {f"T{t} {s}" for t in (2, 3, 4) for s in SITES} <= set(before)
    assert sum(np.isfinite(v) for v in before.values()) >= 16
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=TOLERANCE, abs=TOLERANCE, nan_ok=True), key


def test_a_rotation_of_the_residual_stream_changes_the_localisation_there():
    """The planted sequence world's coordinate-aligned route (frozen one-hot embeddings and
    unembedding) reads as a few residual coordinates; the same network with its stream rotated
    (the same function) spreads them over all."""
    torch.manual_seed(0)
    net = planted_gpt2(route="subcircuit", vocab=VOCAB, length=LENGTH, width=24, n_layer=1, n_head=2).double().eval()
    rotated = copy.deepcopy(net)
    with torch.no_grad():
        rotate_residual_basis(rotated, residual_layout(rotated).slots, torch.Generator().manual_seed(0))
    x, y = _lookup(128, 1)
    assert torch.allclose(net(x).logits, rotated(x).logits, rtol=1e-9, atol=1e-9)
    for site in ("resid_pre.0", "resid_post.0"):
        rho = {name: localisation(canonical_frame(model, x, site, scored=y != -100))["rho"]
               for name, model in (("planted", net), ("rotated", rotated))}
        assert rho["planted"] > 0.7 and rho["rotated"] < 0.3, (site, rho)


OneRun = namedtuple("OneRun", "seed")  # what `read_sites` asks of a run: its init seed


def test_a_site_too_narrow_for_its_channels_reads_no_power_and_says_why(trained):
    """Two heads cannot localise channels: T2 at `attn.0` gives no value in the seed, and the site
    reads `no power` with the numbers that failed (not the generic `inconclusive`); the residual
    sites, with room, keep their rho and their rule's reading."""
    net, x, y, mask = trained
    scored = y != -100
    per_site, result = {}, localisation_test.TEST.result()
    for site in unit_sites(mask, x, net):
        found = localisation(canonical_frame(net, x, site.name, site.unit_of(), scored=scored))
        result.details.append({"run": "s0", "site": site.name, **found})
        per_site[site.name] = {OneRun(seed=0): found["rho"]}
    read_sites(result, per_site, midpoint, "", localisation_test.why_no_power)
    heads = result.sites["attn.0"]
    assert heads.reading == NO_POWER and not heads.units
    assert heads.note.startswith("no power: 2 units leave too little room") and "k_eff" in heads.note
    for name in ("resid_pre.0", "resid_post.0"):
        assert result.sites[name].reading != NO_POWER and result.sites[name].units
