"""Kill and resume: `ltc imp` SIGKILLed at every stage of a run finishes, when re-run, with the
masks, weights, spectra and metrics of an uninterrupted run, bit for bit on the CPU; finished
levels are never recomputed and half-written files are never taken as finished.

The kills are real: `ltc imp` runs in its own process group through a small wrapper script that
patches one engine function to SIGKILL the group at the chosen moment (test-only; the engine has
no fault-injection hooks). The helpers here are shared with the DDP tests.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from lth import rundir
from lth.layout import RunLayout
from lth.lock import Owner
from tests.helpers import write_config

REPO = Path(__file__).resolve().parents[1]

FAULT_WRAPPER = '''\
"""`ltc` with one injected fault, for tests: SIGKILL the whole process group at a chosen moment.

LTC_FAULT = "checkpoint@JOB:STEP"  once the checkpoint of optimiser step STEP of JOB is in place
          | "spectra@JOB:N"        when the N-th spectra measurement of JOB starts
          | "tmp@PATH"             once PATH (under the run dir) is written to its temporary name
          | "written@PATH"         once PATH is renamed into place
Only global rank 0 triggers it; the other ranks die with the group.
LTC_RECORD = DIR: every rank writes, per job, its mask digest and its spectra history to DIR, and
any write it makes under the run dir when it is not rank 0 to DIR/foreign-writes-<pid>.txt.
"""
import os
import signal
import sys

import numpy as np

import channels.callback
import lth.callbacks
import lth.driver
import lth.rundir
from experiments.cli import main

KIND, _, WHERE = os.environ.get("LTC_FAULT", "").partition("@")
RECORD = os.environ.get("LTC_RECORD")
RUN_DIR = os.path.realpath(sys.argv[sys.argv.index("--run_dir") + 1])


def die():
    os.killpg(os.getpgrp(), signal.SIGKILL)


def job_of(directory):
    return os.path.relpath(os.path.realpath(directory), RUN_DIR).replace("branches/", "")


def rank():
    return os.environ.get("LOCAL_RANK", "0")


if KIND == "checkpoint":
    JOB, STEP = WHERE.rsplit(":", 1)
    save = lth.callbacks.AtomicCheckpoint._save

    def _save(self, trainer):
        save(self, trainer)
        if trainer.is_global_zero and trainer.global_step == int(STEP) and job_of(self.path.parent.parent) == JOB:
            die()

    lth.callbacks.AtomicCheckpoint._save = _save

if KIND == "spectra":
    JOB, COUNT = WHERE.rsplit(":", 1)
    measure = channels.callback.SpectraCallback._measure
    calls = []

    def _measure(self, trainer, pl_module):
        if trainer.is_global_zero and job_of(self.out_path.parent) == JOB:
            calls.append(trainer.global_step)
            if len(calls) == int(COUNT):
                die()
        measure(self, trainer, pl_module)

    channels.callback.SpectraCallback._measure = _measure

if KIND in ("tmp", "written"):
    atomic_write = lth.rundir.atomic_write

    def _atomic_write(path, write):
        hit = os.path.realpath(path) == os.path.join(RUN_DIR, WHERE) and lth.driver.is_global_zero()
        if hit and KIND == "tmp":
            write = lambda tmp, write=write: (write(tmp), die())
        atomic_write(path, write)
        if hit:
            die()

    lth.rundir.atomic_write = _atomic_write

if RECORD:
    agree = lth.callbacks.MaskAgreement.on_fit_start
    train_end = channels.callback.SpectraCallback.on_train_end

    def _agree(self, trainer, pl_module):
        job = job_of(trainer.default_root_dir).replace("/", "-")
        with open(os.path.join(RECORD, f"mask-{job}-rank{rank()}.txt"), "w") as fh:
            fh.write(self.digest)
        agree(self, trainer, pl_module)

    def _train_end(self, trainer, pl_module):
        train_end(self, trainer, pl_module)
        job = job_of(self.out_path.parent).replace("/", "-")
        np.savez(os.path.join(RECORD, f"spectra-{job}-rank{rank()}.npz"), **self.history.arrays())

    def audit(event, args):
        if event not in ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree",
                         "os.truncate", "os.chmod", "tempfile.mkstemp") or lth.driver.is_global_zero():
            return
        if event == "open" and not ((args[1] and any(c in args[1] for c in "wax+"))
                                    or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            return
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)).startswith(RUN_DIR):
            with open(os.path.join(RECORD, f"foreign-writes-{os.getpid()}.txt"), "a") as fh:
                fh.write(f"{event} {os.fsdecode(path)}\\n")

    lth.callbacks.MaskAgreement.on_fit_start = _agree
    channels.callback.SpectraCallback.on_train_end = _train_end
    sys.addaudithook(audit)

sys.exit(main())
'''


class DropoutMLP(nn.Module):
    """A one-hidden-layer MLP with dropout, so that resumes must reproduce the random draws too."""

    def __init__(self, in_features: int = 40, hidden: int = 16, num_classes: int = 10, p: float = 0.2) -> None:
        super().__init__()
        self.hidden = nn.ModuleList([nn.Linear(in_features, hidden)])
        self.act = nn.ModuleList([nn.ReLU()])
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.out(self.drop(self.act[0](self.hidden[0](x))))


DROPOUT_MODEL = {
    "class_path": "experiments.tasks.classification.ClassificationTask",
    "init_args": {"net": {"class_path": "tests.test_kill_resume.DropoutMLP"}, "num_classes": 10, "lr": 0.01},
}
# levels 0..2, the random_prune control at level 1, theta_k at step 5, a checkpoint every 5 steps
RECIPE = {"model": DROPOUT_MODEL,
          "imp": {"levels": 2, "rewind_step": 5, "branches": ["random_prune"], "branch_levels": [1]}}


def write_wrapper(directory: Path) -> Path:
    path = Path(directory) / "ltc_fault.py"
    path.write_text(FAULT_WRAPPER)
    return path


def run_ltc(wrapper: Path, args: list[str], fault: str = "", extra_env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `ltc imp ARGS` through the fault wrapper in a new process group; the time bound covers
    the whole group (DDP ranks included)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "LTC_FAULT": fault,
           "WANDB_MODE": "disabled", "COLUMNS": "200", **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, str(wrapper), "imp", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def results(run_dir: Path) -> dict[str, object]:
    """Everything a run computed, by path: file bytes, JSON without timing fields. Leftovers
    (temporary files, checkpoints) show up as extra paths."""
    out: dict[str, object] = {}
    for path in sorted(Path(run_dir).rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if not path.is_file() or rel == "config.yaml" or rel.startswith("wandb/"):
            continue
        if path.name == "metrics.json":
            out[rel] = {k: v for k, v in json.loads(path.read_text()).items() if k != "train_time_s"}
        elif path.name == rundir.DONE:  # holds the sha256 of metrics.json, which has the timing
            out[rel] = {k: v for k, v in rundir.read_manifest(path.parent).items() if k != "metrics.json"}
        else:
            out[rel] = path.read_bytes()
    return out


def finished_files(run_dir: Path) -> dict[str, tuple[bytes, int, int]]:
    """Bytes, mtime and inode of every file of every finished level (a rewrite changes them)."""
    out = {}
    for done in Path(run_dir).rglob(rundir.DONE):
        for path in done.parent.iterdir():
            if path.is_file():
                st = path.stat()
                out[path.relative_to(run_dir).as_posix()] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return out


def assert_finished_levels_are_whole(run_dir: Path) -> None:
    """Every level with a DONE manifest has all its artifacts, matching their checksums."""
    for done in Path(run_dir).rglob(rundir.DONE):
        rundir.verify_all(done.parent)
        assert set(rundir.read_manifest(done.parent)) >= {"mask.safetensors", "weights.safetensors", "metrics.json"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The recipe, the wrapper, and an uninterrupted reference run of it."""
    tmp = tmp_path_factory.mktemp("kill")
    cfg, wrapper = write_config(tmp, **RECIPE), write_wrapper(tmp)
    reference = tmp / "reference"
    done = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(reference)])
    assert done.returncode == 0, done.stderr[-3000:]
    return cfg, wrapper, reference


