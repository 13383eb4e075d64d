"""T1, basis dependence: does the ticket survive a random change of basis?

The basis branches (`lth.branches._basis`) find the level's ticket again by one-shot magnitude
pruning of the previous level's trained weights, once in the original basis (`basis_identity*`)
and once after a random orthogonal, function-preserving change of basis (`basis_rotated*`: the
input space for an MLP, the residual stream for a GPT-2), and retrain both the same way.
Statistic per seed, at the sparsest level both arms ran: test accuracy identity - rotated.
Null: 0, the basis does not matter to magnitude pruning.

A subcircuit in a privileged basis (a few input coordinates) is lost when its coordinates are
mixed: the gap is positive; a basis-free channel (a dense subspace) is as easy to find in any
basis: the gap is 0.

The original basis is one basis, the same in every seed, while the rotated arm draws a new one per
seed. Where no basis is special, the original one is just another draw (x and the normal init are
rotation-invariant), and a draw can favour magnitude pruning by chance: a dense random frame loads
unequally on the coordinates. The seeds resample that luck for the rotated arm but never for the
identity arm, so the gap's interval adds the variance of one draw, estimated as the rotated arm's
variance across seeds beyond the identity arm's (`basis_variance`, stats.t_interval's `once`).
Without it T1 read subcircuits at one dense input in each of four fresh populations (gaps 1.3-3.3
points, with the rotated arm's accuracies spread 0.7-3.1 points across seeds against the identity
arm's 0.8-2.4); with it, three of the four fall inside the interval, and every planted subcircuit
input keeps its reading (gaps 6.7-52 points).

Only SGD makes the comparison clean: it is equivariant to the rotation, so the arms differ only
in what magnitude pruning sees, provided the init is as likely in either basis. A Gaussian init is
(`MLP(init="normal")`, GPT-2's); `nn.Linear`'s default uniform init is not: its entries are bounded
in the original basis and not in a rotated one, so magnitude pruning tells the init's noise from
what training wrote more easily in the original basis. On two dense-input planted worlds of
population 20261205 the uniform init gave gaps of 4.1 and 2.4 points (read as subcircuits), the
normal init 3.2 and 0.9 (inconclusive); the planted recipe uses the normal init, and the test
notes a run whose MLP keeps the uniform one. Adam's per-coordinate steps make a basis of their own; its gap
is reported beside (an optimiser-made privileged basis shows there and not under SGD) and read
only when the recipe itself trains with SGD. Rule (`claim_or_equivalence`) on the SGD gap:
subcircuits when credibly positive and >= 1 point, channels when TOST puts it within 2 points.
Two arms that both failed to learn are "equivalent" for no reason: when an arm of some seed is not
at least one point above chance (`learned.chance`), the site reads `no power` and does not vote.
Nor are two arms that any mask would match: the power arm `basis_random_sgd` (`basis_random` beside
the recipe's pair: a random mask at the same counts, retrained the same way) gives the headroom
identity - random per seed, and the equivalence is read only when the headroom is credibly positive
and >= 1 point (the claim rule):
otherwise no mask could have failed at this sparsity (a dense channel that a random mask keeps, or
every arm at the ceiling), and the site reads `no power`. A positive gap needs no such check: it
shows a mask that failed. Runs without the power arm keep their equivalence, noted as unchecked.
The test speaks for the site the basis change acts on: `input`, or for a transformer every
residual site the other tests read (`resid_pre.l` and the last `resid_post`: one rotation Q acts
on the whole stream), so that its reading and theirs meet at the same site names.

Invariances: T1 reads the accuracies of two retrainings, not a trained network: a permutation of
hidden units is matched by the exchangeable initialisation; like IMP itself, its one-shot masks
are magnitudes of the stored weights, so it asks about the training recipe and is left out of the
reparametrisation check that the statistics of trained networks pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from channels.verdict import figures
from channels.verdict.base import (
    ACC_MARGIN,
    CHANNELS,
    NO_POWER,
    SUBCIRCUITS,
    TICKET,
    TestResult,
    TicketTest,
    bounds,
    claim_or_equivalence,
    per_seed,
    read_sites,
    summarise,
)
from channels.verdict.learned import chance
from channels.verdict.networks import reader
from channels.verdict.rundata import RunData
from channels.verdict.ticket import METRIC, sparsest_common
from channels.verdict.unit_sites import INPUT

RESIDUAL_STREAM = "residual stream"
PAIRS = {"sgd": ("basis_identity_sgd", "basis_rotated_sgd"), "recipe": ("basis_identity", "basis_rotated")}
POWER_ARMS = {"sgd": "basis_random_sgd", "recipe": "basis_random"}  # each retrained like its pair


def _model_args(run: RunData) -> dict:
    """The init_args of the run's model (the task): its optimizer and its `net`."""
    return (run.config.get("model") or {}).get("init_args") or {}


