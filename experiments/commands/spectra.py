"""`ltc spectra`: covariance and Jacobian spectra of a run's saved weights, without training.

    ltc spectra --run_dir runs/mnist1d_imp-1234abcd [--level 3] [--branch random_prune]
                [--sites '[act.0]'] [--jacobians '["act.0->act.1"]']

Measures every finished level (or the one asked for) on the run's probe set, with the
run's own `spectra` settings unless overridden, writes `<run_dir>/spectra/<job>.npz` (same keys
as a level's spectra.npz, one measurement at the level's final step) and prints the metrics.
"""
from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser
from rich.table import Table

from channels.spectra import SpectraHistory, measure, save_npz
from experiments.config import imp_parser, load_run_config, parse
from experiments.environment import LightningEnvironment, probe_inputs
from experiments.runtime import console, quiet_libraries
from lth import rundir
from lth.errors import LTCError
from lth.layout import WEIGHTS, JobFiles, RunLayout, job_name

SHOWN = ("effective_rank", "participation_ratio", "top1_share")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="ltc spectra", description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--run_dir", type=str, required=True, help="a run directory made by `ltc imp`")
    parser.add_argument("--level", type=int | None, default=None, help="only this level (default: all finished)")
    parser.add_argument("--branch", type=str | None, default=None, help="a branch (random_prune...) instead of the main line")
    parser.add_argument("--sites", type=list[str] | None, default=None, help="covariance sites (default: the run's)")
    parser.add_argument("--jacobians", type=list[str] | None, default=None, help="Jacobian pairs a->b (default: the run's)")
    return parser


def finished_jobs(run_dir: Path, level: int | None, branch: str | None) -> list[tuple[int, JobFiles]]:
    """(level, files) of every finished level of the chosen line, in level order."""
    layout = RunLayout(run_dir)
    found = [(lvl, layout.job(lvl, branch)) for lvl, d in layout.level_dirs(branch).items() if rundir.is_done(d)]
    if level is not None:
        found = [(lvl, d) for lvl, d in found if lvl == level]
    if not found:
        which = f"level {level}" if level is not None else "any level"
        where = "the ticket line" if branch is None else f"branch {branch}"
        raise LTCError(f"{run_dir} has no finished {which} on {where}: run `ltc imp` first or pick another "
                       "--level/--branch")
    return found


def main(argv: list[str]) -> int:
    quiet_libraries()
    args = parse(build_parser(), argv)
    run_dir = Path(args.run_dir)
    parser = imp_parser()
    cfg = load_run_config(run_dir, ["--wandb.mode", "disabled"], parser)
    jobs = finished_jobs(run_dir, args.level, args.branch)
    env = LightningEnvironment(parser, cfg, run_dir, "spectra")
    spectra = env.spectra
    spectra.sites = spectra.sites if args.sites is None else args.sites
    spectra.jacobians = spectra.jacobians if args.jacobians is None else args.jacobians
    spectra.validate()
    if not spectra.sites and not spectra.jacobians:
        raise LTCError("no sites to measure: pass --sites and/or --jacobians")
    probe = probe_inputs(env.datamodule, spectra.probe_size)
    jacobian_probe = probe[: spectra.jacobian_probe_size]
    table = Table(title=f"spectra of {run_dir}")
    table.add_column("job")
    table.add_column("spectrum")
    for name in SHOWN:
        table.add_column(name, justify="right")
    layout = RunLayout(run_dir)
    for level, files in jobs:
        job = job_name(level, args.branch)
        net = env.make_task().net
        net.load_state_dict(rundir.load_tensors(rundir.verify(files.dir, WEIGHTS)))
        result = measure(net, probe, jacobian_probe, spectra, step=0)
        history = SpectraHistory()
        history.add(0, result)
        save_npz(layout.measured_spectra(level, args.branch), history.arrays())
        for key, entry in result.items():
            if "eigenvalues" in entry:
                table.add_row(job, key, *(f"{entry['metrics'][m]:.3f}" for m in SHOWN))
    console.print(table)
    console.print(f"wrote {len(jobs)} file(s) under {layout.measured_spectra_dir}")
    return 0