def _killed(wrapper, cfg, run_dir, fault):
    proc = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(run_dir)], fault=fault)
    assert proc.returncode == -signal.SIGKILL, f"the fault {fault} never fired: {proc.stderr[-3000:]}"
    stale = Owner.parse(RunLayout(run_dir).lock.read_text())  # the killed owner's lock stays behind
    assert stale is not None and not stale.alive(), stale


def _exists(run_dir: Path, *rels: str) -> bool:
    return all((run_dir / rel).exists() for rel in rels)


def _tmp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if rundir.is_temporary(p)]


# (fault, what the run dir must show right after the kill)
STAGES = [
    ("checkpoint@level_00:10",  # during level 0, after its validation at step 10
     lambda r: _exists(r, "level_00/checkpoints/last.ckpt", "rewind.safetensors") and not _exists(r, "level_00/DONE")),
    ("written@level_00/DONE",  # between levels: level 0 finished, its checkpoint not yet removed
     lambda r: _exists(r, "level_00/DONE", "level_00/checkpoints/last.ckpt") and not _exists(r, "level_01")),
    ("spectra@level_01:2",  # during level 1's spectra at step 10
     lambda r: _exists(r, "level_01/checkpoints/last.ckpt") and not _exists(r, "level_01/DONE")),
    ("checkpoint@random_prune/level_01:5",  # during a control branch
     lambda r: _exists(r, "level_01/DONE", "branches/random_prune/level_01/checkpoints/last.ckpt")),
    ("tmp@level_02/DONE",  # while level 2's files are written: all there but DONE, still in its temporary file
     lambda r: _exists(r, "level_02/weights.safetensors", "level_02/metrics.json", "level_02/spectra.npz")
     and not _exists(r, "level_02/DONE") and any(p.name.startswith(".DONE.") for p in _tmp_files(r / "level_02"))),
]


