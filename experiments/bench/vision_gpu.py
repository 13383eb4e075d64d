"""Time per step and test accuracy of the vision recipes, each run for a bounded number of steps.

    python -m experiments.bench.vision_gpu OUT_DIR [--steps 300] [--levels 1] [--device cuda|cpu]
        [--configs NAME ...] [--data_root data] [--size full|tiny] [--timeout_s 600] [--budget_s S]
        [--threads N]

Each config (default: the six vision recipes in configs/) runs as `ltc imp` in its own process, so
a crash or an out-of-memory error costs one row; `--timeout_s` bounds each run and `--budget_s`
all of them (configs left when it is spent get a row saying so). Each runs `--steps` steps per
level, levels 0 (dense) .. `--levels` (pruned: masked training), no control branches, W&B off,
validation once at the end of each level, everything else as the config says (model, batch size,
optimiser, precision, data workers, spectra). The rewind step is capped at steps // 2. Runs go to
OUT_DIR/runs/<config> (replaced on every call: these are fresh measurements).

Data: the real MNIST / CIFAR-10 files under `--data_root` when they are there; otherwise random
pixels and random labels of the official sizes in torchvision's format, written once into
OUT_DIR/synthetic_data/<size>. On those the accuracy is chance (about 0.1); the time per step is
real. `--size tiny` always uses a few hundred synthetic images and shrinks the validation split and
spectra probes to fit (a rehearsal of the script; its times mean little).

Reported per config and level, from the level's metrics.json: ms/step = train_time_s / steps, the
whole fit, so it includes the sanity check, the one validation pass, the resumable checkpoints and
the spectra, which run at step 0, every `spectra.every_n_steps` and at the end (a larger share than
in a full-length run); `ms/step w/o spectra` subtracts the spectra callback's own time. Test
evaluation is not included. images/s = steps x batch size / train_time_s. Peak GPU memory:
torch.cuda.max_memory_allocated of the run's process. OUT_DIR/vision_gpu.json (rewritten after
every config, so a killed run keeps the finished rows) and vision_gpu.md hold the table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from experiments.runtime import thread_environment
from lth import rundir
from lth.errors import LTCError
from lth.layout import RunLayout

CONFIGS = ("mnist_lenet300_imp", "cifar10_conv2_imp", "cifar10_conv4_imp", "cifar10_conv6_imp",
           "cifar10_resnet20_imp", "cifar10_vgg16_imp")
DATASETS = {"experiments.data.vision.MNISTDataModule": "mnist",
            "experiments.data.vision.CIFAR10DataModule": "cifar10"}
TINY = {"mnist": {"n_train": 320, "n_test": 64}, "cifar10": {"per_batch": 64, "n_test": 64},
        "val_size": 64, "probe_size": 64, "jacobian_probe_size": 16}
GRACE_S = 10  # a run past its time limit gets this long to stop after Ctrl-C, then it is killed
MIN_LIMIT_S = 15  # a run given less time than this could not even start up
SYNTHETIC_NOTE = "synthetic data: accuracy is chance, time per step is real"
CHILD = "import sys; from experiments.bench.vision_gpu import child; sys.exit(child(sys.argv[1:]))"
REPO = Path(__file__).resolve().parents[2]  # the repository root: configs/, and the children's PYTHONPATH

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)  # logs get the whole table


@dataclass
class Plan:
    """One config's run: what it trains and the `ltc imp` arguments that bound it."""

    name: str
    model: str
    dataset: str
    batch_size: int
    rewind_step: int
    argv: list[str]


