"""Launchers: run many `ltc imp` recipes (`ltc seeds`, `ltc calibrate`) in this process one by one,
in N worker processes (each held to a number of CPU threads), or as cluster jobs through
any submitit executor (`slurm`; `local` runs them as local processes, which the tests use).
Each says how far it got: runs done / running / left, with an ETA (`LaunchTally`)."""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.environment.progress import duration
from experiments.runtime import console, limit_cpu_threads, thread_environment
from lth.errors import LTCError
from lth.layout import log_file

HERE = "here"  # this machine: in this process, or `workers` worker processes
POLL_S = 1.0
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Interrupt): ")


@dataclass
class Launch:
    """One `ltc imp` run: a label for the console, its recipe file and its run directory."""

    label: str
    config: Path
    run_dir: Path


@dataclass
class LaunchTally:
    """Runs done / running / left, and when the last will end: the mean duration of the finished
    runs times the runs not finished, over the runs at once (`parallel`, the workers; None, as on
    a cluster's queue: as many as are running now)."""

    total: int
    prefix: str
    parallel: int | None = None
    done: int = 0
    running: int = 0
    seconds: list[float] = field(default_factory=list)

    def started(self) -> None:
        self.running += 1

    def finished(self, seconds: float) -> None:
        self.running, self.done = max(self.running - 1, 0), self.done + 1
        self.seconds.append(seconds)

    def line(self, what: str) -> str:
        left = self.total - self.done - self.running
        counts = f"{self.done} done, {self.running} running, {left} left of {self.total}"
        if self.seconds and self.done < self.total:
            per_run = sum(self.seconds) / len(self.seconds)
            unfinished = self.total - self.done
            at_once = min(self.parallel or self.running, unfinished)
            eta = f"; ETA {duration(per_run * unfinished / max(at_once, 1))}"
        else:
            eta = ""
        return f"[bold]{self.prefix}[/bold]: {what} ({counts}{eta})"

    def show(self, what: str) -> None:
        console.print(self.line(what))


def run_in_process(launches: list[Launch], threads: int, prefix: str) -> None:
    """Each launch's `ltc imp` in this process, one after the other, on `threads` torch threads."""
    import torch

    from experiments.commands import imp

    before = torch.get_num_threads()
    limit_cpu_threads(threads)  # torch's pool and numpy's BLAS (the spectra's eigh) alike
    tally = LaunchTally(len(launches), prefix, parallel=1)
    try:
        for launch in launches:
            tally.started()
            tally.show(f"{launch.label} -> {launch.run_dir}")
            started = time.perf_counter()
            imp.main(["--config", str(launch.config)])
            tally.finished(time.perf_counter() - started)
        tally.show("all runs finished")
    finally:
        torch.set_num_threads(before)


