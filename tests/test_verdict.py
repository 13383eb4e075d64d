"""The verdict's statistics against independent references, each test on tiny networks whose answer
is known by construction, and the verdict's rules (`channels.verdict`)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from channels.units import mlp_unit_layout, permute_units, weight_matching
from channels.verdict import alignment, causal
from channels.verdict import ticket as ticket_test
from channels.verdict.base import (
    CHANNELS,
    INCONCLUSIVE,
    MIXED,
    NETWORK,
    NO_TICKET,
    SUBCIRCUITS,
    TICKET,
    SiteResult,
    TestResult,
    claim_or_equivalence,
    midpoint,
)
from channels.verdict.battery import CONFLICT, TESTS, verdict
from channels.verdict.coordinates import Frame, canonical_frame, channels, unit_loading
from channels.verdict.learned import LEARNED, NOTHING_LEARNED
from channels.verdict.localisation import localisation
from channels.verdict.rundata import RunData, Trained
from channels.verdict.stats import hypergeometric_overlap, t_interval, tost_equivalent
from channels.verdict.unit_sites import ticket_paths, unit_sites
from experiments.models.mlp import MLP


def test_t_interval_matches_scipy():
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert t_interval(values) == pytest.approx(expected)
    assert all(math.isnan(v) for v in t_interval([0.3]))


def test_a_part_drawn_once_widens_the_interval_by_its_variance():
    """mean +- t_{n-1} sqrt(s^2/n + v_once): one basis draw that the seeds never resample (T1)."""
    values = [0.1, 0.3, 0.2, 0.5, 0.4]
    half = stats.t.ppf(0.975, 4) * math.sqrt(np.var(values, ddof=1) / 5 + 0.01)
    assert t_interval(values, once=0.01) == pytest.approx((0.3 - half, 0.3 + half))
    tight = [0.001, -0.002, 0.0, 0.003, -0.001]
    assert tost_equivalent(tight, 0.02) and not tost_equivalent(tight, 0.02, once=0.02 ** 2)


def test_one_basis_draw_adds_the_rotated_arms_variance_beyond_the_identity_arms():
    """basis_variance = var over seeds (data orders averaged) of the rotated arm - that of the
    identity arm, floored at 0, as computed by hand."""
    from dataclasses import dataclass

    from channels.verdict.basis import basis_variance

    @dataclass(eq=False)
    class Run:
        seed: int
    runs = [Run(s) for s in (0, 0, 1, 2)]  # seed 0 ran two data orders
    identity = dict(zip(runs, (0.90, 0.92, 0.91, 0.93)))
    rotated = dict(zip(runs, (0.80, 0.84, 0.90, 0.86)))
    by_hand = np.var([0.82, 0.90, 0.86], ddof=1) - np.var([0.91, 0.91, 0.93], ddof=1)
    assert basis_variance(identity, rotated) == pytest.approx(by_hand)
    assert basis_variance(rotated, identity) == 0.0
    assert basis_variance(dict(list(identity.items())[:2]), dict(list(rotated.items())[:2])) == 0.0


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


def test_ticket_paths_count_the_masks_input_to_output_paths_through_each_unit():
    # 3 inputs -> 2 hidden -> 2 hidden -> 1 output, by hand: unit 1 of act.0 keeps its inputs but no output
    mask = {"hidden.0.weight": torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool),
            "hidden.1.weight": torch.tensor([[1, 0], [1, 0]], dtype=torch.bool),
            "out.weight": torch.tensor([[1, 1]], dtype=torch.bool)}
    sites = unit_sites(mask, torch.zeros(1, 3))
    paths = ticket_paths(mask, sites)
    assert paths["act.0"].tolist() == [2 * 2, 3 * 0]  # (paths in) x (paths out)
    assert paths["act.1"].tolist() == [2, 2]
    assert paths["input"].tolist() == [2, 2, 0]  # input 2 reaches only the cut-off unit
    assert sum(paths["input"]) == sum(paths["act.0"]) == sum(paths["act.1"])  # every path crosses every layer


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


def _frames(nets, x):
    frames = {}
    for truth, net in nets.items():
        net = net.double()
        for p in net.parameters():
            p.requires_grad_(False)
        frames[truth] = (net, canonical_frame(net, x.double(), "act.0"))
    return frames


@pytest.mark.parametrize("truth", [SUBCIRCUITS, CHANNELS])
def test_localisation_reads_the_units_and_the_spread(tiny_worlds, truth):
    nets, x, _, _ = tiny_worlds
    _, frame = _frames(nets, x)[truth]
    found = localisation(frame)
    assert found["k_eff"] == pytest.approx(2, abs=0.5) and found["n_null"] > 5  # 2 channels in 32 units
    assert (found["rho"] > 0.9) if truth == SUBCIRCUITS else (found["rho"] < 0.2), found


def test_the_channels_and_the_units_they_occupy_are_the_fewest_holding_nine_tenths(monkeypatch):
    """Hand counts. Channels: spectrum shares 0.82, 0.15, 0.03 need 2 channels for 90% (their
    effective number 1 / sum w^2 = 1.45 rounds to 1, and a 3-class decision is 2-dimensional).
    Units: a five-unit subcircuit dominated by one unit (effective number 1.9) occupies 4 units at
    90% (0.71 + 0.09 + 0.09 = 0.89 < 0.9); a flat channel over 64 units is capped at a quarter
    (16); m is never below k."""
    from types import SimpleNamespace
    loading = {"sub": [0.71, 0.09, 0.09, 0.06, 0.02, *[0.03 / 59] * 59], "flat": [1 / 64] * 64}
    frame = SimpleNamespace(unit_count=64)
    two = SimpleNamespace(weights=torch.tensor([0.82, 0.15, 0.03]))
    for name, expected in (("sub", (2, 4)), ("flat", (2, 16))):
        monkeypatch.setattr(causal, "unit_loading", lambda f, c, values=loading[name]: torch.tensor(values))
        assert causal.counts(frame, two) == expected
    monkeypatch.setattr(causal, "unit_loading", lambda f, c: torch.tensor(loading["sub"]))
    assert causal.counts(frame, SimpleNamespace(weights=torch.full((8,), 1 / 8))) == (8, 8)  # a unit per channel


@pytest.mark.parametrize("truth", [SUBCIRCUITS, CHANNELS])
def test_causal_ablation_moves_the_right_way(tiny_worlds, truth):
    """The ticket keeps the units holding most of the channels first (the best a ticket can do).
    In the dense world those 8 units still cost a fifth of what the channels cost beyond random
    units, as much as the best 8 units of a rotated copy: the null at the same shape reads 0."""
    nets, x, y, _ = tiny_worlds
    net, frame = _frames(nets, x)[truth]
    keep = np.zeros(frame.unit_count)
    keep[frame.unit_ids.numpy()] = unit_loading(frame, channels(frame, causal.TOP)).numpy()
    found = causal.ablations(net, x.double(), y, frame, causal.ticket_order(frame, keep))
    assert found["k"] == 2 and found["accuracy"] > 0.95
    assert found["m"] == (2 if truth == SUBCIRCUITS else 8)  # the units the channels occupy (a quarter at most)
    assert found["drop_channels"] > 0.4  # the channels carry the decision in both worlds
    if truth == SUBCIRCUITS:
        assert found["score"] > 0.9 and found["own_units_null"] < 0.2, found
    else:
        assert 0.1 < found["ticket_units"] < 0.4 and found["own_units_null"] > 0.1, found  # above random units
        assert -1 < found["score"] < 0.1, found  # ... (above -1) and no better than where no unit is special (0)


@pytest.mark.parametrize("truth", [SUBCIRCUITS, CHANNELS])
def test_a_ticket_that_keeps_other_units_is_no_vote_for_channels_where_units_carry_the_channels(tiny_worlds, truth):
    """A ticket keeping everything but the channels' units scores low in both worlds; where two units
    carry the channels (special against rotated copies) that is a ticket that missed a subcircuit,
    no value; where the channels spread it stays a value, read as channels."""
    nets, x, y, units = tiny_worlds
    net, frame = _frames(nets, x)[truth]
    order = causal.ticket_order(frame, np.argsort(units[truth]).astype(float))  # `units` kept last
    found = causal.ablations(net, x.double(), y, frame, order)
    if truth == SUBCIRCUITS:
        assert found["own_units"] > 0.9 and found["own_units_special"] > 0.5 and math.isnan(found["score"]), found
    else:
        assert found["own_units_special"] < 0.5 and found["score"] < 0.2, found


@pytest.mark.parametrize("truth", [SUBCIRCUITS, CHANNELS])
def test_alignment_search_moves_the_right_way(tiny_worlds, truth):
    nets, x, _, _ = tiny_worlds
    net, frame = _frames(nets, x)[truth]
    found = alignment.alignment(net, x.double(), frame)
    assert found["iia_subspace"] > 0.9  # the learned 2-d subspace carries the decision in both worlds
    assert (found["score"] > 0.9) if truth == SUBCIRCUITS else (found["score"] < 0.2), found


def test_the_null_of_a_narrow_dense_channel_is_read_at_its_own_shape():
    """A dense rank-1 channel in 16 units: its best 4 units carry much of it (the former T4 read this as
    subcircuits, ratio above 1/2), and so do the best 4 units of its rotated copies: read as channels."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 6, generator=gen, dtype=torch.float64)
    q = torch.randn(16, generator=gen, dtype=torch.float64)
    z = x[:, 0]
    net = _two_layer(torch.outer(q, torch.eye(6, dtype=torch.float64)[0]).float(), torch.full((16,), 4.0),
                     torch.stack([q, -q]).float() / q.norm()).double()
    for p in net.parameters():
        p.requires_grad_(False)
    frame = canonical_frame(net, x, "act.0")
    found = alignment.alignment(net, x, frame, k=4)
    assert found["ratio"] > 0.5 and found["ratio_null"] > 0.5  # chance is high at this shape ...
    assert found["score"] < 0.5, found  # ... and the score reads it against that
    assert localisation(frame)["rho"] < 0.5
    assert (z > 0).float().mean() > 0.3


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


