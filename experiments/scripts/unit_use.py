"""How much of what the next layer reads comes through a quarter of act.0's units, per instance.

A unit's use is c_j = std(h_j) * ||W_next[:, j]|| (unchanged when unit j is rescaled and the next
layer's column divided by the same factor); the share is sum of the top quarter of c_j^2 over sum
c_j^2, averaged over the instance's seeds, beside Spearman(std(h_j), c_j): how far the units' raw
scales (a distilled teacher's unit scales) decide their use. Used to bound the population's
`unit_scale` (experiments/data/population.py).

    .venv/bin/python experiments/scripts/unit_use.py runs/calibration_<seed>/population_<seed>/hidden_channel_*
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from channels.verdict.rundata import load_run
from experiments.report.networks import RunNetworks


def unit_use(instance: Path) -> tuple[float, float]:
    """(mean Spearman(std, use), mean top-quarter share of use^2) over the instance's seeds."""
    runs = [load_run(path) for path in sorted(instance.glob("seed_*"))]
    networks = RunNetworks.for_runs(runs)
    rhos, shares = [], []
    for run in runs:
        net = networks.net(run, 0)
        x, _ = networks.evaluation_set(run)
        with torch.no_grad():
            h = net.act[0](net.hidden[0](x))
        reader = net.hidden[1] if len(net.hidden) > 1 else net.out
        std = h.std(0).numpy()
        use = std * reader.weight.norm(dim=0).detach().numpy()
        alive = std > 1e-6
        rhos.append(stats.spearmanr(std[alive], use[alive]).statistic)
        squared = np.sort(use ** 2)[::-1]
        shares.append(squared[: len(squared) // 4].sum() / squared.sum())
    return float(np.mean(rhos)), float(np.mean(shares))


def main(paths: list[str]) -> None:
    for instance in map(Path, paths):
        rho, share = unit_use(instance)
        print(f"{instance}: Spearman(std, use) {rho:.2f}, top-quarter share of use^2 {share:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
