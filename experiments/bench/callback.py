"""Benchmark case `callback`: the SpectraCallback's share of training time on the default
experiment, at its default cadence.

After a short untimed warm-up training, trains level 0 of the default experiment (configs/mnist1d_imp.yaml: MLP on MNIST-1D, spectra at
two sites plus one Jacobian Gram every 500 steps) twice through the IMP driver, side by side in
one process: with the SpectraCallback and with `spectra.enabled false`. Reported:
- share = callback seconds / level train seconds, the callback timing its own measurements;
- paired overhead = train seconds with / without - 1 (noisier: two separate trainings);
- share at the default length, from the measured seconds per measurement m and per training
  step p (without the callback): n m / (S p + n m) for the n measurements of S default steps.
Needs `mnist1d` and `jsonargparse` (the `ltc imp` stack). Target: share <= 10%.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from experiments.bench.suite import DEFAULT_CONFIG, BenchSettings, CaseResult, PeakMemory, row


def measurement_count(max_steps: int, every_n_steps: int) -> int:
    """Measurements in one level: steps 0, n, 2n, ... below max_steps, plus the end of fit."""
    return len(set(range(0, max_steps, every_n_steps)) | {max_steps})


def level_zero_args(config: str, run_dir: Path, max_steps: int | None, device: str, spectra: bool,
                    rewind_step: int = 0) -> list[str]:
    """`ltc imp` flags for level 0 alone of `config`, quiet, W&B off; fewer steps when asked
    (the rewind step is then kept inside the shorter training)."""
    args = ["--config", config, "--run_dir", str(run_dir), "--imp.levels", "0", "--imp.branches", "[]",
            "--imp.branch_levels", "[]", "--wandb.mode", "disabled", "--trainer.enable_progress_bar", "false",
            "--spectra.enabled", str(spectra).lower()]
    if device.startswith("cuda"):
        args += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    if max_steps is not None:
        args += ["--trainer.max_steps", str(max_steps), "--imp.rewind_step", str(min(rewind_step, max_steps))]
    return args


def _train_level_zero(args: list[str]) -> tuple[float, int, float, int]:
    """(train seconds, steps, callback seconds, measurements) of one level-0 training."""
    from experiments.config import imp_parser, parse
    from experiments.environment import LightningEnvironment
    from experiments.runtime import quiet_libraries
    from lth.config import ImpConfig
    from lth.driver import IMPDriver
    from lth.layout import job_name

    class Recording(LightningEnvironment):
        """Keeps the job's SpectraCallback and prints nothing."""

        callback = None

        def make_callbacks(self, job):
            callbacks = super().make_callbacks(job)
            self.callback = callbacks[0] if callbacks else None
            return callbacks

        def report(self, job, metrics, skipped) -> None:
            pass

    quiet_libraries()
    parser = imp_parser()
    cfg = parse(parser, args)
    env = Recording(parser, cfg, Path(cfg.run_dir), "bench")
    metrics = IMPDriver(Path(cfg.run_dir), ImpConfig(**vars(cfg.imp)), env).run()[job_name(0)]
    seconds = env.callback.seconds if env.callback else 0.0
    count = len(env.callback.history.steps) if env.callback else 0
    return metrics["train_time_s"], metrics["steps"], seconds, count


def run(config: str = DEFAULT_CONFIG, max_steps: int | None = None, device: str = "cpu") -> dict:
    """Level 0 with and without the callback; `max_steps` None = the config's own length."""
    from experiments.config import imp_parser, parse

    defaults = parse(imp_parser(), ["--config", config])
    every, default_steps = defaults.spectra.every_n_steps, defaults.trainer.max_steps
    rewind = defaults.imp.rewind_step
    with tempfile.TemporaryDirectory(prefix="bench_callback_") as tmp:
        warm_steps = min(20, max_steps or default_steps)  # one-off costs of the first fit land here
        _train_level_zero(level_zero_args(config, Path(tmp) / "warm-up", warm_steps, device, True, rewind))
        with_s, steps, callback_s, count = _train_level_zero(
            level_zero_args(config, Path(tmp) / "with", max_steps, device, True, rewind))
        without_s, _, _, _ = _train_level_zero(
            level_zero_args(config, Path(tmp) / "without", max_steps, device, False, rewind))
    per_measurement = callback_s / count
    per_step = without_s / steps
    n_default = measurement_count(default_steps, every)
    spectra_default = n_default * per_measurement
    return {
        "config": config, "device": device, "steps": steps, "every_n_steps": every,
        "measurements": count, "train_s_with_callback": with_s, "train_s_without_callback": without_s,
        "callback_s": callback_s, "share": callback_s / with_s, "paired_overhead": with_s / without_s - 1.0,
        "seconds_per_measurement": per_measurement, "seconds_per_step": per_step,
        "default_steps": default_steps, "default_measurements": n_default,
        "share_at_default": spectra_default / (default_steps * per_step + spectra_default),
    }


def case(s: BenchSettings) -> CaseResult:
    """The suite's `callback` case: the callback's share of level time, and time with / without it."""
    f = run(s.config, s.sizes.train_steps, s.device)
    note = f"{f['measurements']} measurements in {f['steps']} steps"
    if f["steps"] != f["default_steps"]:
        note += f"; {f['share_at_default']:.1%} at the default {f['default_steps']} steps (estimated)"

    def rows(mem: PeakMemory) -> list[dict]:
        return [row("callback", "SpectraCallback share of level time", f["callback_s"],
                    f["train_s_with_callback"], f["share"], "share (target <= 0.10)", mem, note),
                row("callback", "level time with / without callback", f["train_s_with_callback"],
                    f["train_s_without_callback"], f["train_s_with_callback"] / f["train_s_without_callback"],
                    "with / without", mem, "two separate trainings: noisier")]

    return f, rows
