"""Test-wide safety: no network, W&B files inside a tmp dir, quiet Lightning."""
from __future__ import annotations

import logging
import os

import pytest
import torch

# Tests run tiny models, for which one thread is as fast as two and immune to oversubscription
# (DDP tests start their own processes beside this one).
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("wandb_home")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(root / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def seeds_run(tmp_path_factory):
    """`ltc seeds` on the tiny recipe (init seeds 0 and 1 with random_prune and shuffle at level 2,
    each also trained in data order 5; W&B offline), then its report: (config, root), the root
    holding `seed_0`, `seed_0_order_5`, `seed_1`, `seed_1_order_5` and `report/`. Shared by the
    report, notebook and API tests."""
    from experiments.cli import main
    from tests.helpers import write_config

    tmp = tmp_path_factory.mktemp("seeds")
    cfg = write_config(tmp, imp={"branches": ["random_prune", "shuffle"], "branch_levels": [2]},
                       spectra={"sites": ["act.0"], "jacobians": [], "every_n_steps": 10, "probe_size": 64, "top_k": 4},
                       wandb={"mode": "offline"})
    root = tmp / "runs"
    with pytest.MonkeyPatch.context() as patch:  # the per-test W&B isolation is not yet in place here
        for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            patch.setenv(var, str(tmp / "wandb_home" / var.lower()))
        patch.delenv("WANDB_MODE", raising=False)
        patch.delenv("WANDB_API_KEY", raising=False)
        patch.chdir(tmp)  # the report looks for runs/calibration under the working directory: none here
        assert main(["seeds", "--config", str(cfg), "--seeds", "[0, 1]", "--data_order_seeds", "[5]",
                     "--run_dir", str(root)]) == 0
    return cfg, root