def config_path(name: str) -> Path:
    """configs/<name>.yaml of the repository, or `name` itself when it is a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = REPO / "configs" / f"{name}.yaml"
    if name not in CONFIGS or not path.is_file():
        raise LTCError(f"unknown vision config {name!r}: use any of {', '.join(CONFIGS)} or a YAML file")
    return path


def make_plan(name: str, steps: int, levels: int, device: str, size: str, run_dir: Path) -> Plan:
    """Read the config and build the bounded `ltc imp` command line (data root added later)."""
    from experiments.config import imp_parser, parse

    path = config_path(name)
    cfg = parse(imp_parser(), ["--config", str(path)])
    dataset = DATASETS.get(cfg.data.class_path)
    if dataset is None:
        raise LTCError(f"{path} uses {cfg.data.class_path}, not a vision datamodule this script knows "
                       f"({', '.join(DATASETS)})")
    rewind = min(cfg.imp.rewind_step, steps // 2)
    argv = ["--config", str(path), "--run_dir", str(run_dir),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.enable_progress_bar", "false", "--trainer.devices", "1",
            "--trainer.accelerator", "gpu" if device == "cuda" else "cpu",
            "--imp.levels", str(levels), "--imp.branches", "[]", "--imp.branch_levels", "[]",
            "--imp.rewind_step", str(rewind), "--wandb.mode", "disabled"]
    if size == "tiny":
        jacobian_probe = min(cfg.spectra.jacobian_probe_size, TINY["jacobian_probe_size"])
        argv += ["--data.init_args.val_size", str(TINY["val_size"]), "--data.init_args.num_workers", "0",
                 "--spectra.probe_size", str(TINY["probe_size"]), "--spectra.jacobian_probe_size", str(jacobian_probe)]
    return Plan(path.stem, cfg.model.init_args.net.class_path.rsplit(".", 1)[-1], dataset,
                cfg.data.init_args.batch_size, rewind, argv)


def data_root(dataset: str, wanted: Path, out: Path, size: str) -> tuple[Path, bool]:
    """(root, synthetic): `wanted` when it holds the real files (full size), else synthetic files
    of the asked size under out/synthetic_data/<size>, written on first use."""
    from experiments.data import synthetic_vision
    from experiments.data.vision import CIFAR10DataModule, MNISTDataModule

    module = {"mnist": MNISTDataModule, "cifar10": CIFAR10DataModule}[dataset]
    if size == "full":
        dm = module(root=str(wanted))
        if not dm.missing_files():
            return wanted, synthetic_vision.is_synthetic(dm.data_dir())
    root = out / "synthetic_data" / size
    dm = module(root=str(root))
    if dm.missing_files() or not synthetic_vision.is_synthetic(dm.data_dir()):
        shape = (TINY if size == "tiny" else synthetic_vision.FULL_SIZE)[dataset]
        console.print(f"writing synthetic {dataset} ({shape}) into {root}")
        writer = synthetic_vision.write_mnist if dataset == "mnist" else synthetic_vision.write_cifar10
        writer(root, **shape)
    return root, True


def child(argv: list[str]) -> int:
    """Inside the run's process: `ltc imp argv[1:]`, then its spectra seconds per level and peak GPU
    memory into the JSON file argv[0] (written even when the run fails)."""
    import torch

    from experiments.cli import main
    from experiments.environment import LightningEnvironment

    stats: dict = {"spectra_s": {}}
    report = LightningEnvironment.report

    def recording_report(self, job, metrics, skipped):  # the callback's time, before report clears it
        spectra = getattr(self, "_spectra", None)
        if spectra is not None and not skipped:
            stats["spectra_s"][job.name] = spectra.seconds
        report(self, job, metrics, skipped)

    LightningEnvironment.report = recording_report
    code = 1
    try:
        code = main(["imp", *argv[1:]])
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            stats["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
            stats["device_name"] = torch.cuda.get_device_name()
        Path(argv[0]).write_text(json.dumps(stats))
    return code


def launch(argv: list[str], log: Path, timeout_s: float, threads: int | None) -> tuple[int | None, float]:
    """Run argv with its output in `log`, its torch and BLAS pools at `threads` (None: their default);
    (exit code or None after the time limit, wall seconds, the grace to stop included). The child
    leads its own process group, so its data workers stop with it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if threads:
        env.update(thread_environment(threads))
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        except BaseException:  # Ctrl-C or `timeout --signal=INT`: do not leave the run behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        if code is None:  # interrupt first, so the run still writes its stats, then kill
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return code, time.perf_counter() - start


