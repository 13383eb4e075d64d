"""The verdict's statistics against independent references, each test on tiny networks whose answer
is known by construction, and the verdict's rules (`channels.verdict`)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from channels.verdict import alignment, causal
from channels.verdict.base import (
    CHANNELS,
    INCONCLUSIVE,
    NETWORK,
    NO_TICKET,
    SUBCIRCUITS,
    TICKET,
    SiteResult,
    TestResult,
    claim_or_equivalence,
    midpoint,
)
from channels.verdict.battery import TESTS, verdict
from channels.verdict.localisation import localisation
from channels.verdict.stats import hypergeometric_overlap, t_interval, tost_equivalent
from channels.units import mlp_unit_layout, permute_units, weight_matching
from experiments.models.mlp import MLP


def test_t_interval_matches_scipy():
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert t_interval(values) == pytest.approx(expected)
    assert all(math.isnan(v) for v in t_interval([0.3]))


def test_tost_claims_equivalence_only_inside_the_margin():
    tight = [0.001, -0.002, 0.0, 0.003, -0.001]
    assert tost_equivalent(tight, 0.02)
    assert not tost_equivalent([v + 0.05 for v in tight], 0.02)
    assert not tost_equivalent([0.05, -0.05, 0.04, -0.04, 0.0], 0.02)  # mean 0 but too noisy to claim it


def test_hypergeometric_null_matches_scipy():
    found = hypergeometric_overlap(kept_a=30, kept_b=40, total=200, shared=15)
    null = stats.hypergeom(200, 30, 40)
    assert found["null_mean"] == pytest.approx(null.mean())
    assert found["z"] == pytest.approx((15 - null.mean()) / null.std())
    assert hypergeometric_overlap(30, 40, 200, 30)["excess"] == pytest.approx(1.0)


def _haar(d, k, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))[0]


def test_localisation_reads_units_one_and_random_directions_zero():
    d, k = 64, 4
    weights = np.array([4.0, 3.0, 2.0, 1.0])
    on_units = np.eye(d)[:, [3, 17, 40, 51]]
    mixed = on_units @ _haar(k, k, 1)  # any basis of the same units' span: the same reading
    spread = _haar(d, k, 2)
    assert localisation(on_units, weights)["rho"] == pytest.approx(1.0, abs=0.02)
    assert localisation(mixed, weights)["rho"] > 0.85
    assert abs(localisation(spread, weights)["rho"]) < 0.2


def test_weight_matching_recovers_a_permutation_of_hidden_units():
    torch.manual_seed(0)
    net = MLP(10, [12, 12], 3)
    a = {k: v.detach().clone() for k, v in net.state_dict().items()}
    layouts = [mlp_unit_layout(a, f"act.{i}") for i in range(2)]
    perms = [torch.randperm(12).numpy() for _ in layouts]
    b = dict(a)
    for layout, perm in zip(layouts, perms):
        b = permute_units(b, layout, perm)
    b = {k: v + 1e-3 * torch.randn_like(v) for k, v in b.items()}
    found = weight_matching(a, b, layouts)
    for layout, perm, match in zip(layouts, perms, found):  # applying the match undoes the permutation
        assert np.array_equal(perm[match], np.arange(12))


def _two_layer(w_in: torch.Tensor, bias: torch.Tensor, w_out: torch.Tensor) -> MLP:
    net = MLP(w_in.shape[1], [w_in.shape[0]], w_out.shape[0])
    with torch.no_grad():
        net.hidden[0].weight.copy_(w_in)
        net.hidden[0].bias.copy_(bias)
        net.out.weight.copy_(w_out)
        net.out.bias.copy_(-w_out @ torch.relu(bias))  # logits = A z: the offsets of the hidden units cancel
    return net.eval()


@pytest.fixture(scope="module")
def tiny_worlds():
    """Hand-built 8 -> 32 -> 4 nets on the same rule y = argmax A z, z = 2 input directions: in one
    the rule runs through 2 hidden units (the rest silent), in the other through a dense rotated
    2-d subspace spread over all 32 units."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1500, 8, generator=gen)
    rule = torch.randn(4, 2, generator=gen)
    project = torch.linalg.qr(torch.randn(8, 2, generator=gen))[0].T  # z = P x
    # subcircuit: units 5 and 9 compute relu(z_i + 3) (linear in z on these inputs), the rest are silent
    w_sub = torch.zeros(32, 8)
    w_sub[[5, 9]] = project
    bias_sub = torch.full((32,), -1.0)
    bias_sub[[5, 9]] = 3.0
    out_sub = torch.zeros(4, 32)
    out_sub[:, [5, 9]] = rule
    # channel: every unit mixes both latents, relu(Q z + 3) ~ Q z + 3
    mix = torch.linalg.qr(torch.randn(32, 2, generator=gen))[0]
    w_ch, bias_ch = mix @ project, torch.full((32,), 3.0)
    out_ch = rule @ mix.T
    nets = {SUBCIRCUITS: _two_layer(w_sub, bias_sub, out_sub), CHANNELS: _two_layer(w_ch, bias_ch, out_ch)}
    y = (x @ project.T @ rule.T).argmax(-1)
    units = {SUBCIRCUITS: np.array([5, 9, *[j for j in range(32) if j not in (5, 9)]]),
             CHANNELS: np.arange(32)}
    return nets, x, y, units


