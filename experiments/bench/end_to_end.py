"""End-to-end time of the default experiment (`make run`), measured on a reduced run and EXTRAPOLATED.

    python -m experiments.bench.end_to_end [--max_steps N] [--device cuda] [--threads 1]

The default experiment (configs/mnist1d_imp.yaml) is 11 trainings of 1500 steps: levels 0..5,
three controls at level 5, and the instability copy at levels 0 and 5. This runs `ltc imp` as a subprocess on the same config reduced
to three jobs (levels 0 and 1, the random_prune control at level 1), each of the default length
unless `--max_steps` shortens it, and times every phase from the run directory's files: start-up
(launch to init.safetensors), each job (previous file to its DONE, of which `train_time_s` in
metrics.json is the fit) and the tail (last DONE to exit). Every job of IMP trains the same
network for the same steps (pruned weights are zeroed, not removed), so the estimate is

    start-up + n_jobs x mean(job wall - fit + fit x default_steps / steps) + tail.

Peak memory: the child's maximum resident set (os.wait4's ru_maxrss). Needs `mnist1d` and
`jsonargparse` (the `ltc imp` stack).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIG = "configs/mnist1d_imp.yaml"
REDUCED = ["--imp.levels", "1", "--imp.branch_levels", "[1]", "--imp.branches", "[random_prune]"]


def default_jobs(config: str) -> tuple[int, int, int]:
    """(trainings, steps per training, rewind step) of `config` as written: main levels plus controls."""
    from experiments.commands.imp import build_parser
    from experiments.config import parse
    from lth.config import ImpConfig
    from lth.jobs import job_count

    cfg = parse(build_parser(), ["--config", config])
    return job_count(ImpConfig(**vars(cfg.imp))), cfg.trainer.max_steps, cfg.imp.rewind_step


def _launch(argv: list[str], threads: int | None) -> tuple[int, float, int, str]:
    """Run argv; (exit code, wall seconds, child's peak RSS in bytes, the output's tail)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_SILENT="true")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
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


def job_phases(run_dir: Path, launched: float, ended: float) -> tuple[float, list[dict], float]:
    """(start-up s, [{job, wall_s, train_s}] in finishing order, tail s) from file times."""
    done = sorted(run_dir.rglob("DONE"), key=lambda p: p.stat().st_mtime)
    previous = (run_dir / "init.safetensors").stat().st_mtime
    startup = previous - launched
    jobs = []
    for marker in done:
        finished = marker.stat().st_mtime
        metrics = json.loads((marker.parent / "metrics.json").read_text())
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


def format_report(figures: dict) -> str:
    lines = [(f"`ltc imp --config {figures['config']}` reduced to {figures['measured_jobs']} jobs of "
             f"{figures['steps']} steps on {figures['device']}: {figures['measured_wall_s']:.1f} s "
             f"(start-up {figures['startup_s']:.1f} s, tail {figures['tail_s']:.1f} s)")]
    lines += [f"  {job['job']:<26} {job['wall_s']:7.1f} s, fit {job['train_s']:.1f} s" for job in figures["jobs"]]
    lines.append(f"  EXTRAPOLATED default experiment ({figures['default_jobs']} jobs x {figures['default_steps']} "
                 f"steps): {figures['estimated_default_s'] / 60:.1f} min, {figures['wall_vs_train']:.2f}x its "
                 f"fit time; child peak RSS {figures['peak_rss_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--max_steps", type=int, default=None, help="steps per job (default: the config's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the child")
    args = parser.parse_args()
    print(format_report(run(args.config, args.max_steps, args.device, args.threads)))


if __name__ == "__main__":
    main()