def level_rows(run_dir: Path, batch_size: int, spectra_s: dict) -> list[dict]:
    """Per finished level of the ticket line: its metrics figures and what follows from them."""
    rows = []
    layout = RunLayout(run_dir)
    for level, level_dir in layout.level_dirs().items():
        if not rundir.is_done(level_dir):
            continue
        m = json.loads(layout.job(level).metrics.read_text())
        steps, seconds = m["steps"], m["train_time_s"]
        spectra = spectra_s.get(m["job"])
        rows.append({
            "level": m["level"], "density": m["density"], "steps": steps, "train_time_s": seconds,
            "ms_per_step": 1000 * seconds / steps, "images_per_s": steps * batch_size / seconds,
            "spectra_s": spectra,
            "ms_per_step_without_spectra": None if spectra is None else 1000 * (seconds - spectra) / steps,
            "test_acc": m["test"].get("test/acc"),
        })
    return rows


def run_config(plan: Plan, root: Path, synthetic: bool, out: Path, device: str, limit_s: float,
               threads: int | None) -> dict:
    """Run one config in its own process within limit_s seconds (none: not run) and read back its row."""
    run_dir = out / "runs" / plan.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    stats_path = out / "runs" / f"{plan.name}.stats.json"
    stats_path.unlink(missing_ok=True)
    log = out / "runs" / f"{plan.name}.log"
    argv = [sys.executable, "-c", CHILD, str(stats_path), *plan.argv, "--data.init_args.root", str(root)]
    code, wall, error = None, 0.0, ""
    if limit_s < MIN_LIMIT_S:
        status = "not run: --budget_s spent"
    else:
        console.print(f"[bold]{plan.name}[/bold]: {plan.model} on {'synthetic' if synthetic else 'real'} "
                      f"{plan.dataset}, log {log}")
        code, wall = launch(argv, log, limit_s, threads)
        if code == 0:
            status = "ok"
        elif code is None:
            status = f"stopped at {limit_s:.0f} s"
        else:
            status = f"failed (exit {code})"
            lines = log.read_text(errors="replace").strip().splitlines()
            error = lines[-1][:300] if lines else "no output"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    peak = stats.get("peak_gpu_bytes")
    return {
        "config": plan.name, "model": plan.model, "dataset": plan.dataset,
        "data": "synthetic" if synthetic else "real", "data_root": str(root),
        "note": SYNTHETIC_NOTE if synthetic else "",
        "device": device, "device_name": cpu_name() if device == "cpu" else stats.get("device_name"),
        "batch_size": plan.batch_size, "rewind_step": plan.rewind_step,
        "status": status, "error": error, "wall_s": wall,
        "peak_gpu_mib": None if peak is None else peak / 2**20,
        "levels": level_rows(run_dir, plan.batch_size, stats.get("spectra_s", {})),
    }


def cpu_name() -> str:
    from experiments.bench.suite import machine

    info = machine()
    return f"{info['cpu']} ({info['cpu_count']} cores)"


def _fmt(values: list, spec: str) -> str:
    return " / ".join("-" if v is None else format(v, spec) for v in values) or "-"


COLUMNS = ("config", "model", "data", "ms/step", "ms/step w/o spectra", "images/s", "test acc",
           "peak GPU MiB", "status")


