"""Offline safety: with no network and no W&B credentials every command finishes, within a time
bound on the subprocess. All proxies and endpoints point at a local socket that accepts and never
answers, so any attempt to reach the network would hang there (and is counted)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from experiments.cli import COMMANDS
from tests.helpers import write_config
from tests.test_kill_resume import REPO

TIME_BOUND_S = 300  # a tiny run takes seconds; a network wait would take minutes


class Blackhole:
    """A local TCP server that accepts connections, counts them and never replies."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def offline_env(tmp_path):
    hole = Blackhole()
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and k not in ("WANDB_API_KEY", "WANDB_MODE", "NETRC")}
    env.update({"HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
                "WANDB_BASE_URL": hole.url, "HF_ENDPOINT": hole.url, "COLUMNS": "200"})
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[var] = env[var.lower()] = hole.url
    (tmp_path / "home").mkdir()
    yield env, hole
    hole.close()


def _run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.cli", *argv], cwd=REPO, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=TIME_BOUND_S)


def test_imp_finishes_offline_without_credentials(offline_env, tmp_path):
    env, hole = offline_env
    cfg = write_config(tmp_path, imp={"levels": 1, "branches": []}, wandb={"mode": None})  # default: offline
    run = tmp_path / "run"
    proc = _run(["imp", "--config", str(cfg), "--run_dir", str(run)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B: offline" in proc.stdout
    assert len(list((run / "wandb").glob("offline-run-*/*.wandb"))) == 2  # one W&B run per level
    assert (run / "level_01" / "DONE").is_file()
    assert not hole.connections


def test_online_without_credentials_is_refused_at_once(offline_env, tmp_path):
    env, hole = offline_env
    cfg = write_config(tmp_path, imp={"levels": 0, "branches": []})
    proc = _run(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "run"), "--wandb.mode", "online"], env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "needs W&B credentials" in err and "--wandb.mode offline" in err, err
    assert not (tmp_path / "run").exists()
    assert not hole.connections


@pytest.mark.slow
def test_every_command_answers_help_offline(offline_env):
    env, hole = offline_env
    available = [name for name, (module, _) in COMMANDS.items()
                 if (REPO / (module.replace(".", "/") + ".py")).is_file()]
    script = ("import contextlib, io, sys\nfrom experiments.cli import main\n"
              "for name in sys.argv[1:]:\n"
              "    out = io.StringIO()\n"
              "    with contextlib.redirect_stdout(out):\n"
              "        try:\n            code = main([name, '--help'])\n"
              "        except SystemExit as exit_:\n            code = exit_.code\n"
              "    print(name, code, 'usage' in out.getvalue().lower())\n")
    proc = subprocess.run([sys.executable, "-c", script, *available], cwd=REPO, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=TIME_BOUND_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:-1] == [f"{name} 0 True" for name in available]
    assert "imp" in available and not hole.connections