def line_optimizer(run: RunData) -> str:
    return str(_model_args(run).get("optimizer", "adam"))


def sites_of(run: RunData, networks=None) -> list[str]:
    """Where the change of basis acts: the input, or a transformer's residual stream, reported at
    the residual site names the other tests read (`resid_pre.l`, the last `resid_post`) so that
    their readings meet; `residual stream` when the network cannot be rebuilt."""
    if networks is not None:
        found = [site.name for site in networks.sites(run) if site.residual]
        return found or [INPUT]
    net = str((_model_args(run).get("net") or {}).get("class_path", ""))
    return [RESIDUAL_STREAM] if "gpt" in net.lower() else [INPUT]


def uniform_init(run: RunData) -> bool:
    """Whether the run's network is an `MLP` left at `nn.Linear`'s uniform init: its entries are
    bounded in the original basis and not in a rotated one, so the init marks the basis (the arms'
    comparison assumes an init a rotation leaves unchanged in distribution: `init: normal`)."""
    net = _model_args(run).get("net") or {}
    init = (net.get("init_args") or {}).get("init", "uniform")  # the MLP's default (channels reads configs only)
    return str(net.get("class_path", "")).endswith("mlp.MLP") and init == "uniform"


def _arms(run: RunData, pair: tuple[str, str]) -> tuple[int, float, float] | None:
    """(level, identity accuracy, rotated accuracy) at the sparsest level both arms ran."""
    level = sparsest_common(run, pair)
    if level is None or any(level not in run.line(b) for b in pair):
        return None
    identity, rotated = (run.line(b)[level].test_metric(METRIC) for b in pair)
    return level, identity, rotated


def basis_variance(identity: dict[RunData, float], rotated: dict[RunData, float]) -> float:
    """The variance one basis draw adds to an arm's accuracy: var over seeds of the rotated arm (a new
    basis per seed) minus that of the identity arm (one basis), floored at 0; 0 below two seeds."""
    arms = [np.array(list(per_seed(found).values())) for found in (identity, rotated)]
    if min(len(arm) for arm in arms) < 2:
        return 0.0
    return max(float(arms[1].var(ddof=1) - arms[0].var(ddof=1)), 0.0)


def _power_arm(run: RunData, arms: str, level: int) -> float | None:
    """The accuracy at `level` of the random-mask arm retrained like the pair `arms`, None where it did not run."""
    line = run.line(POWER_ARMS[arms])
    return line[level].test_metric(METRIC) if level in line else None


def _check_power(result: TestResult, headroom: dict[str, dict[RunData, float]], checked: bool) -> None:
    """An equivalence stands only where the identity arm credibly beats a random mask by >= 1 point."""
    for site, found in result.sites.items():
        if found.reading != CHANNELS:
            continue
        if not checked:
            found.note = (found.note + "; " if found.note else "") + (
                f"power unchecked: add {' or '.join(POWER_ARMS.values())} to the branches")
            continue
        room = summarise(headroom.get(site, {}), claim_or_equivalence(TICKET, NO_POWER))
        if room.reading != TICKET:
            found.reading = NO_POWER
            found.note = (f"a random mask retrains within {room.effect:+.1%} [{bounds(room)[0]:+.1%}, "
                          f"{bounds(room)[1]:+.1%}] of the identity arm: no mask could have failed here, so the "
                          "arms' equivalence says nothing about the basis")


