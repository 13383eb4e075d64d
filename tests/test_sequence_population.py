"""The planted sequence world as opt-in families of `ltc calibrate`: drawn only when named, each
instance's model and data on one world, its truths at the residual stream, its own recipe in the
plan, and a toy instance trained through `ltc imp` and scored; the default population unchanged."""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
import yaml

from channels.verdict import battery
from channels.verdict.base import CHANNELS, SUBCIRCUITS
from channels.verdict.calibration import calibration, instance_entry
from channels.verdict.rundata import load_run
from experiments.cli import main
from experiments.commands.calibrate import build_parser, plan
from experiments.config import imp_parser, parse
from experiments.data import population as population_module
from experiments.data.population import (
    DEFAULT_POPULATION_SEED,
    POPULATION_RECIPE,
    SEQUENCE_RANGES,
    WEIGHTS_PER_SYMBOL,
    SequenceInstance,
    draw_instance,
    draw_population,
)
from experiments.data.sequence_world import SequenceWorldDataModule
from experiments.models.gpt import planted_gpt2
from experiments.report.calibration import instance_rows
from experiments.report.networks import RunNetworks
from lth.layout import CalibrationLayout

SEQUENCE = ["sequence_subcircuit", "sequence_channel"]
WORLD_KNOBS = ("route", "vocab", "length", "width", "world_seed")
# Recorded before the sequence families existed, on population 20261203 (the default then): what a
# population seed draws must not move.
RECORDED_SEED = 20261203
DEFAULT_NAMES = [
    "input_subcircuit_0", "input_channel_0", "hidden_subcircuit_0", "hidden_channel_0", "mixed_0", "no_ticket_0",
    "nothing_to_learn_0", "dial_000", "input_subcircuit_1", "input_channel_1", "hidden_subcircuit_1",
    "hidden_channel_1", "mixed_1", "no_ticket_1", "nothing_to_learn_1", "dial_100", "input_subcircuit_2",
    "input_channel_2", "hidden_subcircuit_2", "hidden_channel_2", "mixed_2", "dial_025", "input_subcircuit_3",
    "input_channel_3", "hidden_subcircuit_3", "hidden_channel_3", "mixed_3", "dial_050", "dial_075"]
# sha256 of json.dumps([[name, overrides(), describe(), truths, verdict_truth] for every default instance]),
# with the hidden_channel unit scales drawn in [0, 1] as then, and re-recorded when the range became [0, 0.5]
RECORDED_DIGEST = "34dafb55a15f159997a0e006708a117b1fda384e198bfe26e0e8d5fd197efaf9"
DEFAULT_DIGEST = "f100fc45753008fa3178be41b114af25409cddb36c6d8a86b5701c7edda130d0"


def _digest(population) -> str:
    described = [[i.name, i.overrides(), i.describe(), i.truths, i.verdict_truth] for i in population]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def test_the_default_population_is_what_it_was(monkeypatch):
    population = draw_population(RECORDED_SEED)
    assert [i.name for i in population] == DEFAULT_NAMES
    assert population[0].overrides()[-8:-5] == ["--data.init_args.world_seed=4886374661314033243",
                                                 "--model.init_args.net.init_args.in_features=40",
                                                 "--model.init_args.net.init_args.hidden=[48, 32, 48]"]
    assert "--data.init_args.label_noise=0.03935211923999718" in population[13].overrides()
    assert _digest(population) == DEFAULT_DIGEST
    monkeypatch.setitem(population_module.RANGES, "unit_scale", (0.0, 1.0))  # nothing else moved with the range
    assert _digest(draw_population(RECORDED_SEED)) == RECORDED_DIGEST
    assert [i.name for i in draw_population(RECORDED_SEED, quick=True)] == [*DEFAULT_NAMES[:8], "dial_100"]
    assert [i.name for i in draw_population(DEFAULT_POPULATION_SEED)] == DEFAULT_NAMES  # the same families
    assert all(i.recipe is None for i in population)  # the shared recipe (`--recipe`)