def _controlled_runs(ticket: list[float], controls: list[float]) -> list[RunData]:
    """Runs whose sparsest level has the ticket and both positional controls at the given test accuracies."""
    def trained(level: int, branch, acc: float) -> Trained:
        return Trained(Path(branch or "ticket"), level, branch, {"density": 0.1, "test": {"test/acc": acc}})

    return [RunData(Path(f"seed_{i}"), {"seed_everything": i}, {0: trained(0, None, 0.99), 1: trained(1, None, t)},
                    {b: {1: trained(1, b, c)} for b in ticket_test.POSITIONAL})
            for i, (t, c) in enumerate(zip(ticket, controls))]


def test_ticket_statistic_is_the_log_error_ratio_and_the_gap_guards_its_size():
    # Four controls 2.5 points under the ticket and one that lost what the function needs: the gap's
    # t-interval crosses 0, the errors' ratio (2.5x in every seed, 11x in one) does not.
    heavy_tail = ticket_test.run(_controlled_runs([0.975] * 5, [0.95, 0.95, 0.95, 0.95, 0.72]))
    site = heavy_tail.sites[NETWORK]
    assert site.effect == pytest.approx(np.mean([math.log(0.05 / 0.025)] * 4 + [math.log(0.28 / 0.025)]))
    assert site.reading == TICKET and "accuracy gap +0.071 [-0.057" in site.note
    # At the ceiling a large ratio is a fraction of a point: no ticket (the gap lies below one point).
    ceiling = ticket_test.run(_controlled_runs([1.0, 0.999, 0.999, 1.0, 0.999], [0.993, 0.994, 0.992, 0.993, 0.994]))
    assert ceiling.sites[NETWORK].effect > 1.5 and ceiling.sites[NETWORK].reading == NO_TICKET
    noise = ticket_test.run(_controlled_runs([0.80, 0.74, 0.83, 0.70, 0.78], [0.77, 0.78, 0.76, 0.75, 0.77]))
    assert noise.sites[NETWORK].reading == INCONCLUSIVE


