"""Rewinding: each level starts from theta_k on the survivors and exact zeros elsewhere."""
import pytorch_lightning as pl
import torch

from experiments.cli import main
from experiments.commands.imp import LightningEnvironment
from lth.masks import load_mask
from lth.rundir import load_tensors
from tests.helpers import write_config


class Snapshot(pl.Callback):
    """Records the net's weights at fit start and at optimiser step `step` of level 0."""

    store: dict = {}

    def __init__(self, job_name: str, step: int) -> None:
        self.job_name, self.step = job_name, step

    def on_fit_start(self, trainer, pl_module):
        Snapshot.store[self.job_name] = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.job_name == "level_00" and trainer.global_step == self.step:
            Snapshot.store["theta_k"] = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def test_levels_start_from_rewound_survivors(tmp_path, monkeypatch):
    monkeypatch.setattr(LightningEnvironment, "make_callbacks", lambda self, job: [Snapshot(job.name, 7)])
    cfg = write_config(tmp_path, imp={"rewind_step": 7, "branches": ["random_prune", "shuffle"], "branch_levels": [2]})
    run = tmp_path / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    theta_k = load_tensors(run / "rewind.safetensors")
    for k, v in Snapshot.store["theta_k"].items():
        assert torch.equal(theta_k[k], v)
    theta_0 = load_tensors(run / "init.safetensors")
    assert all(torch.equal(theta_0[k], v) for k, v in Snapshot.store["level_00"].items())
    assert not torch.equal(theta_0["hidden.0.weight"], theta_k["hidden.0.weight"])
    for job in ("level_01", "level_02", "random_prune/level_02"):
        start = Snapshot.store[job]
        mask = load_mask(run / job.replace("random_prune/", "branches/random_prune/") / "mask.safetensors")
        for name, value in start.items():
            if name in mask:
                assert torch.equal(value[mask[name]], theta_k[name][mask[name]])
                assert (value[~mask[name]] == 0).all()
            else:  # biases are rewound too
                assert torch.equal(value, theta_k[name])
    # shuffle: same per-tensor multiset of surviving rewound values as the ticket, other places
    ticket = load_mask(run / "level_02" / "mask.safetensors")
    shuffled = Snapshot.store["shuffle/level_02"]
    for name, m in ticket.items():
        assert torch.equal(torch.sort(shuffled[name][shuffled[name] != 0]).values,
                           torch.sort(theta_k[name][m & (theta_k[name] != 0)]).values)
