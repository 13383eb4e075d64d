"""The founding measurement across training: permuted twins, intervals, readings, and
`ltc jacobian --checkpoints` on a tiny trained LM (offline W&B, one run per checkpoint)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from channels.sweep.intervals import READINGS, channel_reading, distance_intervals
from experiments.cli import main as ltc
from experiments.founding.twins import permute_matrices, save_permuted_twin
from lth.layout import LMLayout, TrainingSweepLayout
from wandb_offline import read_runs


def tiny_gpt2(seed: int = 0, tied: bool = True) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=16,
                                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied))


@pytest.mark.parametrize("tied", [True, False])
def test_permuted_twin_keeps_each_matrix_multiset_and_destroys_its_order(tied):
    model = tiny_gpt2(tied=tied)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = permute_matrices(model, seed=3)
    after = model.state_dict()
    assert set(names) == {n for n, p in model.named_parameters() if p.dim() >= 2}
    for key, old in before.items():
        new = after[key]
        if old.dim() >= 2:
            torch.testing.assert_close(torch.sort(new.flatten()).values, torch.sort(old.flatten()).values,
                                       rtol=0, atol=0)  # the same multiset of entries
            assert (new != old).float().mean() > 0.9  # ... in another arrangement
        else:
            torch.testing.assert_close(new, old, rtol=0, atol=0)  # biases and LayerNorm stay as trained
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    again = tiny_gpt2(tied=tied)
    permute_matrices(again, seed=3)
    for key, value in again.state_dict().items():  # seeded: the same twin again
        torch.testing.assert_close(value, after[key], rtol=0, atol=0)


def test_saved_twin_loads_and_keeps_the_multisets(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "source")
    twin = save_permuted_twin(tmp_path / "source", tmp_path / "twin", seed=1)
    src = GPT2LMHeadModel.from_pretrained(tmp_path / "source").state_dict()
    got = GPT2LMHeadModel.from_pretrained(twin).state_dict()
    w = "transformer.h.0.mlp.c_fc.weight"
    assert torch.equal(torch.sort(src[w].flatten()).values, torch.sort(got[w].flatten()).values)
    assert not torch.equal(src[w], got[w])
    assert json.loads((twin / "twin.json").read_text())["kind"] == "permuted"


def test_weighted_median_intervals_cover_the_truth():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(40):  # blocks with a context effect: the interval must account for it
        context = np.repeat(np.arange(6), 20)
        target = np.tile(np.arange(20), 6)
        values = 10 + rng.normal(0, 1, 6)[context] + rng.normal(0, 1, context.size)
        rows = distance_intervals(context, target, np.zeros(context.size, dtype=int), values, n_boot=300,
                                  seed=trial)
        (row,) = rows
        assert row["median"] == pytest.approx(np.median(values))
        assert row["n_contexts"] == 6 and row["n_items"] == 120
        covered += row["lo"] <= 10 <= row["hi"]
    assert covered >= 30  # nominal 95%; a bootstrap over 6 contexts is somewhat narrow


@pytest.mark.parametrize("spectrum, expected", [
    (np.r_[100.0, np.full(127, 0.01)], READINGS[0]),  # one dominant direction
    (np.ones(128), READINGS[2]),  # flat
    (np.r_[np.ones(16), np.full(112, 1e-4)], READINGS[1]),  # 16 equal channels
])
def test_channel_reading_on_known_spectra(spectrum, expected):
    pr = spectrum.sum() ** 2 / (spectrum**2).sum()
    assert channel_reading(pr, pr, len(spectrum)) == expected
    assert channel_reading(1.5, 70, 128) == f"between {READINGS[0]} and {READINGS[2]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    text = root / "text.txt"
    text.write_text(" ".join(f"def f{i}(x): return x + {i}" for i in range(200)))
    out = root / "run"
    assert ltc(["lm", "--out", str(out), "--data.text", str(text), "--data.vocab_size", "300",
                "--data.context_length", "12", "--data.batch_size", "4", "--net.n_layer", "2", "--net.n_head", "2",
                "--net.n_embd", "8", "--schedule.steps", "6", "--schedule.checkpoint_steps", "[0, 3, 6]",
                "--progress", "false"]) == 0
    return out


def test_checkpoint_sweep_series_twins_answer_and_wandb(trained, tmp_path, capsys, monkeypatch):
    # each model's own figures (12 per sweep, twice 4 sweeps: two thirds of this test's time) are
    # drawn and checked in test_jacobian_command; here only the figures across training are
    from experiments.report import jacobian_figures

    monkeypatch.setattr(jacobian_figures, "all_figures", lambda *args, **kwargs: [])
    out = tmp_path / "across"
    args = ["jacobian", "--checkpoints", str(trained), "--out", str(out), "--context_length", "12",
            "--contexts", "2", "--targets", "3", "--covariance_contexts", "3", "--coupling_targets", "0",
            "--progress", "false", "--wandb.mode", "offline"]
    assert ltc(args) == 0
    layout = TrainingSweepLayout(out)
    data = json.loads(layout.training_json.read_text())
    assert [m["label"] for m in data["models"]] == ["step-000000", "step-000003", "step-000006", "twin-permuted"]
    assert [m["step"] for m in data["models"]] == [0, 3, 6, 6]
    pair = "resid_pre.0->resid_post.1"
    rows = data["pairs"][pair]
    for row in rows:  # every model measured on the held-out text, the same way
        sweep = json.loads(layout.sweep(row["label"]).identity.read_text())
        assert sweep["text"] == str(LMLayout(trained).heldout) and sweep["context_length"] == 12
        offsets = row["intervals"]["participation_ratio"]
        assert offsets[0]["distance"] == [0, 0]
        assert all(o["lo"] <= o["median"] <= o["hi"] for o in offsets)
    assert set(data["answer"][pair]) == {"trained", "init", "permuted"}
    assert data["answer"][pair]["init"]["step"] == 0 and data["answer"][pair]["trained"]["step"] == 6
    for name in ("participation_ratio", "participation_ratio_by_distance", "effective_rank_by_distance",
                 "founding_s_eq_t", "jacobian_vs_covariance", "lens"):
        assert layout.figure(name, "resid_pre.0__resid_post.1").read_bytes()[:4] == b"\x89PNG"
    assert "| whitened Gram vs Cov(a) |" in layout.answer.read_text()
    runs = read_runs(layout.wandb)
    assert sorted(r.config["training_step"] for r in runs) == [0, 3, 6, 6]
    assert {r.config["kind"] for r in runs} == {"trained", "permuted"}
    for run in runs:
        assert run.history[0]["training_step"] == run.config["training_step"]
    printed = capsys.readouterr().out
    assert "across training" in printed and "s = t reads" in printed
    calls = []  # a second run recomputes no item
    from channels.sweep.run import Sweep

    original = Sweep.compute_item
    Sweep.compute_item = lambda self, item, covs: calls.append(item) or original(self, item, covs)
    try:
        assert ltc(args[:-1] + ["disabled"]) == 0
    finally:
        Sweep.compute_item = original
    assert calls == []


def test_checkpoint_folder_without_checkpoints_is_one_line(tmp_path, capsys):
    assert ltc(["jacobian", "--checkpoints", str(tmp_path), "--wandb.mode", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no checkpoints" in err and len(err.splitlines()) == 1
