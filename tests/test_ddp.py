"""Multi-process runs: Lightning DDP on the CPU (gloo, 2 processes).

Every rank computes each mask itself from the same saved files (there is no process group before
fit to broadcast one from rank 0); the tests check the ranks agree with each other and with a
single-process run, that only rank 0 writes the run directory and W&B, that the spectra agree, and
that a killed DDP run resumes to the uninterrupted result. (That the streaming covariance
all-reduced across gloo ranks equals the single-process one to 1e-10 is tested in
test_covariance.py.)
"""
from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
import torch

import lth.callbacks
import lth.driver
from channels.spectra import SpectraConfig, load_npz, measure
from experiments.cli import main
from experiments.data.mnist1d import MNIST1DDataModule
from experiments.models.mlp import MLP
from lth import rundir
from lth.masks import load_mask
from tests.helpers import TINY, write_config
from tests.test_kill_resume import results, run_ltc, write_wrapper

DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


@pytest.fixture(scope="module")
def level0(tmp_path_factory):
    """A single-process run with level 0 finished, and the wrapper script."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = write_config(tmp, imp={"levels": 0, "branches": ["random_prune"]})
    run = tmp / "level0"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    return cfg, run, write_wrapper(tmp)


@pytest.fixture(scope="module")
def extended(level0, tmp_path_factory):
    """Level 0 extended by level 1 and its random_prune control, in one process and under DDP
    (W&B offline, each rank recording its masks, spectra and any write it makes to the run dir)."""
    cfg, finished, wrapper = level0
    tmp = tmp_path_factory.mktemp("extended")
    single, multi, record = tmp / "single", tmp / "multi", tmp / "record"
    for run in (single, multi):
        shutil.copytree(finished, run)
    record.mkdir()
    assert main(["imp", "--config", str(cfg), "--run_dir", str(single), "--imp.levels", "1"]) == 0
    proc = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(multi), "--imp.levels", "1",
                             "--wandb.mode", "offline", *DDP], extra_env={"LTC_RECORD": str(record)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return finished, single, multi, record, proc


JOBS = {"level_01": "level_01", "random_prune-level_01": "branches/random_prune/level_01"}


def test_ddp_masks_equal_single_process_ones_on_every_rank(extended):
    _, single, multi, record, _ = extended
    for job, rel in JOBS.items():
        saved = rundir.tensors_sha256(load_mask(multi / rel / "mask.safetensors"))
        assert (record / f"mask-{job}-rank0.txt").read_text() == (record / f"mask-{job}-rank1.txt").read_text() == saved
        assert (multi / rel / "mask.safetensors").read_bytes() == (single / rel / "mask.safetensors").read_bytes()


def test_ddp_only_rank_0_writes_the_run_dir_and_wandb(extended):
    finished, _, multi, record, proc = extended
    assert not list(record.glob("foreign-writes-*.txt")), [p.read_text() for p in record.glob("foreign-*")]
    assert {p.name for p in record.glob("mask-*-rank1.txt")} == {f"mask-{job}-rank1.txt" for job in JOBS}  # rank 1 ran
    assert len(list((multi / "wandb").glob("offline-run-*/*.wandb"))) == 2  # one W&B run per trained job
    assert {p.name: p.read_bytes() for p in (multi / "level_00").iterdir()} == \
           {p.name: p.read_bytes() for p in (finished / "level_00").iterdir()}
    for line in ("level_01 ", "random_prune/level_01 "):  # one report line per job, from rank 0 only
        assert sum(out.startswith(line) for out in proc.stdout.splitlines()) == 1, proc.stdout


def test_ddp_spectra_agree_across_ranks_and_with_a_single_process_measurement(extended):
    """Every rank measured the same spectra on the full probe set and rank 0 saved them; the final
    covariance spectrum is that of the saved final weights measured in one process, to 1e-10."""
    _, _, multi, record, _ = extended
    for job, rel in JOBS.items():
        ranks = [np.load(record / f"spectra-{job}-rank{r}.npz") for r in (0, 1)]
        saved = load_npz(multi / rel / "spectra.npz")
        assert set(ranks[0].files) == set(ranks[1].files) == set(saved)
        for key in saved:
            assert np.array_equal(ranks[0][key], ranks[1][key]) and np.array_equal(ranks[0][key], saved[key]), key
    net = MLP(**TINY["model"]["init_args"]["net"]["init_args"])
    net.load_state_dict(rundir.load_tensors(multi / "level_01/weights.safetensors"))
    probe = MNIST1DDataModule(**TINY["data"]["init_args"]).probe_inputs(TINY["spectra"]["probe_size"])
    expected = measure(net, probe, probe[:1], SpectraConfig(**TINY["spectra"]), step=20)["act.0/cov"]["eigenvalues"]
    saved = load_npz(multi / "level_01/spectra.npz")
    assert saved["steps"][-1] == 20
    np.testing.assert_allclose(saved["act.0/cov/eigenvalues"][-1], expected, rtol=0, atol=1e-10 * expected.max())


class _Stop(Exception):
    pass


def test_checkpoint_of_another_process_count_is_refused(level0, tmp_path, capsys, monkeypatch):
    """Each step's batch is split across the processes: a level resumed with another count would
    silently train on other data, so its checkpoint is refused."""
    cfg, _, _ = level0
    save = lth.callbacks.AtomicCheckpoint._save

    def save_then_stop(self, trainer):
        save(self, trainer)
        raise _Stop

    monkeypatch.setattr(lth.callbacks.AtomicCheckpoint, "_save", save_then_stop)
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        main(["imp", "--config", str(cfg), "--run_dir", str(run)])
    monkeypatch.setattr(lth.callbacks.AtomicCheckpoint, "_save", save)
    ckpt = run / "level_00/checkpoints/last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["world_size"] == 1
    torch.save({**state, "world_size": 2}, ckpt)
    capsys.readouterr()
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "saved by 2 processes, this run has 1" in err, err


@pytest.mark.slow
def test_killed_ddp_run_resumes_to_the_uninterrupted_ddp_result(level0, tmp_path):
    cfg, _, wrapper = level0
    args = ["--config", str(cfg), "--imp.levels", "1", *DDP]
    reference = run_ltc(wrapper, [*args, "--run_dir", str(tmp_path / "reference")])
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = tmp_path / "run"
    for fault in ("checkpoint@level_00:10", "checkpoint@random_prune/level_01:5"):
        killed = run_ltc(wrapper, [*args, "--run_dir", str(run)], fault=fault)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    final = run_ltc(wrapper, [*args, "--run_dir", str(run)])
    assert final.returncode == 0, final.stderr[-3000:]
    assert results(run) == results(tmp_path / "reference")
    assert json.loads((run / "level_00/metrics.json").read_text())["steps"] == 20
