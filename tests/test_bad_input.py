"""Bad input: each case gives one clear line on stderr and exit code 2, and leaves every finished
artifact byte-identical. Cases run `ltc imp` in-process against a copy of a finished run (or a
fresh run dir, which then must hold no finished level); disk-full runs in a subprocess with a
file-size limit, so that the failing write is a real one."""
from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from experiments.cli import main
from lth import rundir
from lth.masks import save_mask
from tests.helpers import write_config
from tests.test_kill_resume import REPO


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run with levels 0 and 1 (rewind to init)."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = write_config(tmp, imp={"levels": 1, "branches": []})
    run = tmp / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    return cfg, run


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file but config.yaml (the record of the latest command, rewritten by each)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "config.yaml"}


# ---- ways to damage a finished run --------------------------------------------------------------
def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def reseal(level: Path) -> None:
    """Recompute the level's DONE manifest, as if the foreign file had been written by the run."""
    rundir.mark_done(level, list(rundir.read_manifest(level)))


def foreign_mask(level: Path) -> None:
    save_mask(level / "mask.safetensors", {"hidden.0.weight": torch.ones(8, 40, dtype=torch.bool),
                                           "out.weight": torch.ones(10, 8, dtype=torch.bool)})
    reseal(level)


def foreign_weights(level: Path) -> None:
    weights = rundir.load_tensors(level / "weights.safetensors")
    weights["hidden.0.weight"] = torch.zeros(8, 40)
    rundir.save_tensors(level / "weights.safetensors", weights)
    reseal(level)


def yaml_with(cfg: Path, **extra) -> Path:
    out = cfg.with_name("edited.yaml")
    out.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), **extra}))
    return out


# (id, extra args, what the one line must say, how to damage the copy first)
# {run}: a copy of the finished run; {fresh}: a run dir that does not exist yet; {tmp}: scratch space.
CASES = [
    ("prune_fraction_above_one", ["--imp.prune_fraction", "1.5"], "prune_fraction", None),
    ("max_steps_zero", ["--trainer.max_steps", "0", "--run_dir", "{fresh}"], "max_steps", None),
    ("val_check_interval_zero", ["--trainer.val_check_interval", "0"], "val_check_interval", None),
    ("rewind_beyond_training", ["--imp.rewind_step", "500", "--run_dir", "{fresh}"], "beyond the training length", None),
    ("negative_lr", ["--model.init_args.lr", "-1", "--run_dir", "{fresh}"], "lr must be positive", None),
    ("zero_batch_size", ["--data.init_args.batch_size", "0", "--run_dir", "{fresh}"], "batch_size must be >= 1", None),
    ("unknown_strategy", ["--imp.strategy", "sideways", "--run_dir", "{fresh}"], "imp.strategy", None),
    ("unknown_wandb_mode", ["--wandb.mode", "sometimes"], "wandb.mode", None),
    ("unknown_schedule", ["--imp.schedule", "sideways", "--run_dir", "{fresh}"], "unknown imp.schedule", None),
    ("rising_densities", ["--imp.schedule", "[0.5, 0.6]", "--run_dir", "{fresh}"], "must not rise", None),
    ("linear_schedule_to_zero", ["--imp.schedule", "linear", "--imp.prune_fraction", "0.5", "--imp.levels", "2",
                                 "--run_dir", "{fresh}"],
     "prunes everything by level 2", None),
    ("score_step_beyond_training", ["--imp.score_step", "21", "--run_dir", "{fresh}"], "imp.score_step=21", None),
    ("spectra_every_zero", ["--spectra.every_n_steps", "0"], "every_n_steps", None),
    ("malformed_jacobian_pair", ["--spectra.jacobians", '["act.0-act.1"]'], "site_a->site_b", None),
    ("branch_level_dense", ["--imp.branches", '["shuffle"]', "--imp.branch_levels", "[0]"],
     "holds 0, the dense level", None),
    ("unknown_branch", ["--imp.branches", '["everything"]'], "unknown branch", None),
    ("unknown_cli_key", ["--imp.bogus", "1"], "bogus", None),
    ("unknown_yaml_key", ["--config", "{surprise}"], "surprise", None),
    ("unknown_class_path", ["--model.init_args.net.class_path", "experiments.models.mlp.Nope",
                            "--run_dir", "{fresh}"], "Nope", None),
    ("wrong_type", ["--imp.levels", "two"], "imp.levels", None),
    ("missing_config_file", ["--config", "{tmp}/nowhere.yaml"], "does not exist", None),
    ("malformed_yaml", ["--config", "{broken}"], "Problems parsing config", None),
    ("unknown_spectra_site", ["--spectra.sites", '["act.7"]'], "unknown site 'act.7'", None),
    ("missing_data_root", ["--data", "experiments.data.vision.MNISTDataModule", "--data.init_args.root", "{tmp}",
                           "--run_dir", "{fresh}"], "MNIST not found", None),
    ("run_dir_of_another_config", ["--seed_everything", "7"], "another config", None),
    ("run_dir_under_a_file", ["--run_dir", "{tmp}/a_file/run"], "cannot create the run dir", None),
    ("run_dir_not_writable", [], "not writable", "unwritable"),
    ("non_empty_dir_without_config", ["--run_dir", "{tmp}"], "has no config.yaml", None),
    ("corrupt_mask", ["--imp.levels", "2"], "does not match its checksum",
     lambda run: flip_last_byte(run / "level_01/mask.safetensors")),
    ("truncated_weights", ["--imp.levels", "2"], "does not match its checksum",
     lambda run: truncate(run / "level_01/weights.safetensors")),
    ("missing_weights", ["--imp.levels", "2"], "is missing from a finished level",
     lambda run: (run / "level_01/weights.safetensors").unlink()),
    ("corrupt_done_manifest", [], "DONE is unreadable",
     lambda run: (run / "level_01/DONE").write_text("{not json")),
    ("corrupt_spectra_of_a_skipped_level", [], "spectra.npz does not match its checksum",
     lambda run: flip_last_byte(run / "level_00/spectra.npz")),
    ("mask_from_another_model", ["--imp.levels", "2"], "belongs to another model",
     lambda run: foreign_mask(run / "level_01")),
    ("weights_from_another_model", ["--imp.levels", "2"], "weights of another model",
     lambda run: foreign_weights(run / "level_01")),
    ("corrupt_init", ["--imp.levels", "2"], "init.safetensors does not match the checksum stored in it",
     lambda run: flip_last_byte(run / "init.safetensors")),
    ("disk_full_simulated", ["--imp.levels", "2"], "No space left on device", "disk_full"),
    ("nan_divergence", ["--model.init_args.optimizer", "sgd", "--model.init_args.lr", "1e12",
                        "--run_dir", "{fresh}"], "level_00 diverged", None),
]