def test_the_sequence_families_are_opt_in():
    named = draw_population(DEFAULT_POPULATION_SEED, SEQUENCE)
    assert [i.name for i in named] == [f"{f}_{k}" for k in range(4) for f in SEQUENCE]
    assert [i.name for i in draw_population(DEFAULT_POPULATION_SEED, SEQUENCE, quick=True)] == \
        ["sequence_subcircuit_0", "sequence_channel_0"]
    assert [i.name for i in draw_population(DEFAULT_POPULATION_SEED, ["mixed", "sequence_channel"], quick=True)] == \
        ["mixed_0", "sequence_channel_0"]
    assert not any(i.family.startswith("sequence") for seed in range(5) for i in draw_population(seed))
    assert named[0] == draw_instance("sequence_subcircuit", 0, DEFAULT_POPULATION_SEED)  # drawn, not stateful


def test_sequence_instances_draw_valid_worlds_within_their_ranges():
    drawn = [i for seed in range(6) for i in draw_population(seed, SEQUENCE)]
    for i in drawn:
        assert isinstance(i, SequenceInstance)
        assert (i.vocab, i.length, i.width) in {(v, n, w) for v in SEQUENCE_RANGES["vocab"]
                                                for n in SEQUENCE_RANGES["length"] for w in SEQUENCE_RANGES["width"]}
        heads = yaml.safe_load(i.recipe.read_text())["model"]["init_args"]["net"]["init_args"]["n_head"]
        assert i.vocab + i.length <= i.width and i.width % heads == 0  # the route fits; the heads divide the stream
    assert len({(i.vocab, i.length, i.width) for i in drawn}) > 5 and len({i.world_seed for i in drawn}) == len(drawn)


@pytest.mark.parametrize("family", SEQUENCE)
def test_the_overrides_put_model_and_data_on_one_world(family):
    instance = draw_instance(family, 1, DEFAULT_POPULATION_SEED)
    cfg = parse(imp_parser(), ["--config", str(instance.recipe), *instance.overrides()])
    net_args, data_args = cfg.model.init_args.net.init_args, cfg.data.init_args
    expected = {"route": family.removeprefix("sequence_"), "vocab": instance.vocab, "length": instance.length,
                "width": instance.width, "world_seed": instance.world_seed}
    assert {k: net_args[k] for k in WORLD_KNOBS} == {k: data_args[k] for k in WORLD_KNOBS} == expected
    assert cfg.experiment == f"planted_{instance.name}"
    net = planted_gpt2(**{k: net_args[k] for k in WORLD_KNOBS})
    data = SequenceWorldDataModule(**{k: data_args[k] for k in WORLD_KNOBS}, task=data_args["task"])
    assert torch.equal(net.transformer.wte.weight, data.route.embedding)  # one route, built twice
    assert net.config.n_embd == instance.width and net.config.n_positions == instance.length


def test_the_truths_are_the_route_at_the_residual_stream():
    sub, chan = (draw_instance(f, 0, DEFAULT_POPULATION_SEED) for f in SEQUENCE)
    assert sub.truths == {"resid_pre.0": SUBCIRCUITS, "resid_post.0": SUBCIRCUITS} and sub.verdict_truth == SUBCIRCUITS
    assert chan.truths == {"resid_pre.0": CHANNELS, "resid_post.0": CHANNELS} and chan.verdict_truth == CHANNELS


