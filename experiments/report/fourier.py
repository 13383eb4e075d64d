"""The Fourier reading of modular-addition runs (`channels.fourier`): for each run, the dense
network, the ticket at the sparsest level and the controls beside it, rebuilt from the run's
config.yaml; the rows and the figure a report shows.

The reading needs a run whose data is `ModularAdditionDataModule` (it takes p from there); other
runs give `None` from `modadd_modulus`.
"""
from __future__ import annotations

from collections.abc import Sequence

from channels.fourier import FourierReading, compare, read_network
from channels.verdict.rundata import RunData
from experiments.config import imp_parser, instantiate, load_run_config

DENSE, TICKET = "dense", "ticket"


def modadd_modulus(run: RunData) -> int | None:
    """p of a modular-addition run, None for other data."""
    data = run.config.get("data") or {}
    if not str(data.get("class_path", "")).endswith("ModularAdditionDataModule"):
        return None
    return int((data.get("init_args") or {}).get("p", 113))


def run_readings(run: RunData, branches: Sequence[str] = ("random_prune", "shuffle", "random_reinit")) -> dict[str, FourierReading]:
    """The Fourier readings of a run's dense network, its sparsest ticket and its controls there."""
    p = modadd_modulus(run)
    if p is None:
        return {}
    parser = imp_parser()
    net = instantiate(parser, load_run_config(run.dir, parser=parser)).model.net
    level = max(run.levels)
    jobs = {DENSE: run.dense, TICKET: run.levels[level]}
    jobs.update({b: run.branches[b][level] for b in branches if level in run.branches.get(b, {})})
    readings = {}
    for label, job in jobs.items():
        net.load_state_dict(job.weights)
        readings[label] = read_network(net, p, label)
    return readings


def fourier_rows(runs: Sequence[RunData]) -> list[dict]:
    """One row per run and network: `channels.fourier.compare` against the run's dense network."""
    rows = []
    for run in runs:
        readings = run_readings(run)
        if readings:
            rows += [{"run": run.name, **row} for row in compare(readings, DENSE)]
    return rows
