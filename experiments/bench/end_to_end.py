"""Benchmark case `end_to_end`: the wall time of the default experiment (`make run`), measured on a
reduced run and EXTRAPOLATED.

The default experiment (configs/mnist1d_imp.yaml) is 15 trainings of 3000 steps: levels 0..5,
three controls at levels 2 and 5, and the instability copy at levels 0, 2 and 5. This runs
`ltc imp` as a subprocess on the same config reduced to three jobs (levels 0 and 1, the
random_prune control at level 1), each of the default length unless `max_steps` (the suite's
`Sizes.train_steps`) shortens it, and times every phase from the run directory's files (read
through `lth.layout.RunLayout`): start-up (launch to the run's init weights), each job (previous
file to its DONE manifest, of which `train_time_s` in its metrics is the fit) and the tail (last
DONE to exit). Every job of IMP trains the same network for the same steps (pruned weights are
zeroed, not removed), so the estimate is

    start-up + n_jobs x mean(job wall - fit + fit x default_steps / steps) + tail.

Peak memory: the child's maximum resident set (os.wait4's ru_maxrss). Needs `mnist1d` and
`jsonargparse` (the `ltc imp` stack).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.bench.suite import DEFAULT_CONFIG, BenchSettings, CaseResult, PeakMemory, row
from experiments.runtime import thread_environment
from lth.layout import JobFiles, RunLayout
from lth.rundir import is_done

REDUCED = ["--imp.levels", "1", "--imp.branch_levels", "[1]", "--imp.branches", "[random_prune]"]


def default_jobs(config: str) -> tuple[int, int, int]:
    """(trainings, steps per training, rewind step) of `config` as written: main levels plus controls."""
    from experiments.config import imp_parser, parse

    cfg = parse(imp_parser(), ["--config", config])
    branch_levels = cfg.imp.branch_levels or list(range(1, cfg.imp.levels + 1))
    lines = 2 if cfg.imp.rotation else 1
    jobs = lines * (cfg.imp.levels + 1) + len(cfg.imp.branches) * len(branch_levels)
    jobs += "instability" in cfg.imp.branches  # its copy of the dense level 0
    return jobs, cfg.trainer.max_steps, cfg.imp.rewind_step


def _launch(argv: list[str], threads: int | None) -> tuple[int, float, int, str]:
    """Run argv; (exit code, wall seconds, child's peak RSS in bytes, the output's tail)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_SILENT="true")
    if threads:
        env.update(thread_environment(threads))
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read()[-3000:].decode(errors="replace")
    kib = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, wall, usage.ru_maxrss * kib, tail


def finished_jobs(layout: RunLayout) -> list[JobFiles]:
    """Every finished job of a run: its ticket line, its branches, and the lines inside it, in turn."""
    found = [JobFiles(d) for d in layout.level_dirs().values() if is_done(d)]
    for name in layout.branch_names():  # a branch's level directories are laid out as a line's
        found += finished_jobs(layout.line(name))
    return found


def job_phases(run_dir: Path, launched: float, ended: float) -> tuple[float, list[dict], float]:
    """(start-up s, [{job, wall_s, train_s}] in finishing order, tail s) from file times."""
    layout = RunLayout(run_dir)
    done = sorted(finished_jobs(layout), key=lambda job: job.done.stat().st_mtime)
    previous = layout.init.stat().st_mtime
    startup = previous - launched
    jobs = []
    for job in done:
        finished = job.done.stat().st_mtime
        metrics = json.loads(job.metrics.read_text())
        jobs.append({"job": metrics["job"], "wall_s": finished - previous, "train_s": metrics["train_time_s"]})
        previous = finished
    return startup, jobs, ended - previous


def run(config: str = DEFAULT_CONFIG, max_steps: int | None = None, device: str = "cpu",
        threads: int | None = None) -> dict:
    """Time the reduced run and extrapolate to the default experiment."""
    n_default, default_steps, rewind = default_jobs(config)
    steps = max_steps or default_steps
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        run_dir = Path(tmp) / "run"
        argv = [sys.executable, "-m", "experiments.cli", "imp", "--config", config, *REDUCED,
                "--run_dir", str(run_dir), "--wandb.mode", "disabled", "--trainer.enable_progress_bar", "false"]
        if max_steps is not None:
            argv += ["--trainer.max_steps", str(max_steps), "--imp.rewind_step", str(min(rewind, max_steps))]
        if device.startswith("cuda"):
            argv += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
        launched = time.time()
        code, wall, peak, tail = _launch(argv, threads)
        if code != 0:
            raise RuntimeError(f"`{' '.join(argv[2:])}` failed with exit code {code}:\n{tail}")
        startup, jobs, end = job_phases(run_dir, launched, time.time())
    scale = default_steps / steps
    per_job = [job["wall_s"] - job["train_s"] + job["train_s"] * scale for job in jobs]
    mean_job = sum(per_job) / len(per_job)
    estimate = startup + n_default * mean_job + end
    train_default = n_default * scale * sum(job["train_s"] for job in jobs) / len(jobs)
    return {
        "config": config, "device": device, "measured_jobs": len(jobs), "steps": steps,
        "measured_wall_s": wall, "startup_s": startup, "tail_s": end, "jobs": jobs,
        "default_jobs": n_default, "default_steps": default_steps, "extrapolated": True,
        "estimated_default_s": estimate, "estimated_default_train_s": train_default,
        "wall_vs_train": estimate / train_default, "peak_rss_bytes": peak,
    }


def case(s: BenchSettings) -> CaseResult:
    """The suite's `end_to_end` case: the default experiment's extrapolated wall time vs its fit time."""
    f = run(s.config, s.sizes.train_steps, s.device, s.threads or None)
    note = (f"EXTRAPOLATED from {f['measured_jobs']} jobs of {f['steps']} steps ({f['measured_wall_s']:.0f} s) "
            f"to {f['default_jobs']} jobs of {f['default_steps']}")

    def rows(_: PeakMemory) -> list[dict]:
        return [row("end_to_end", f"default experiment ({s.config})", f["estimated_default_s"],
                    f["estimated_default_train_s"], f["wall_vs_train"], "wall / fit time", f["peak_rss_bytes"],
                    note, "child process ru_maxrss")]

    return f, rows
