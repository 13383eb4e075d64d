"""The Fourier reading of modular-addition runs (`channels.fourier`) in the report: for each run,
the dense network, the ticket at the sparsest level and the controls beside it, rebuilt from the
run's config.yaml; per network over seeds, the accuracy, the share of the embedding's power on the
dense network's key frequencies (mean and 95% t-interval), how many of those keys the network's
own embedding keeps, and whether its MLP neurons cluster by frequency.

The reading needs a run whose data is `ModularAdditionDataModule` (it takes p from there); other
runs give `None` from `modadd_modulus`, and the report has no Fourier section.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from channels.fourier import FourierReading, compare, figure, read_network
from channels.plotting import save_figure
from channels.verdict.rundata import RunData
from channels.verdict.stats import t_interval
from experiments.config import imp_parser, instantiate, load_run_config
from experiments.report.document import Figure, Section, Table
from lth.layout import ReportFiles

DENSE, TICKET = "dense", "ticket"
CONTROLS = ("random_prune", "shuffle", "random_reinit")
FIGURE = "fourier"
CAPTION = ("Fourier reading of the first run: the share of the number tokens' embedding power at each "
           "frequency (red: its key frequencies) and the purity of each active MLP neuron (dotted: pure).")


def modadd_modulus(run: RunData) -> int | None:
    """p of a modular-addition run, None for other data."""
    data = run.config.get("data") or {}
    if not str(data.get("class_path", "")).endswith("ModularAdditionDataModule"):
        return None
    return int((data.get("init_args") or {}).get("p", 113))


def run_readings(run: RunData, branches: Sequence[str] = CONTROLS) -> dict[str, FourierReading]:
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


def _plain(value):
    """JSON-ready: numpy scalars to Python numbers, dict keys to str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Per network, over runs: accuracy, power on the dense keys (mean, 95% t-interval), each run's
    `kept/total` dense keys, and in how many runs the neurons cluster by frequency."""
    out = []
    for network in dict.fromkeys(r["network"] for r in rows):
        mine = [r for r in rows if r["network"] == network]
        power = [r[f"power_on_{DENSE}_keys"] for r in mine]
        out.append({"network": network, "runs": len(mine),
                    "accuracy": float(np.mean([r["accuracy"] for r in mine])),
                    "power_on_dense_keys": float(np.mean(power)),
                    "interval": [float(np.clip(bound, 0, 1)) for bound in t_interval(power)],  # a share
                    "keeps_dense_keys": [r[f"keeps_{DENSE}_keys"] for r in mine],
                    "clustered": sum(bool(r["clustered"]) for r in mine),
                    "neuron_pure_share": float(np.nanmean([r["neuron_pure_share"] for r in mine]))})
    return out


def fourier_reading(runs: Sequence[RunData], files: ReportFiles) -> tuple[dict | None, Figure | None]:
    """The report's Fourier reading (None, None for runs that are not modular addition): one row
    per run and network (`channels.fourier.compare` against the run's dense network), the summary
    over runs, and the first run's figure."""
    rows, first = [], None
    for run in sorted(runs, key=lambda r: (r.seed, r.data_order_seed)):
        readings = run_readings(run)
        if readings:
            first = first or readings
            rows += [{"run": run.name, "seed": run.seed, **_plain(row)} for row in compare(readings, DENSE)]
    if first is None:
        return None, None
    path = save_figure(figure(first), files.figure(FIGURE))
    found = {"p": first[DENSE].p, "rows": rows, "summary": summarise(rows), "figure": FIGURE}
    return found, Figure(FIGURE, path, CAPTION)


SUMMARY_HEADERS = ["network", "runs", "accuracy (all pairs)", "power on dense keys [95% CI]", "dense keys kept",
                   "neurons clustered", "pure neurons"]
RUN_HEADERS = ["run", "network", "accuracy", "key frequencies", "channel frequencies", "pure neurons"]


def _interval(lo: float, hi: float) -> str:
    return "" if np.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]"


def fourier_section(found: dict, figures: Sequence[Figure]) -> Section:
    """The report section of `fourier_reading`: the key frequencies of each dense network, whether
    the ticket and the controls keep them, and the figure."""
    dense = [r for r in found["rows"] if r["network"] == DENSE]
    keys = "; ".join(f"seed {r['seed']}: {', '.join(map(str, r['key_frequencies'])) or 'none'}" for r in dense)
    summary = [[s["network"], str(s["runs"]), f"{s['accuracy']:.3f}",
                f"{s['power_on_dense_keys']:.2f}{_interval(*s['interval'])}", ", ".join(s["keeps_dense_keys"]),
                f"{s['clustered']} of {s['runs']}", f"{s['neuron_pure_share']:.2f}"] for s in found["summary"]]
    per_run = [[r["run"], r["network"], f"{r['accuracy']:.3f}", ", ".join(map(str, r["key_frequencies"])),
                ", ".join(map(str, r["channel_frequencies"])), f"{r['neuron_pure_share']:.2f}"] for r in found["rows"]]
    return Section(f"Fourier reading (a + b mod {found['p']})", [
        ("The known answer on modular addition (Nanda et al. 2023): a network that has learned it embeds the "
         "numbers as a few waves, its key frequencies (power above 4x the median frequency's). A key frequency is "
         "a channel (dense in the token basis); MLP neurons tuned to one frequency are units of it."),
        f"Key frequencies of the dense networks: {keys}."],
        tables=[Table("per network over runs (the ticket and controls at the sparsest level; power: the share of "
                      "the embedding's power on the run's dense keys; kept: of those keys, how many are the "
                      "network's own; clustered: runs whose active neurons are mostly pure and on key frequencies)",
                      SUMMARY_HEADERS,
                      summary), Table("per run", RUN_HEADERS, per_run, console_columns=[])],
        figures=[f for f in figures if f.name == found["figure"]], console=True)