def table_rows(result: dict) -> list[list[str]]:
    """The table's cells; per-level figures joined as `level 0 / level 1 / ...`."""
    out = []
    for row in result["rows"]:
        lv = row["levels"]
        out.append([row["config"], row["model"], row["data"],
                    _fmt([x["ms_per_step"] for x in lv], ".2f"),
                    _fmt([x["ms_per_step_without_spectra"] for x in lv], ".2f"),
                    _fmt([x["images_per_s"] for x in lv], ".0f"), _fmt([x["test_acc"] for x in lv], ".4f"),
                    "-" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}", row["status"]])
    return out


def notes(result: dict) -> list[str]:
    lines = [
        (f"{result['steps']} steps per level, levels 0..{result['levels']} (0 dense, then pruned: masked "
         "training); per-level figures are `level 0 / level 1 / ...`."),
        ("ms/step = train_time_s / steps of each level's metrics.json: the whole fit, incl. the sanity check, "
         "one validation pass, resumable checkpoints and spectra (at step 0, every n steps and at the end); "
         "`w/o spectra` subtracts the spectra callback's time. Test evaluation excluded. Level 0 also pays "
         "its process's warm-up on the device (first kernels)."),
    ]
    if any(row["data"] == "synthetic" for row in result["rows"]):
        lines.append("Rows marked synthetic ran on random pixels with random labels: their accuracy is chance "
                     "(about 0.1), their time per step is real.")
    if result["size"] == "tiny":
        lines.append("Tiny size: a rehearsal on a few hundred images with shrunk validation and probes; "
                     "its times say little.")
    return lines


def device_title(result: dict) -> str:
    return f"{result['device_name'] or 'a CUDA device (no run read its name)'} ({result['device']})"


def markdown(result: dict) -> str:
    head = (f"# Vision recipes on {device_title(result)}, {result['size']} data\n\n"
            f"| {' | '.join(COLUMNS)} |\n|{'---|' * len(COLUMNS)}\n")
    body = "".join(f"| {' | '.join(cells)} |\n" for cells in table_rows(result))
    return head + body + "\n" + "".join(f"- {line}\n" for line in notes(result))


def print_table(result: dict) -> None:
    table = Table(title=f"Vision recipes on {device_title(result)}, {result['size']} data")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("config", "model", "data", "status") else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    console.print(table)
    for line in notes(result):
        console.print(f"- {line}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.vision_gpu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per level")
    parser.add_argument("--levels", type=int, default=1, help="pruned levels after the dense level 0")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="config names or YAML files")
    parser.add_argument("--data_root", type=Path, default=Path("data"), help="where the real data may be")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="full: real data if present, else synthetic of the official size; tiny: rehearsal")
    parser.add_argument("--timeout_s", type=float, default=600, help="time limit of each config's run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch / BLAS threads of each run (default: theirs); 1 on small busy CPUs")
    parser.add_argument("--budget_s", type=float, default=float("inf"),
                        help="time limit of all runs together; configs left when it is spent are listed, not run")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Check the input, then run every config, rewriting the JSON and markdown after each."""
    if min(args.steps - 2, args.levels, (args.threads or 1) - 1) < 0 or min(args.timeout_s, args.budget_s) <= 0:
        raise LTCError(f"need --steps >= 2, --levels >= 0, --threads >= 1, --timeout_s and --budget_s > 0 (got "
                       f"{args.steps}, {args.levels}, {args.threads}, {args.timeout_s}, {args.budget_s})")
    for name in args.configs:  # unknown names fail before anything runs
        config_path(name)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LTCError("--device cuda, but torch sees no CUDA device: run on a GPU machine or pass "
                           "--device cpu")
    deadline = time.monotonic() + args.budget_s
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    plans = [make_plan(name, args.steps, args.levels, args.device, args.size, out / "runs" / Path(name).stem)
             for name in args.configs]
    result = {"device": args.device, "device_name": None, "size": args.size, "steps": args.steps,
              "levels": args.levels, "threads": args.threads, "rows": []}
    roots = {}
    for plan in plans:
        if plan.dataset not in roots:
            roots[plan.dataset] = data_root(plan.dataset, args.data_root.resolve(), out, args.size)
        limit = min(args.timeout_s, deadline - time.monotonic())
        row = run_config(plan, *roots[plan.dataset], out, args.device, limit, args.threads)
        result["rows"].append(row)
        result["device_name"] = result["device_name"] or row["device_name"]  # None: the run failed early
        result["notes"] = notes(result)
        rundir.write_json(out / "vision_gpu.json", result)
        rundir.write_text(out / "vision_gpu.md", markdown(result))
        levels = "".join(f"; level {x['level']} {x['ms_per_step']:.2f} ms/step, acc {x['test_acc']:.4f}"
                         for x in row["levels"])
        error = f": {row['error']}" if row["error"] else ""
        console.print(f"  {row['config']}: {row['status']}{error}, {row['wall_s']:.1f} s{levels}")
    return result


def main(argv: list[str] | None = None) -> int:
    """0 when every config ran, 1 when one failed or timed out, 2 on bad input (one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except LTCError as exc:
        print(f"vision_gpu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vision_gpu: interrupted; {args.out / 'vision_gpu.json'} holds the configs that finished",
              file=sys.stderr)
        return 130
    print_table(result)
    console.print(f"wrote {args.out / 'vision_gpu.json'} and {args.out / 'vision_gpu.md'}")
    return 0 if all(row["status"] == "ok" for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