def _results(ticket: str, readings: dict[str, dict[str, str]], seeds: int = 5) -> list[TestResult]:
    """Results of the battery with chosen readings (test -> site -> reading); the dense networks learned."""
    out = []
    for test in TESTS:
        result = test.result()
        chosen = ({NETWORK: ticket} if test.key == "T0" else {NETWORK: LEARNED} if test.key == "L"
                  else readings.get(test.key, {}))
        for site, reading in chosen.items():
            result.sites[site] = SiteResult(units={f"seed {i}": 0.0 for i in range(seeds)}, reading=reading,
                                            provisional=seeds < 5)
        out.append(result)
    return out


def test_no_ticket_and_nothing_learned_are_verdicts_of_their_own_not_votes_for_channels():
    # The first battery read "the ticket is no better than its controls" as evidence for channels.
    everything_channels = {key: {"input": CHANNELS} for key in ("T1", "T2", "T3", "T4")}
    assert verdict(_results(NO_TICKET, everything_channels))["verdict"] == NO_TICKET
    # An unclear T0 stops nothing: the sites read, and the verdict says the ticket is unclear.
    unclear = verdict(_results(INCONCLUSIVE, everything_channels))
    assert unclear["verdict"] == CHANNELS and unclear["ticket"] == INCONCLUSIVE
    assert unclear["why"].startswith("channels at input; unclear whether there is a ticket (T0")
    silent = verdict(_results(INCONCLUSIVE, {"T2": {"input": CHANNELS}}))
    assert silent["verdict"] == INCONCLUSIVE and "unclear whether there is a ticket" in silent["why"]
    firm = verdict(_results(TICKET, everything_channels))
    assert firm["ticket"] == TICKET and "unclear" not in firm["why"]
    nothing = _results(TICKET, everything_channels)
    nothing[0].sites[NETWORK].reading = NOTHING_LEARNED
    assert verdict(nothing)["verdict"] == NOTHING_LEARNED


