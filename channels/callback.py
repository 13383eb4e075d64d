"""SpectraCallback: track covariance and Jacobian spectra on a fixed probe set during training.

Logs scalars `spectra/<site>/<cov|jac>/<metric>` and `overlap/<site>/jac_vs_cov` at the
trainer's global step (straight to the loggers with an explicit step, not via `self.log`),
eigenvalues as W&B histograms during training and as one W&B table per spectrum at the end,
and writes every measurement to `spectra.npz` in the level's directory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from channels.keys import EIGENVALUES, STEPS, SpectrumKey, stored_keys
from channels.spectra import SpectraConfig, SpectraHistory, measure, save_npz


class SpectraCallback(pl.Callback):
    """Measure at step 0, every `cfg.every_n_steps` steps and at the end of fit."""

    def __init__(self, cfg: SpectraConfig, probe, out_path: Path | None = None, jacobian_probe=None) -> None:
        cfg.validate()
        self.cfg, self.out_path = cfg, out_path
        self.probe = probe
        self.jacobian_probe = jacobian_probe if jacobian_probe is not None else _head(probe, cfg.jacobian_probe_size)
        self.history = SpectraHistory()
        self.seconds = 0.0

    @property
    def state_key(self) -> str:
        return "SpectraCallback"

    def state_dict(self) -> dict:
        return self.history.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.history.load_state_dict(state_dict)

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import time

        started = time.perf_counter()
        step = trainer.global_step
        net = pl_module.net
        device = next(net.parameters()).device
        result = measure(net, _to(self.probe, device), _to(self.jacobian_probe, device), self.cfg, step)
        self.history.add(step, result)
        self.seconds += time.perf_counter() - started
        if trainer.is_global_zero:
            self._log(trainer, step, result)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step % self.cfg.every_n_steps == 0 and trainer.global_step not in self.history.steps:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._measure(trainer, pl_module)
        if trainer.is_global_zero:
            if self.out_path is not None:
                save_npz(self.out_path, self.history.arrays())
            self._log_tables(trainer)

    def _log(self, trainer: pl.Trainer, step: int, result: dict[str, dict]) -> None:
        scalars = {SpectrumKey.parse(name).wandb(metric): float(value)
                   for name, entry in result.items() for metric, value in entry["metrics"].items()}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        run = _wandb_run(trainer)
        if run is not None:
            import wandb

            hists = {SpectrumKey.parse(name).wandb("log10_eigenvalues"): wandb.Histogram(
                np.log10(entry[EIGENVALUES] + 1e-12)) for name, entry in result.items() if EIGENVALUES in entry}
            run.log({**hists, "trainer/global_step": step})

    def _log_tables(self, trainer: pl.Trainer) -> None:
        run = _wandb_run(trainer)
        if run is None:
            return
        import wandb

        arrays = self.history.arrays()
        tables = {}
        for key in stored_keys(arrays):
            rows = [[int(s), i + 1, float(v)] for s, spec in zip(arrays[STEPS], arrays[key.field(EIGENVALUES)])
                    for i, v in enumerate(spec)]
            tables[key.wandb("table")] = wandb.Table(columns=["step", "rank", "eigenvalue"], data=rows)
        run.log({**tables, "trainer/global_step": trainer.global_step})


def _wandb_run(trainer: pl.Trainer):
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            return logger.experiment
    return None


def _head(probe, n: int):
    if isinstance(probe, dict):
        return {k: v[:n] for k, v in probe.items()}
    return probe[:n]


def _to(probe, device: torch.device):
    if isinstance(probe, dict):
        return {k: v.to(device) for k, v in probe.items()}
    return probe.to(device)