def test_killed_at_every_stage_resumes_to_the_uninterrupted_result(setup, tmp_path):
    cfg, wrapper, reference = setup
    run = tmp_path / "run"
    seen: dict[str, tuple[bytes, int, int]] = {}
    for fault, evidence in STAGES:
        _killed(wrapper, cfg, run, fault)
        assert evidence(run), f"the kill at {fault} did not leave the expected state"
        assert_finished_levels_are_whole(run)
        now = finished_files(run)
        assert {k: now[k] for k in seen} == seen, f"a finished level was rewritten before {fault}"
        seen = now
    final = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(run)])
    assert final.returncode == 0, final.stderr[-3000:]
    assert "took over the lock of `ltc imp` (pid" in final.stdout and not RunLayout(run).lock.exists()
    assert finished_files(run).items() >= seen.items()  # finished levels untouched to the end
    for job in ("level_00 ", "level_01 ", "random_prune/level_01 "):
        assert any(line.startswith(job) and "done earlier" in line for line in final.stdout.splitlines()), job
    assert results(run) == results(reference)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [
    "checkpoint@level_00:5",
    "tmp@rewind.safetensors",
    "tmp@level_00/weights.safetensors",
    "written@level_00/weights.safetensors",
    "tmp@level_01/mask.safetensors",
    "tmp@level_01/spectra.npz",
    "spectra@level_01:1",
    "checkpoint@level_01:15",
    "written@level_01/metrics.json",
    "spectra@random_prune/level_01:3",
    "written@branches/random_prune/level_01/DONE",
    "checkpoint@level_02:10",
])
def test_one_kill_anywhere_resumes_to_the_uninterrupted_result(setup, tmp_path, fault):
    cfg, wrapper, reference = setup
    run = tmp_path / "run"
    _killed(wrapper, cfg, run, fault)
    assert_finished_levels_are_whole(run)
    before = finished_files(run)
    final = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(run)])
    assert final.returncode == 0, final.stderr[-3000:]
    assert finished_files(run).items() >= before.items()
    assert results(run) == results(reference)
