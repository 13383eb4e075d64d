"""Shared builders for tests: a tiny IMP recipe on MNIST-1D."""
from __future__ import annotations

from pathlib import Path

import yaml

TINY = {
    "experiment": "tiny",
    "seed_everything": 0,
    "model": {
        "class_path": "experiments.tasks.classification.ClassificationTask",
        "init_args": {
            "net": {"class_path": "experiments.models.mlp.MLP",
                    "init_args": {"in_features": 40, "hidden": [16], "num_classes": 10}},
            "num_classes": 10,
            "lr": 0.01,
        },
    },
    "data": {"class_path": "experiments.data.mnist1d.MNIST1DDataModule",
             "init_args": {"batch_size": 64, "num_samples": 1000, "val_size": 100, "probe_size": 64}},
    "trainer": {"max_steps": 20, "val_check_interval": 10, "enable_progress_bar": False},
    "imp": {"levels": 2, "prune_fraction": 0.2, "rewind_step": 0, "branches": [], "checkpoint_every_n_steps": 5},
    "spectra": {"sites": ["act.0"], "jacobians": [], "every_n_steps": 10, "probe_size": 64},
    "wandb": {"mode": "disabled"},
}


def write_config(directory: Path, **overrides) -> Path:
    """Write TINY with section-level overrides (`imp={...}` merges into TINY['imp'])."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = Path(directory) / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
