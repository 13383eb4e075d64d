"""`ltc lm`: a tiny causal LM trained on a small text, its Hugging Face checkpoints, and exact resume."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from experiments.cli import main as ltc
from experiments.founding import lm
from experiments.models.hf import load_model
from lth.layout import LMLayout

TEXT = " ".join(f"The {w} function returns {n} when called with {w} and {n}." for w in
                ("print", "len", "sorted", "map", "zip", "open") for n in range(12)) * 3


def args(tmp_path, out, *extra: str) -> list[str]:
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    return ["lm", "--out", str(out), "--data.text", str(text), "--data.vocab_size", "300",
            "--data.context_length", "16", "--data.batch_size", "4", "--net.n_layer", "1", "--net.n_head", "2",
            "--net.n_embd", "16", "--schedule.steps", "12", "--schedule.checkpoint_steps", "[0, 5, 12]",
            "--schedule.eval_every", "4", "--schedule.save_every_s", "0", "--progress", "false", *extra]


def test_log_spaced_steps():
    assert lm.log_spaced_steps(3000) == [0, 30, 100, 300, 1000, 3000]
    assert lm.log_spaced_steps(2000) == [0, 30, 100, 300, 1000, 2000]
    assert lm.log_spaced_steps(100) == [0, 30, 100]
    assert lm.log_spaced_steps(20) == [0, 20]


def test_checkpoints_load_as_hugging_face_models_and_learn(tmp_path):
    out = tmp_path / "run"
    assert ltc(args(tmp_path, out, "--schedule.steps", "60", "--schedule.checkpoint_steps", "[0, 60]",
                    "--optim.lr", "0.01")) == 0
    layout = LMLayout(out)
    assert list(layout.checkpoints()) == [0, 60]
    infos = [json.loads(LMLayout.info(p).read_text()) for p in layout.checkpoints().values()]
    assert infos[1]["step"] == 60 and infos[1]["val_loss"] < infos[0]["val_loss"] - 0.5  # it learned
    loaded = load_model(str(layout.checkpoint(60)))
    assert loaded.tokenizer == "hf" and loaded.n_layers == 1 and loaded.width == 16
    ids = torch.tensor([loaded.encode("The len function returns 3")])
    assert ids.max() < 300 and loaded.model(ids).last_hidden_state.shape == (1, ids.shape[1], 16)
    held = layout.heldout.read_text()
    assert held and all(word in TEXT for word in held.split()[:20])  # decoded blocks of the same text


def test_interrupted_training_resumes_exactly(tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert ltc(args(tmp_path, whole)) == 0
    original = lm.Trainer.evaluation
    calls = []

    def interrupt(self, train_loss):
        calls.append(self.step)
        if self.step == 8:  # after the step-8 evaluation: the state of step 8 is saved next
            raise KeyboardInterrupt
        return original(self, train_loss)

    monkeypatch.setattr(lm.Trainer, "evaluation", interrupt)
    assert ltc(args(tmp_path, parts)) == 130
    monkeypatch.setattr(lm.Trainer, "evaluation", original)
    state = torch.load(LMLayout(parts).state, weights_only=True)
    assert 5 <= state["step"] < 8  # resumes mid-way, after the step-5 checkpoint
    assert ltc(args(tmp_path, parts)) == 0
    a = torch.load(LMLayout(whole).state, weights_only=True)["model"]
    b = torch.load(LMLayout(parts).state, weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    for step in (5, 12):
        wa = json.loads(LMLayout.info(LMLayout(whole).checkpoint(step)).read_text())
        wb = json.loads(LMLayout.info(LMLayout(parts).checkpoint(step)).read_text())
        assert wa["val_loss"] == pytest.approx(wb["val_loss"], rel=1e-6)


def test_another_recipe_in_the_same_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert ltc(args(tmp_path, out, "--schedule.steps", "5", "--schedule.checkpoint_steps", "[0, 5]")) == 0
    assert ltc(args(tmp_path, out, "--schedule.steps", "6", "--schedule.checkpoint_steps", "[0, 6]")) == 2
    err = capsys.readouterr().err.strip()
    assert "another recipe" in err and "schedule" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--net.n_embd", "15"], "multiple of net.n_head"),
    (["--schedule.checkpoint_steps", "[0, 50]"], "outside 0..steps"),
])
def test_bad_recipe_is_one_line(tmp_path, capsys, extra, message):
    assert ltc(args(tmp_path, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