@pytest.mark.parametrize("truth", [SUBCIRCUITS, CHANNELS])
def test_causal_ablation_moves_the_right_way(tiny_worlds, truth):
    nets, x, y, units = tiny_worlds
    found = causal.ablations(nets[truth], x, y, "act.0", units[truth])
    assert found["k"] == 2 and found["accuracy"] > 0.95
    assert found["drop_channels"] > 0.4  # the channels carry the decision in both worlds
    assert (found["ratio"] > 0.9) if truth == SUBCIRCUITS else (found["ratio"] < 0.2), found


@pytest.mark.parametrize("truth", [SUBCIRCUITS, CHANNELS])
def test_alignment_search_moves_the_right_way(tiny_worlds, truth):
    nets, x, _, _ = tiny_worlds
    found = alignment.alignment(nets[truth], x, "act.0")
    assert found["iia_subspace"] > 0.9  # the learned 2-d subspace carries the decision in both worlds
    if truth == SUBCIRCUITS:
        assert found["ratio"] > 0.9 and sorted(found["units"]) == [5, 9]
    else:
        assert found["ratio"] < 0.4


def _site(values, rule) -> SiteResult:
    site = SiteResult(units={f"seed {i}": v for i, v in enumerate(values)}, effect=float(np.mean(values)),
                      ci=t_interval(values))
    site.reading = rule(site, values)
    return site


def test_accuracy_rule_separates_claim_equivalence_and_noise():
    rule = claim_or_equivalence(SUBCIRCUITS, CHANNELS)
    assert _site([0.05, 0.06, 0.04, 0.05, 0.07], rule).reading == SUBCIRCUITS
    assert _site([0.002, -0.003, 0.001, 0.0, -0.001], rule).reading == CHANNELS
    assert _site([0.03, -0.03, 0.05, -0.04, 0.0], rule).reading == INCONCLUSIVE
    assert _site([0.004, 0.005, 0.004, 0.006, 0.005], rule).reading == CHANNELS  # credible but below one point
    assert _site([0.7, 0.8, 0.9, 0.75, 0.85], midpoint).reading == SUBCIRCUITS
    assert _site([0.1, 0.2, 0.0, 0.15, 0.05], midpoint).reading == CHANNELS


def _results(ticket: str, readings: dict[str, dict[str, str]], seeds: int = 5) -> list[TestResult]:
    """Results of the battery with chosen readings (test -> site -> reading)."""
    out = []
    for test in TESTS:
        result = test.result()
        chosen = {NETWORK: ticket} if test.key == "T0" else readings.get(test.key, {})
        for site, reading in chosen.items():
            result.sites[site] = SiteResult(units={f"seed {i}": 0.0 for i in range(seeds)}, reading=reading,
                                            provisional=seeds < 5)
        out.append(result)
    return out


def test_no_ticket_is_a_verdict_of_its_own_not_a_vote_for_channels():
    # The old battery read "the ticket is no better than its controls" as evidence for channels.
    everything_channels = {key: {"input": CHANNELS} for key in ("T1", "T2", "T3", "T4")}
    assert verdict(_results(NO_TICKET, everything_channels))["verdict"] == NO_TICKET
    assert verdict(_results(INCONCLUSIVE, everything_channels))["verdict"] == INCONCLUSIVE


def test_a_localised_site_makes_subcircuits_and_channels_need_every_site():
    hidden_subcircuit = {"T1": {"input": CHANNELS}, "T2": {"input": CHANNELS, "act.0": SUBCIRCUITS},
                         "T3": {"act.0": SUBCIRCUITS}}
    assert verdict(_results(TICKET, hidden_subcircuit))["verdict"] == SUBCIRCUITS
    spread = {"T1": {"input": CHANNELS}, "T2": {"input": CHANNELS, "act.0": CHANNELS}}
    assert verdict(_results(TICKET, spread))["verdict"] == CHANNELS
    conflict = {"T2": {"act.0": CHANNELS}, "T3": {"act.0": SUBCIRCUITS}}
    assert verdict(_results(TICKET, conflict))["verdict"] == INCONCLUSIVE


def test_descriptive_tests_do_not_vote_and_few_seeds_are_provisional():
    only_descriptive = {"T5": {NETWORK: SUBCIRCUITS}, "T6": {NETWORK: SUBCIRCUITS}}
    assert verdict(_results(TICKET, only_descriptive))["verdict"] == INCONCLUSIVE
    few = verdict(_results(TICKET, {"T2": {"act.0": CHANNELS}}, seeds=3))
    assert few["verdict"] == CHANNELS and few["provisional"] is True
