"""Planted worlds: their truth holds by construction, tiny ones trained with real IMP move the
basis and localisation tests the right way, and (slow) `ltc calibrate` reads every world right."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from channels.verdict import basis, localisation
from channels.verdict.base import CHANNELS, SUBCIRCUITS
from channels.verdict.rundata import load_run
from experiments.cli import main
from experiments.data.planted import WORLDS, PlantedDataModule

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "planted"


def _data(world: str, **kw) -> PlantedDataModule:
    dm = PlantedDataModule(world=world, num_train=600, num_val=100, num_test=100, **kw)
    dm.setup()
    return dm


def test_every_world_has_a_recipe_and_a_truth():
    assert {p.stem for p in RECIPES.glob("*.yaml")} == set(WORLDS)
    assert {w.truth for w in WORLDS.values()} == {"subcircuits", "channels", "no ticket"}
    for name in WORLDS:
        config = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        assert config["data"]["init_args"]["world"] == name
        assert config["model"]["init_args"]["optimizer"] == "sgd"  # the basis test reads SGD only
        assert {"random_prune", "shuffle", "basis_identity", "basis_rotated"} <= set(config["imp"]["branches"])


def test_input_subcircuit_labels_read_only_their_coordinates():
    dm = _data("input_subcircuit", in_features=20, rank=3)
    x, y = dm._splits["test"].tensors
    structure = np.random.default_rng([0, 0])  # the world's structure, drawn as the world draws it
    coords = structure.choice(20, size=3, replace=False)
    rule = structure.standard_normal((5, 3))
    moved = x.clone().numpy()
    others = [j for j in range(20) if j not in coords]
    moved[:, others] = moved[::-1, others]  # change every other coordinate
    assert np.array_equal((moved[:, coords] @ rule.T).argmax(1), y.numpy())


def test_input_channel_labels_ignore_directions_off_the_frame():
    dm = _data("input_channel", in_features=20, rank=3)
    x, y = dm._splits["test"].tensors
    rng = np.random.default_rng([0, 0])
    frame, _ = np.linalg.qr(rng.standard_normal((20, 3)))
    rule = rng.standard_normal((5, 3))
    off = np.random.default_rng(1).standard_normal(x.shape)
    off -= off @ frame @ frame.T  # noise orthogonal to the frame
    assert np.array_equal(((x.numpy() + off) @ frame @ rule.T).argmax(1), y.numpy())
    assert np.abs(frame).min() > 0  # dense: every coordinate carries some of it


@pytest.mark.parametrize("world, active", [("hidden_subcircuit", 5), ("hidden_channel", 64)])
def test_hidden_teachers_are_few_units_or_all_of_them(world, active):
    dm = _data(world, in_features=16, width=64, rank=5 if world == "hidden_subcircuit" else 4)
    h = dm._splits["train"].tensors[2].numpy()
    assert int((h.var(0) > 1e-6).sum()) == active


def test_no_ticket_world_spreads_the_label_over_every_coordinate():
    dm = _data("no_ticket", num_classes=4)
    x, y = (t.numpy() for t in dm._splits["train"].tensors)
    means = np.stack([x[y == c].mean(0) for c in range(4)])

    def nearest_mean(coords) -> float:
        return float((((x[:, None, coords] - means[None, :, coords]) ** 2).sum(-1).argmin(1) == y).mean())

    assert nearest_mean(np.arange(40)) > 0.97
    half = np.random.default_rng(0).choice(40, size=20, replace=False)
    assert nearest_mean(half) > 0.9 and nearest_mean(np.setdiff1d(np.arange(40), half)) > 0.9  # any half will do


TINY = ["--trainer.max_steps", "300", "--trainer.val_check_interval", "300", "--imp.levels", "3",
        "--imp.prune_fraction", "0.55", "--imp.branch_levels", "[3]", "--imp.rewind_step", "20",
        "--data.init_args.num_train", "2000", "--data.init_args.num_test", "1000", "--spectra.every_n_steps", "300"]


@pytest.fixture(scope="module")
def tiny_input_worlds(tmp_path_factory):
    """input_subcircuit and input_channel, trained for real with IMP at a tiny size (one seed each)."""
    root = tmp_path_factory.mktemp("planted")
    runs = {}
    for world in ("input_subcircuit", "input_channel"):
        runs[world] = root / world
        assert main(["imp", "--config", str(RECIPES / f"{world}.yaml"), "--run_dir", str(runs[world]), *TINY]) == 0
    return {w: load_run(d) for w, d in runs.items()}


def test_basis_test_reads_a_privileged_input_basis_only_where_it_is(tiny_input_worlds):
    gaps = {w: basis.run([run]).sites["input"] for w, run in tiny_input_worlds.items()}
    assert gaps["input_subcircuit"].effect > gaps["input_channel"].effect + 0.02, gaps
    assert gaps["input_subcircuit"].reading == SUBCIRCUITS and gaps["input_subcircuit"].provisional


def test_localisation_of_the_input_sensitivity_moves_the_right_way(tiny_input_worlds):
    rho = {w: localisation.run([run]).sites["input"] for w, run in tiny_input_worlds.items()}
    assert rho["input_subcircuit"].reading == SUBCIRCUITS and rho["input_channel"].reading == CHANNELS, rho


@pytest.mark.slow
def test_calibrate_reads_every_planted_world_right(tmp_path):
    """The default `ltc calibrate` (5 worlds x 5 seeds): the verdict's confusion matrix is diagonal."""
    out = tmp_path / "calibration"
    assert main(["calibrate", "--out", str(out), "--wandb.mode", "offline"]) == 0
    result = json.loads((out / "report" / "calibration.json").read_text())
    assert result["diagonal"], result["errors"]
    for truth, counts in result["confusion"]["verdict"].items():
        assert sum(v for reading, v in counts.items() if reading != truth) == 0, (truth, counts)
    assert all(not w["provisional"] and w["seeds"] == 5 for w in result["worlds"])