def test_a_site_reads_when_two_tests_agree_and_none_contradicts():
    agree = {"T2": {"act.0": SUBCIRCUITS}, "T3": {"act.0": SUBCIRCUITS}, "T4": {"act.0": INCONCLUSIVE}}
    found = verdict(_results(TICKET, agree))
    assert found["verdict"] == SUBCIRCUITS and found["sites"]["act.0"]["reading"] == SUBCIRCUITS
    alone = {"T3": {"act.0": CHANNELS}}  # one reading decides nothing
    assert verdict(_results(TICKET, alone))["verdict"] == INCONCLUSIVE
    contradicted = {"T2": {"act.0": SUBCIRCUITS}, "T3": {"act.0": SUBCIRCUITS}, "T4": {"act.0": CHANNELS}}
    found = verdict(_results(TICKET, contradicted))
    assert found["verdict"] == INCONCLUSIVE and found["sites"]["act.0"]["reading"] == CONFLICT


def test_one_stray_reading_cannot_flip_the_verdict():
    six_channels = {"T2": {"act.0": CHANNELS, "act.1": CHANNELS}, "T3": {"act.0": CHANNELS, "act.1": CHANNELS},
                    "T4": {"act.0": CHANNELS, "act.1": CHANNELS}}
    stray = {key: dict(sites) for key, sites in six_channels.items()}
    stray["T1"] = {"input": SUBCIRCUITS}  # a stray subcircuits reading at another site
    assert verdict(_results(TICKET, six_channels))["verdict"] == CHANNELS
    assert verdict(_results(TICKET, stray))["verdict"] == CHANNELS
    subcircuit = {"T2": {"act.0": SUBCIRCUITS}, "T3": {"act.0": SUBCIRCUITS}, "T4": {"act.1": CHANNELS}}
    assert verdict(_results(TICKET, subcircuit))["verdict"] == SUBCIRCUITS  # a stray channels reading elsewhere


def test_firm_sites_that_differ_read_mixed_and_say_where():
    feature_selection = {"T1": {"input": SUBCIRCUITS}, "T2": {"input": SUBCIRCUITS, "act.0": CHANNELS},
                         "T3": {"act.0": CHANNELS}}
    found = verdict(_results(TICKET, feature_selection))
    assert found["verdict"] == MIXED
    assert "subcircuits at input" in found["why"] and "channels at act.0" in found["why"]


def test_descriptive_and_provisional_readings_never_vote():
    only_descriptive = {"T5": {NETWORK: SUBCIRCUITS}, "T6": {NETWORK: SUBCIRCUITS}}
    assert verdict(_results(TICKET, only_descriptive))["verdict"] == INCONCLUSIVE
    few = verdict(_results(TICKET, {"T2": {"act.0": CHANNELS}, "T3": {"act.0": CHANNELS}}, seeds=3))
    assert few["verdict"] == INCONCLUSIVE and few["provisional"] is True
    assert few["provisional_reading"] == CHANNELS