def _run_logged(config: str, log: str, threads: int) -> int:
    """One `ltc imp` in a worker process, its output (Python's and the libraries') into `log`;
    returns its exit code (1 on an unexpected exception, whose traceback ends the log)."""
    import traceback

    from experiments.cli import main

    limit_cpu_threads(threads)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            return main(["imp", "--config", config])
        except BaseException:  # noqa: BLE001 - a worker must report, not die
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_workers(launches: list[Launch], workers: int, threads: int, log_dir: Path, prefix: str) -> None:
    """Each launch's `ltc imp` in one of `workers` worker processes (each imports the libraries once
    and runs its launches one after another, about 8 s of CPU saved per run), its output in
    `log_dir`; the first failure stops the others and raises with the failed run's last line."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    log_dir.mkdir(parents=True, exist_ok=True)
    saved_env = {var: os.environ.get(var) for var in thread_environment(threads)}
    os.environ.update(thread_environment(threads))  # inherited by the workers before torch loads
    tally = LaunchTally(len(launches), prefix, parallel=workers)
    pending, running = list(launches), {}
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            while pending or running:
                while pending and len(running) < workers:
                    launch = pending.pop(0)
                    log = log_file(log_dir, launch.label)
                    future = pool.submit(_run_logged, str(launch.config), str(log), threads)
                    running[future] = (launch, log, time.perf_counter())
                    tally.started()
                    tally.show(f"started {launch.label} -> {launch.run_dir} (log {log})")
                done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    launch, log, started = running.pop(future)
                    try:
                        code = future.result()
                    except BrokenProcessPool as exc:
                        raise LTCError(f"the worker running {launch.label} died ({exc}); see {log}") from exc
                    if code != 0:
                        for other in running:
                            other.cancel()
                        pool.shutdown(wait=False, cancel_futures=True)
                        last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
                        raise LTCError(f"the run of {launch.label} failed (exit {code}): {last[:300]} (see {log})")
                    tally.finished(time.perf_counter() - started)
                    tally.show(f"finished {launch.label}")
    finally:
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


class ImpJob:
    """One `ltc imp` run inside a cluster job. submitit pickles the call; on a timeout or a
    pre-emption it calls `checkpoint` and requeues the same run, which resumes from its files."""

    def __init__(self, config: Path, threads: int) -> None:
        self.config, self.threads = str(config), threads

    def __call__(self) -> None:
        from experiments.commands import imp

        limit_cpu_threads(self.threads)
        imp.main(["--config", self.config])

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def run_submitit(launches: list[Launch], executor_name: str, parameters: dict, threads: int, folder: Path,
                 prefix: str) -> None:
    """Each launch as a job of submitit's `executor_name` executor (its logs in `folder`), then wait
    for all of them; a failed run raises (after the others finished) with its error's last line."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=executor_name)
        executor.update_parameters(**{"timeout_min": 24 * 60, "name": prefix.replace(" ", "_"), **parameters})
    except (ValueError, AssertionError, RuntimeError) as exc:
        raise LTCError(f"submitit executor {executor_name!r}: {' '.join(str(exc).split())[:300]}") from exc
    tally = LaunchTally(len(launches), prefix)
    jobs = {}
    for launch in launches:
        jobs[launch.label] = (launch, executor.submit(ImpJob(launch.config, threads)), time.perf_counter())
        tally.show(f"submitted {launch.label} -> {launch.run_dir} (job {jobs[launch.label][1].job_id})")
    waiting, failed, seen = dict(jobs), [], ""
    while waiting:
        for label, (launch, job, submitted) in list(waiting.items()):
            if job.done():
                del waiting[label]
                error = job.exception()
                if error is not None:
                    failed.append((launch, error, job))
                tally.finished(time.perf_counter() - submitted)
        tally.running = sum(1 for _, job, _ in waiting.values() if job.state.upper() == "RUNNING")
        now = tally.line("waiting for the jobs")
        if now != seen:
            console.print(now)
            seen = now
        time.sleep(POLL_S if waiting else 0)
    if failed:
        launch, error, job = failed[0]
        raise LTCError(f"{len(failed)} of {len(launches)} runs failed; {launch.label}: {_raised(error)[:300]} "
                       f"(see {job.paths.stderr})")


def _raised(error: Exception) -> str:
    """The message of the exception a job's traceback ends with (submitit wraps it in its own)."""
    lines = [line for line in str(error).splitlines() if EXCEPTION_LINE.match(line)]
    return lines[-1].split(": ", 1)[1].strip() if lines else " ".join(str(error).split())


def run_all(launches: list[Launch], workers: int, threads: int, log_dir: Path, prefix: str,
            launcher: str = HERE, parameters: dict | None = None) -> None:
    """In this process when `workers` is 1, else in worker processes; with a submitit `launcher`, as its jobs."""
    if launcher != HERE:
        run_submitit(launches, launcher, parameters or {}, threads, log_dir, prefix)
    elif workers <= 1:
        run_in_process(launches, threads, prefix)
    else:
        run_workers(launches, workers, threads, log_dir, prefix)
