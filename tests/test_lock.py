"""One owner per run directory: a second `ltc imp` on a busy run dir says who holds it in one line
and exits 2, touching nothing; the lock file leaves with its owner. (A lock left by a killed
`ltc imp` is taken over: tests/test_kill_resume.py checks it at every kill.)"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.cli import main
from lth.errors import LTCError
from lth.layout import RunLayout
from lth.lock import Owner, RunLock
from tests.helpers import write_config
from tests.test_bad_input import snapshot
from tests.test_kill_resume import REPO

# `ltc imp` that holds its run dir until the test lets it go: it waits before training level 1
# until the file named by LTC_RELEASE exists.
HOLDER = '''\
import os, sys, time
import lth.driver
from experiments.cli import main

train = lth.driver.IMPDriver._train

def _train(self, job, start, **kwargs):
    if job.level == 1:
        deadline = time.time() + 120
        while not os.path.exists(os.environ["LTC_RELEASE"]) and time.time() < deadline:
            time.sleep(0.05)
    return train(self, job, start, **kwargs)

lth.driver.IMPDriver._train = _train
sys.exit(main())
'''


def _wait_until(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the holder never got there"
        time.sleep(0.05)


def _wait_for_owner(lock_file: Path) -> Owner:
    _wait_until(lambda: lock_file.exists() and Owner.parse(lock_file.read_text()) is not None)
    return Owner.parse(lock_file.read_text())


def test_second_ltc_imp_on_a_busy_run_dir_exits_2_with_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, imp={"levels": 1})
    run, release = tmp_path / "run", tmp_path / "release"
    holder_script = tmp_path / "holder.py"
    holder_script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "LTC_RELEASE": str(release)}
    holder = subprocess.Popen([sys.executable, str(holder_script), "imp", "--config", str(cfg), "--run_dir", str(run)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        owner = _wait_for_owner(RunLayout(run).lock)
        assert (owner.pid, owner.host) == (holder.pid, socket.gethostname())
        _wait_until(lambda: (run / "level_00" / "DONE").exists() and not (run / "level_00" / "checkpoints").exists())
        before = snapshot(run)  # the holder now waits before level 1
        capsys.readouterr()
        assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("ltc imp: error: "), err
        assert f"is in use by `ltc imp` (pid {holder.pid} on {owner.host}" in err, err
        assert snapshot(run) == before
    finally:
        release.touch()
        _, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err[-3000:]
    assert (run / "level_01" / "DONE").exists() and not RunLayout(run).lock.exists()


def test_lock_names_its_owner_and_leaves_with_it(tmp_path):
    path = tmp_path / "new" / "LOCK"
    first = RunLock(path)
    assert first.acquire() is None  # the directory is created, nothing was there before
    owner = Owner.parse(path.read_text())
    assert (owner.pid, owner.command) == (os.getpid(), "ltc imp")
    with pytest.raises(LTCError, match=f"pid {os.getpid()}"):
        RunLock(path).acquire()  # another open file, another lock: refused even in this process
    first.release()
    assert not path.exists()
    second = RunLock(path)
    assert second.acquire() is None
    second.release()


def test_release_leaves_a_newer_owners_file_alone(tmp_path):
    path = tmp_path / "LOCK"
    old = RunLock(path)
    old.acquire()
    path.rename(tmp_path / "moved")  # as `--force` moves a run dir away with its lock
    new = RunLock(path)
    new.acquire()
    old.release()
    assert json.loads(path.read_text())["pid"] == os.getpid()  # still the new owner's
    new.release()
    assert not path.exists()


@pytest.mark.parametrize("alive", [True, False])
def test_without_flock_the_recorded_owner_decides(tmp_path, monkeypatch, alive):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    if not alive:
        sleeper.kill()
        sleeper.wait()
    path = tmp_path / "LOCK"
    path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "since": "then",
                                "command": "ltc imp"}))

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr("lth.lock.fcntl.flock", no_flock)
    try:
        lock = RunLock(path)
        if alive:
            with pytest.raises(LTCError, match=f"pid {sleeper.pid}"):
                lock.acquire()
        else:
            assert lock.acquire().pid == sleeper.pid  # taken over from the dead owner
            assert Owner.parse(path.read_text()).pid == os.getpid()
            lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()