@pytest.mark.parametrize("case, extra, message, damage", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_spares_finished_artifacts(
        finished, tmp_path, capsys, monkeypatch, case, extra, message, damage):
    cfg, original = finished
    run, fresh, scratch = tmp_path / "run", tmp_path / "fresh", tmp_path / "scratch"
    shutil.copytree(original, run)
    scratch.mkdir()
    (scratch / "a_file").write_text("not a directory")
    (scratch / "broken.yaml").write_text("model: [unclosed\n")
    if damage == "unwritable":
        access = os.access  # as root every path is writable: pretend the run dir is not
        monkeypatch.setattr("experiments.commands.imp.os.access",
                            lambda path, mode: Path(path) != run and access(path, mode))
    elif damage == "disk_full":
        def no_space(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr("lth.rundir.os.fsync", no_space)
    elif damage is not None:
        damage(run)
    places = {"run": run, "fresh": fresh, "tmp": scratch, "broken": scratch / "broken.yaml",
              "surprise": yaml_with(cfg, surprise=3)}
    args = [a.format(**places) for a in ["--config", str(cfg), "--run_dir", "{run}", *extra]]
    before = snapshot(run)
    capsys.readouterr()

    assert main(["imp", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ltc imp: error: ") and message in err, err
    assert snapshot(run) == before
    assert not list(fresh.rglob(rundir.DONE))
    if case == "nan_divergence":
        failed = json.loads((fresh / "level_00/metrics.json").read_text())
        assert failed["diverged"] is True and failed["step"] <= 20
    elif "{fresh}" in extra:
        assert not fresh.exists()  # refused before anything was written
    assert not [p for p in run.rglob("*") if rundir.is_temporary(p)]


@pytest.mark.parametrize("every", [5, pytest.param(100, marks=pytest.mark.slow)],
                         ids=["checkpoint_write", "artifact_write"])
def test_disk_full_is_one_line_exit_2_and_spares_finished_artifacts(finished, tmp_path, every):
    """A real failing write: the process may write at most 3000 bytes per file (like a full disk,
    the write fails with an OSError); config.yaml and masks fit, checkpoints and spectra do not."""
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    before = snapshot(run)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "imp", "--config", str(cfg), "--run_dir", str(run),
         "--imp.levels", "2", "--imp.checkpoint_every_n_steps", str(every)],
        cwd=REPO, capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err and "File too large" in err, err
    assert ("last.ckpt" if every == 5 else "spectra.npz") in err
    assert snapshot(run).items() >= before.items()
    assert not (run / "level_02" / rundir.DONE).exists()