class _UnknownNet(torch.nn.Module):
    """A user's model no unit layout knows: one hidden layer under names of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.encode, self.decode = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.decode(torch.relu(self.encode(x)))


def test_a_model_no_unit_layout_knows_is_named_in_one_line_in_the_results_and_the_verdict(tmp_path):
    from channels.verdict.battery import run_battery
    from channels.verdict.rundata import RunData, Trained

    net = _UnknownNet()
    weights = {k: v.detach() for k, v in net.state_dict().items()}
    dense = Trained(tmp_path, 0, None, {"density": 1.0, "test": {"test/acc": 0.9, "test/chance": 0.34}})
    dense.__dict__["mask"] = {k: torch.ones_like(v, dtype=torch.bool) for k, v in weights.items() if k.endswith("weight")}
    dense.__dict__["weights"] = weights
    dense.__dict__["spectra"] = None
    run = RunData(tmp_path, {"seed_everything": 0}, {0: dense})

    class Source:
        def net(self, run_, level):
            return net

        def evaluation_set(self, run_):
            gen = torch.Generator().manual_seed(0)
            return torch.randn(64, 6, generator=gen), torch.randint(0, 3, (64,), generator=gen)

    results = {r.test: r for r in run_battery([run], Source())}
    line = "_UnknownNet: no unit layout is known for this model, so T3"
    for key in ("T2", "T3", "T4"):
        assert results[key].note.startswith(line), (key, results[key].note)
        assert "act.0" not in results[key].sites  # no hidden site is made up
    assert "input" in results["T2"].sites  # the input coordinates are still read
    found = verdict(list(results.values()))
    assert found["units"].startswith(line) and line in found["why"]


def test_a_units_loading_is_its_part_of_the_channels_output_variance_by_numpy():
    """With independent units (diagonal covariance) unit j's share of channel i is w_ij^2, w_i the
    eigenvectors of the whitened Gram C^{1/2} G C^{1/2} (numpy), whatever the units' scales; the
    activity alone (d_ij^2) would weigh high-variance units twice."""
    rng = np.random.default_rng(0)
    n, m = 4000, 12
    scales = np.exp(rng.normal(0, 1, m))
    z = rng.standard_normal((n, m))
    z = np.linalg.qr(z - z.mean(0))[0] * math.sqrt(n - 1)  # centred, covariance exactly I
    u = z * scales  # covariance exactly diag(scales^2)
    readout = rng.standard_normal((2, m)) / scales  # the output reads every unit, more of the quiet ones
    g = np.broadcast_to(readout[:, None, :], (2, n, m)).copy()
    frame = Frame("site", torch.zeros(m, dtype=torch.float64), torch.as_tensor(u), torch.as_tensor(g),
                  torch.arange(m), torch.eye(m, dtype=torch.float64), torch.eye(m, dtype=torch.float64))
    found = channels(frame, top=2)
    c = u.T @ u / (n - 1)
    gram = np.einsum("pni,pnj->ij", g, g) / (2 * n)
    np.testing.assert_allclose(c, np.diag(scales**2), atol=1e-9)
    root = np.diag(scales)
    values, vectors = np.linalg.eigh(root @ gram @ root)
    lam, w = values[::-1][:2], vectors[:, ::-1][:, :2]
    expected = (w**2) @ (lam / lam.sum())
    np.testing.assert_allclose(unit_loading(frame, found).numpy(), expected / expected.sum(), rtol=1e-8, atol=1e-12)
    activity = ((found.directions**2) @ found.weights).numpy()
    assert np.abs(activity / activity.sum() - expected / expected.sum()).max() > 0.05  # the double count differs


def test_t3s_scale_is_anchored_at_random_units_the_null_and_the_channels_whole_cost():
    """against_null: -1 at t = 0 (random units' cost), 0 at the null, 1 at t = 1, linear on each side,
    whatever the null; so a ticket at random units reads -1 at a site with a high null and a low one."""
    for null in (0.15, 0.45):
        assert [causal.against_null(t, null) for t in (0.0, null, 1.0)] == pytest.approx([-1.0, 0.0, 1.0])
        assert causal.against_null(null / 2, null) == pytest.approx(-0.5)
        assert causal.against_null((1 + null) / 2, null) == pytest.approx(0.5)
    assert causal.against_null(0.0, 0.02) == pytest.approx(-0.02 / causal.NULL_ROOM)  # a null near 0: room floored
