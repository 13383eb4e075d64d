"""IMP on transformers end to end at toy size: text LM and modular addition, with the rotated line."""
import pytest
import torch

from experiments.cli import main
from experiments.models.gpt import gpt2
from lth.masks import density, load_mask
from lth.rundir import load_tensors

COMMON = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
          "--imp.levels", "2", "--imp.rewind_step", "1", "--imp.branches", '["random_prune"]', "--imp.branch_levels", "[2]",
          "--spectra.every_n_steps", "2", "--spectra.probe_size", "4", "--spectra.jacobian_probe_size", "1",
          "--wandb.mode", "disabled"]
NET = "--model.init_args.net.init_args."


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_run(run, net_kwargs):
    for level, expected in [(0, 1.0), (1, 0.8), (2, 0.64)]:
        for line in (run, run / "branches" / "rotated"):
            mask = load_mask(line / f"level_{level:02d}" / "mask.safetensors")
            assert density(mask) == pytest.approx(expected, abs=2e-3)
            assert all(("attn" in n or "mlp" in n) for n in mask), sorted(mask)
    weights = load_tensors(run / "level_02" / "weights.safetensors")
    assert (weights["transformer.wte.weight"] != 0).all()  # embeddings untouched by pruning
    assert (run / "branches" / "random_prune" / "level_02" / "DONE").is_file()
    # the rotated line starts from the same function in another residual basis
    model, rotated = gpt2(**net_kwargs).eval(), gpt2(**net_kwargs).eval()
    model.load_state_dict(load_tensors(run / "init.safetensors"))
    rotated.load_state_dict(load_tensors(run / "branches" / "rotated" / "init.safetensors"))
    ids = torch.randint(0, net_kwargs["vocab_size"], (2, 3))
    with torch.no_grad():
        torch.testing.assert_close(rotated(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(model.transformer.wte.weight, rotated.transformer.wte.weight)


def test_tiny_text_imp(tmp_path):
    net = {"vocab_size": 128, "n_layer": 2, "n_head": 2, "n_embd": 16, "n_positions": 16}
    run = tmp_path / "run"
    args = ["imp", "--config", "configs/tinygpt_text_imp.yaml", "--run_dir", str(run),
            "--data.init_args.context_length", "16", "--data.init_args.batch_size", "4", "--data.init_args.probe_size", "4",
            *COMMON, *[f"{NET}{k}={v}" for k, v in net.items()]]
    assert main(args) == 0
    _check_run(run, net)


def test_tiny_modadd_imp(tmp_path):
    net = {"vocab_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 4}
    run = tmp_path / "run"
    args = ["imp", "--config", "configs/modadd_imp.yaml", "--run_dir", str(run),
            "--data.init_args.p", "7", "--data.init_args.batch_size", "8", "--data.init_args.probe_size", "4",
            *COMMON, *[f"{NET}{k}={v}" for k, v in net.items()]]
    assert main(args) == 0
    _check_run(run, net)


def test_vocabulary_mismatch_is_one_line(tmp_path, capsys):
    args = ["imp", "--config", "configs/modadd_imp.yaml", "--run_dir", str(tmp_path / "run"),
            "--data.init_args.p", "7", *COMMON, f"{NET}vocab_size=5", f"{NET}n_embd=16", f"{NET}n_head=2"]
    assert main(args) == 2
    assert "vocab_size" in capsys.readouterr().err