def test_plan_runs_each_sequence_instance_with_its_own_recipe(tmp_path):
    cfg = parse(build_parser(), ["--families", "[input_channel, sequence_subcircuit, sequence_channel]",
                                 "--quick", "true", "--seeds", "[0]"])
    instances = draw_population(cfg.population_seed, cfg.families, cfg.quick)
    launches = plan(instances, cfg, CalibrationLayout(tmp_path / "out"), tmp_path)
    resolved = {launch.label: yaml.safe_load(launch.config.read_text()) for launch in launches}
    assert list(resolved) == ["input_channel_0 seed 0", "sequence_subcircuit_0 seed 0", "sequence_channel_0 seed 0"]
    assert resolved["input_channel_0 seed 0"]["data"]["class_path"].endswith("PlantedDataModule")
    assert resolved["input_channel_0 seed 0"]["imp"]["levels"] == yaml.safe_load(POPULATION_RECIPE.read_text())[
        "imp"]["levels"]
    for instance in instances[1:]:
        found, own = resolved[f"{instance.name} seed 0"], yaml.safe_load(instance.recipe.read_text())
        assert found["model"]["init_args"]["net"]["class_path"] == "experiments.models.gpt.planted_gpt2"
        assert found["data"]["init_args"]["route"] == found["model"]["init_args"]["net"]["init_args"]["route"] \
            == instance.route
        assert found["imp"] == {**found["imp"], **own["imp"], "levels": instance.levels}
        assert found["trainer"]["max_steps"] == own["trainer"]["max_steps"]


def test_each_sequence_instance_prunes_to_its_ticket_regime_counted_per_symbol():
    """The last level keeps >= WEIGHTS_PER_SYMBOL weights per symbol and the next would not, with the
    prunable weights counted by hand: a one-layer GPT-2 prunes its attention (w x 3w and w x w) and
    its MLP (w x 4w and 4w x w), 12 w^2; embeddings, unembedding, norms and biases stay dense."""
    for instance in draw_population(DEFAULT_POPULATION_SEED, SEQUENCE):
        recipe = yaml.safe_load(instance.recipe.read_text())
        keep = 1.0 - recipe["imp"]["prune_fraction"]
        assert recipe["model"]["init_args"]["net"]["init_args"]["n_layer"] == 1
        left = 12 * instance.width ** 2 * keep ** instance.levels
        assert left >= WEIGHTS_PER_SYMBOL * instance.vocab > left * keep
        assert instance.describe()["levels"] == instance.levels


def test_an_unknown_family_is_one_line_naming_the_sequence_families(tmp_path, capsys):
    assert main(["calibrate", "--families", "[sequence_nope]", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'sequence_nope'" in err
    assert "sequence_subcircuit" in err and "sequence_channel" in err


TOY = ["--trainer.max_steps", "30", "--trainer.val_check_interval", "30", "--imp.levels", "1",
       "--imp.rewind_step", "5", "--spectra.every_n_steps", "30", "--data.init_args.num_train", "512",
       "--data.init_args.num_val", "64", "--data.init_args.num_test", "64", "--wandb.mode", "disabled"]


def test_a_toy_sequence_instance_trains_through_imp_and_scores_its_residual_sites(tmp_path, monkeypatch):
    """One seed, one level, 30 steps: the readings are provisional (so the sites inconclusive);
    what is checked is that the runs go through and the residual sites are read and scored. T4,
    which trains interchange maps (minutes on a transformer even at this size), is left out."""
    instance = draw_instance("sequence_channel", 1, DEFAULT_POPULATION_SEED)
    run_dir = tmp_path / "run"
    assert main(["imp", "--config", str(instance.recipe), *instance.overrides(), *TOY, "--run_dir", str(run_dir)]) == 0
    monkeypatch.setattr(battery, "TESTS", tuple(t for t in battery.TESTS if t.key != "T4"))
    runs = [load_run(run_dir)]
    result = battery.verdict(battery.run_battery(runs, RunNetworks.for_runs(runs)))
    entry = instance_entry(instance.name, instance.describe(), instance.truths, instance.verdict_truth, result)
    assert entry["scored"] and entry["truths"] == {"resid_pre.0": CHANNELS, "resid_post.0": CHANNELS}
    assert {"resid_pre.0", "resid_post.0", "mlp_hidden.0", "attn.0"} <= set(entry["sites"])
    for site in instance.truths:
        assert math.isfinite(entry["tests"]["T2"]["sites"][site]["effect"])
    scored = calibration([entry])
    assert scored["site_errors"]["total"] == 2 and set(scored["confusion"]["sites"]) == {CHANNELS}
    assert instance_rows(scored)[0][3] == \
        f"vocab {instance.vocab}, length {instance.length}, width {instance.width}, {instance.levels} levels"
