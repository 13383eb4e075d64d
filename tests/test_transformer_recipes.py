"""The transformer recipes of issue 21 at toy size: the modular-addition and text seeds recipes and
the planted sequence worlds run end to end through `ltc seeds` / `ltc imp`, write the chance
accuracy beside the test accuracy, and the Fourier reading reads their runs (the seeds recipes: slow,
about 40 s each)."""
import json

import pytest
import torch
import yaml

from channels.verdict.rundata import load_run
from experiments.cli import main
from experiments.report import networks
from experiments.report.document import Document, render_markdown
from experiments.report.fourier import fourier_reading, fourier_section
from lth.layout import ReportFiles

TOY = ["--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--imp.levels", "1", "--imp.rewind_step", "1",
       "--spectra.every_n_steps", "6", "--spectra.probe_size", "8", "--spectra.jacobian_probe_size", "1",
       "--wandb.mode", "disabled"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _test_metrics(job_dir):
    return json.loads((job_dir / "metrics.json").read_text())["test"]


@pytest.mark.slow
def test_the_modadd_seeds_recipe_runs_with_its_branches_and_is_read_by_fourier(tmp_path):
    root = tmp_path / "seeds"
    args = ["seeds", "--config", "configs/modadd_seeds.yaml", "--seeds", "[0]", "--workers", "1", "--report", "false",
            "--run_dir", str(root), "--data.init_args.p", "11", "--data.init_args.batch_size", "32",
            "--model.init_args.net.init_args.vocab_size", "12", *TOY]
    assert main(args) == 0
    run = root / "seed_0"
    for job in ["level_00", "level_01", *(f"branches/{b}/level_01" for b in
                ("random_reinit", "random_prune", "shuffle", "basis_identity_sgd", "basis_rotated_sgd",
                 "basis_random_sgd"))]:
        metrics = _test_metrics(run / job)
        assert 0 < metrics["test/chance"] <= 1 and "test/acc" in metrics, job
    # chance: the most frequent answer among the test pairs
    from experiments.data.modadd import ModularAdditionDataModule
    answers = ModularAdditionDataModule(p=11, train_fraction=0.4, batch_size=32).test_set.tensors[1][:, -1]
    assert _test_metrics(run / "level_00")["test/chance"] == pytest.approx(
        float(torch.bincount(answers).max() / len(answers)), abs=1e-6)
    found, _ = fourier_reading([load_run(run)], ReportFiles(tmp_path / "report"))
    assert [r["network"] for r in found["rows"]] == ["dense", "ticket", "random_prune", "shuffle", "random_reinit"]
    assert all(len(r["channel_frequencies"]) == 8 and 0 <= r["accuracy"] <= 1 for r in found["rows"])


def test_the_report_reads_the_fourier_answer_of_every_modadd_run(tmp_path):
    """Two toy seeds of the modadd recipe: one row per run and network, the summary over both runs
    (each dense network keeps all of its own keys, with all of its power on them), the figure, and a
    section that names each seed's key frequencies."""
    root = tmp_path / "seeds"
    args = ["seeds", "--config", "configs/modadd_seeds.yaml", "--seeds", "[0, 1]", "--workers", "1", "--report",
            "false", "--run_dir", str(root), "--data.init_args.p", "11", "--data.init_args.batch_size", "32",
            "--model.init_args.net.init_args.vocab_size", "12", "--imp.branches", "[random_prune]", *TOY]
    assert main(args) == 0
    runs = [load_run(root / f"seed_{s}") for s in (0, 1)]
    found, figure = fourier_reading(runs, ReportFiles(tmp_path / "report"))
    assert [(r["seed"], r["network"]) for r in found["rows"]] == [
        (s, n) for s in (0, 1) for n in ("dense", "ticket", "random_prune")]
    dense = next(s for s in found["summary"] if s["network"] == "dense")
    assert dense["runs"] == 2 and dense["power_on_dense_keys"] == pytest.approx(
        float(sum(r["key_share"] for r in found["rows"] if r["network"] == "dense") / 2))
    assert all(kept.split("/")[0] == kept.split("/")[1] for kept in dense["keeps_dense_keys"])
    assert figure.path.stat().st_size > 10_000 and found["p"] == 11
    text = render_markdown(Document("report", [fourier_section(found, [figure])]))
    for row in found["rows"]:
        if row["network"] == "dense":
            assert f"seed {row['seed']}: " + (", ".join(map(str, row["key_frequencies"])) or "none") in text
    json.dumps(found)  # verdict.json takes it as it is


@pytest.mark.slow
def test_the_text_seeds_recipe_parses_with_every_site_it_names(tmp_path):
    with open("configs/tinygpt_seeds.yaml") as file:
        cfg = yaml.safe_load(file)
    assert len(cfg["seeds"]) >= 5 and (1 - cfg["imp"]["prune_fraction"]) ** cfg["imp"]["levels"] <= 0.15
    assert {"resid_pre.0", "mlp_hidden.1", "attn.1"} <= set(cfg["spectra"]["sites"])
    args = ["seeds", "--config", "configs/tinygpt_seeds.yaml", "--seeds", "[0]", "--workers", "1", "--report", "false",
            "--run_dir", str(tmp_path / "text"), "--data.init_args.context_length", "8",
            "--data.init_args.batch_size", "4", "--data.init_args.probe_size", "4", "--imp.branches", '["random_prune"]',
            "--model.init_args.net.init_args.n_embd", "16", "--model.init_args.net.init_args.n_positions", "8", *TOY]
    assert main(args) == 0
    chance = _test_metrics(tmp_path / "text" / "seed_0" / "level_01")["test/chance"]
    assert 0.05 < chance < 0.5  # the most frequent character (the space) is a fifth or so of the text


@pytest.mark.parametrize("route", ["subcircuit", "channel"])
def test_the_planted_sequence_recipes_run(tmp_path, route, monkeypatch):
    run = tmp_path / route
    args = ["imp", "--config", f"configs/planted/sequence_{route}.yaml", "--run_dir", str(run),
            "--data.init_args.num_train", "64", "--data.init_args.num_val", "16", "--data.init_args.num_test", "16",
            "--data.init_args.batch_size", "16", "--data.init_args.probe_size", "8", *TOY]
    assert main(args) == 0
    assert (run / "branches" / "basis_rotated" / "level_01" / "DONE").is_file()
    assert 0 < _test_metrics(run / "level_01")["test/chance"] < 0.5
    # the tests that run the network read whole sequences, at most EVALUATION_ROWS label positions
    monkeypatch.setattr(networks, "EVALUATION_ROWS", 20)
    loaded = load_run(run)
    x, y = networks.RunNetworks.for_runs([loaded]).evaluation_set(loaded)
    assert y.dim() == 2 and len(x) == len(y) == 20 // y.shape[1] and x.shape[1] == y.shape[1]
