"""Progress a person can read while an experiment trains.

Each job gets one bar: which job it is (`level 3/8`, `branch shuffle, level 3/8`, `job 5/12`),
its optimiser steps with the time left, the current metrics, and when the whole experiment will
end (`ExperimentClock`: the mean wall time of the jobs finished so far times the jobs left). On a
terminal the bar redraws in place; piped into a file it prints a plain line at 25, 50 and 75% of
the job instead, so logs hold a few lines per job and no bar spam.
"""
from __future__ import annotations

import math
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from lth.jobs import Job, Position

PIPED_LINES = 4  # piped output: a line at each quarter of a job (25, 50, 75%; its end prints its own line)
REFRESH_S = 0.25


def duration(seconds: float) -> str:
    """A short human duration: `42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def job_label(job: Job) -> str:
    """`level 3/8` on the ticket line, `branch shuffle, level 3/8` for a branch, and the job's
    place in the experiment (`job 5/12`)."""
    position = job.position
    level = f"level {job.level}" if position is None else f"level {job.level}/{position.last_level}"
    what = level if job.branch is None else f"branch {job.branch}, {level}"
    return what if position is None else f"{what} (job {position.number}/{position.total})"


class ExperimentClock:
    """When will the experiment end? The mean wall time of the jobs trained so far (or, before the
    first, the training time that finished jobs recorded), times the jobs left."""

    def __init__(self) -> None:
        self.trained: list[float] = []
        self.recorded: list[float] = []
        self._started: float | None = None

    def job_started(self) -> None:
        self._started = time.perf_counter()

    def job_finished(self, skipped: bool, train_time_s: float | None) -> None:
        if not skipped and self._started is not None:
            self.trained.append(time.perf_counter() - self._started)
        elif train_time_s is not None:
            self.recorded.append(float(train_time_s))
        self._started = None

    def per_job(self) -> float | None:
        samples = self.trained or self.recorded
        return sum(samples) / len(samples) if samples else None

    def left(self, position: Position | None, current_left: float = 0.0) -> float | None:
        """Seconds until the experiment ends: the rest of the current job plus the jobs after it."""
        per_job = self.per_job()
        if position is None:
            return None
        after = position.total - position.number
        if after == 0:
            return current_left
        return None if per_job is None else current_left + after * per_job

    def eta(self, position: Position | None, current_left: float = 0.0) -> str:
        """`experiment ETA 2 min 31 s (00:14)`, or what is still unknown."""
        left = self.left(position, current_left)
        if left is None:
            return "experiment ETA after the first job"
        return f"experiment ETA {duration(left)} ({time.strftime('%H:%M', time.localtime(time.time() + left))})"


class JobProgress(ProgressBar):
    """The training bar of one job: steps, time left, current metrics, the experiment's ETA."""

    def __init__(self, job: Job, clock: ExperimentClock, console: Console) -> None:
        super().__init__()
        self.label, self.position, self.clock, self.console = job_label(job), job.position, clock, console
        self._enabled = True
        self._bar: Progress | None = None
        self._task = None
        self._start = (0.0, 0)
        self._shown = (0.0, 0)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled:
            return
        self._start = (time.perf_counter(), trainer.global_step)  # a resumed job starts mid-way
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console, transient=True)
            self._task = self._bar.add_task(self.label, total=trainer.max_steps, completed=trainer.global_step,
                                            info="")
            self._bar.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._enabled:
            return
        now, step, total = time.perf_counter(), trainer.global_step, trainer.max_steps
        if self._bar is not None:
            if now - self._shown[0] >= REFRESH_S or step == total:
                self._bar.update(self._task, completed=step, info=self._info(trainer, now))
                self._shown = (now, step)
        elif step < total and _quarter(step, total) > _quarter(self._shown[1], total):
            self.console.print(f"  {self.label}: step {step}/{total}, {self._info(trainer, now)}")
            self._shown = (now, step)

    def _info(self, trainer: pl.Trainer, now: float) -> str:
        left = self._left(trainer, now)
        module = trainer.lightning_module
        shown = {**self.get_metrics(trainer, module), **getattr(module, "step_metrics", {})}
        metrics = ", ".join(f"{k} {_short(v)}" for k, v in shown.items() if k != "v_num")
        job_left = "" if left is None else f"{duration(left)} left"
        return "; ".join(part for part in (job_left, metrics, self.clock.eta(self.position, left or 0.0)) if part)

    def _left(self, trainer: pl.Trainer, now: float) -> float | None:
        started, first = self._start
        done = trainer.global_step - first
        if done <= 0:
            return None
        return (now - started) / done * (trainer.max_steps - trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _quarter(step: int, total: int) -> int:
    return math.floor(PIPED_LINES * step / max(total, 1))


def _short(value) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