def run(runs: Sequence[RunData], networks=None) -> TestResult:
    result = TEST.result()
    networks = reader(networks)
    per_site: dict[str, dict[RunData, float]] = {}
    unpowered: dict[str, list[str]] = {}
    headroom: dict[str, dict[RunData, float]] = {}
    arm_accuracy: dict[str, tuple[dict[RunData, float], dict[RunData, float]]] = {}
    for run_ in runs:
        sgd = _arms(run_, PAIRS["sgd"])
        recipe = _arms(run_, PAIRS["recipe"])
        arms = "sgd" if sgd is not None else "recipe" if line_optimizer(run_) == "sgd" else None
        clean = {"sgd": sgd, "recipe": recipe, None: None}[arms]
        row = {"run": run_.name, "optimizer": line_optimizer(run_), "chance": chance(run_, networks)}
        if sgd is not None:
            row.update(level=sgd[0], sgd_identity=sgd[1], sgd_rotated=sgd[2], sgd_gap=sgd[1] - sgd[2])
        if recipe is not None:
            row.update(level=recipe[0], recipe_gap=recipe[1] - recipe[2])
        random_arm = _power_arm(run_, arms, clean[0]) if clean is not None else None
        if random_arm is not None:
            row.update(random_arm=random_arm, headroom=clean[1] - random_arm)
        if sgd is not None or recipe is not None:
            result.details.append(row)
        if clean is not None:
            for site in sites_of(run_, networks):
                per_site.setdefault(site, {})[run_] = clean[1] - clean[2]
                identity, rotated = arm_accuracy.setdefault(site, ({}, {}))
                identity[run_], rotated[run_] = clean[1], clean[2]
                if "headroom" in row:
                    headroom.setdefault(site, {})[run_] = row["headroom"]
                if not min(clean[1:]) >= row["chance"] + ACC_MARGIN:  # nan chance: power unknown, read as none
                    unpowered.setdefault(site, []).append(run_.name)
    if not result.details:
        result.note = "no basis branches: add basis_identity and basis_rotated (SGD recipes) or their _sgd pair"
        return result
    read_sites(result, per_site, claim_or_equivalence(SUBCIRCUITS, CHANNELS),
               "only the recipe's optimiser (not SGD) ran the basis branches: an optimiser-made basis "
               "cannot be told apart; add basis_identity_sgd and basis_rotated_sgd",
               once={site: basis_variance(*arms) for site, arms in arm_accuracy.items()})
    _check_power(result, headroom, checked=any("headroom" in row for row in result.details))
    if any(uniform_init(run_) for run_ in runs):
        result.note = ((result.note + "; ") if result.note else "") + (
            "the MLP keeps nn.Linear's uniform init, which marks the original basis (bounded entries there, not "
            "in a rotated one): a gap can come from the init; set model.init_args.net.init_args.init: normal")
    for site, names in unpowered.items():
        found = result.sites[site]
        found.reading = NO_POWER
        found.note = (f"an arm is not >= {ACC_MARGIN:.0%} above chance in {', '.join(names)}: the retrained "
                      "tickets learned too little for their gap to mean anything")
    return result


TEST = TicketTest(
    "T1", "basis dependence",
    "test acc of the one-shot ticket in the original basis - in a random rotated basis (SGD retraining)",
    "0: the basis does not matter to magnitude pruning (the interval adds one basis draw's variance)",
    "subcircuits if the 95% interval is above 0 and the gap >= 1 point; channels if TOST puts it within "
    "+-2 points and the identity arm credibly beats a random mask (basis_random_sgd) by >= 1 point; no power "
    "when it does not, or when an arm is not 1 point above chance; else inconclusive (read only under SGD)",
    votes=True, run=run, figure=figures.accuracy_gap,
    columns=("run", "optimizer", "level", "chance", "sgd_identity", "sgd_rotated", "sgd_gap", "random_arm", "headroom",
             "recipe_gap"))
