"""Launchers: run many `ltc imp` recipes (`ltc seeds`, `ltc calibrate`) in this process one by one,
or as subprocesses N at a time, each held to a number of CPU threads."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.runtime import console, thread_environment
from lth.errors import LTCError


@dataclass
class Launch:
    """One `ltc imp` run: a label for the console, its recipe file and its run directory."""

    label: str
    config: Path
    run_dir: Path

    @property
    def log_name(self) -> str:
        """The log file's name: the label with every run of non-alphanumerics as one '_'."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_") + ".log"


def run_in_process(launches: list[Launch], threads: int, prefix: str) -> None:
    """Each launch's `ltc imp` in this process, one after the other, on `threads` torch threads."""
    import torch

    from experiments.commands import imp

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for launch in launches:
            console.print(f"[bold]{prefix}[/bold]: {launch.label} -> {launch.run_dir}")
            imp.main(["--config", str(launch.config)])
    finally:
        torch.set_num_threads(before)


def run_subprocesses(launches: list[Launch], workers: int, threads: int, log_dir: Path, prefix: str) -> None:
    """Each launch's `ltc imp` as a subprocess, `workers` at a time, its output in `log_dir`; the
    first failure stops the others and raises with the failed run's last line."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **thread_environment(threads)}
    pending, active = list(launches), []
    while pending or active:
        while pending and len(active) < workers:
            launch = pending.pop(0)
            log = log_dir / launch.log_name
            with open(log, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "imp", "--config", str(launch.config)],
                                        stdout=out, stderr=subprocess.STDOUT, env=env)
            active.append((launch, proc, log, time.perf_counter()))
            console.print(f"[bold]{prefix}[/bold]: started {launch.label} -> {launch.run_dir} (log {log})")
        time.sleep(0.5)
        for item in list(active):
            launch, proc, log, started = item
            if proc.poll() is None:
                continue
            active.remove(item)
            if proc.returncode != 0:
                for _, other, _, _ in active:
                    other.terminate()
                last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
                raise LTCError(f"the run of {launch.label} failed (exit {proc.returncode}): {last[:300]} (see {log})")
            console.print(f"[bold]{prefix}[/bold]: finished {launch.label} in {time.perf_counter() - started:.0f} s")


def run_all(launches: list[Launch], workers: int, threads: int, log_dir: Path, prefix: str) -> None:
    """In this process when `workers` is 1, else as subprocesses."""
    if workers <= 1:
        run_in_process(launches, threads, prefix)
    else:
        run_subprocesses(launches, workers, threads, log_dir, prefix)
