"""The run directory's layout: every path and file name of a run, in one place.

    <run_dir>/                          one IMP experiment (docs/architecture.md, "The run directory")
      config.yaml                       the resolved config
      init.safetensors                  theta_0
      rewind.safetensors                theta_k (absent when k = 0)
      level_00/ ... level_LL/           the ticket line: one job directory per level
      branches/<branch>/level_LL/       a branch's jobs (controls, the instability copy)
      branches/<line>/                  a whole secondary IMP line (the rotated line) laid out like a run
      report/                           `ltc report` (`ReportFiles`): index.html, report.md, verdict.json, figures/
      spectra/<job>.npz                 `ltc spectra`: spectra of saved weights
      wandb/                            offline W&B runs
      logs/                             `ltc seeds`: one log per subprocess run (submitit/: cluster jobs)
      LOCK                              while `ltc imp` runs: its owner (`lth.lock`)

    <job_dir>/                          one training
      mask.safetensors  weights.safetensors  metrics.json  [spectra.npz]  DONE
      checkpoints/last.ckpt             while the job is unfinished

    <sweep_dir>/                        one `ltc jacobian` sweep (`SweepLayout`)
      sweep.json  config.yaml           what is measured (the re-run check), the resolved config
      results.json  results.npz         the merged results of every finished item
      lens.safetensors                  the token-averaged Jacobians (the Jacobian lens) and their spectra
      figures/[<a>__<b>/]<name>.png     figures, one directory per pair
      items/<a>__<b>/c<ctx>-t<t>.npz    one (context, target) item
      state/covariance.npz              the covariance at every site (computed before any item)
      state/shard-<I>-of-<N>.npz        one shard's finished work and running totals
      wandb/                            the offline W&B run

    <lm_dir>/                           one `ltc lm` training (`LMLayout`)
      lm.json  recipe.yaml              what the training depends on (the re-run check), the resolved recipe
      step-<NNNNNN>/                    a Hugging Face checkpoint (save_pretrained, tokenizer, checkpoint.json)
      train_state.pt                    model, optimiser, RNG and step of the latest save (resume)
      train_log.json                    the loss curve
      heldout.txt                       the validation and test text, never trained on

    <training_dir>/                     `ltc jacobian --checkpoints`: one model per sweep (`TrainingSweepLayout`)
      <label>/                          a sweep (`SweepLayout`) per checkpoint or twin: step-000030, twin-permuted
      twins/<name>/                     the randomised twins as Hugging Face model directories
      training.json  answer.md          the series across training and the answer with intervals
      figures/[<a>__<b>/]<name>.png     quantities against the training step
      wandb/                            one offline W&B run per checkpoint, one group

The writer (`lth.driver`) and every reader (`channels`, `experiments`) go through `RunLayout`
(`SweepLayout` for sweeps); no other module spells a name of these trees.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
INIT = "init.safetensors"
REWIND = "rewind.safetensors"
MASK = "mask.safetensors"
WEIGHTS = "weights.safetensors"
METRICS = "metrics.json"
SPECTRA = "spectra.npz"
DONE = "DONE"
LOCK = "LOCK"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BRANCHES = "branches"
REPORT = "report"
WANDB = "wandb"
MEASURED_SPECTRA = "spectra"
LOGS = "logs"
SUBMITIT = "submitit"
CALIBRATION = "calibration.json"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "index.html"
VERDICT = "verdict.json"
FIGURES = "figures"

SWEEP_IDENTITY = "sweep.json"
RESULTS_JSON = "results.json"
RESULTS_NPZ = "results.npz"
LENS = "lens.safetensors"
ITEMS = "items"
STATE = "state"
COVARIANCE_STATE = "covariance.npz"

LM_RECIPE = "recipe.yaml"
LM_IDENTITY = "lm.json"
LM_STATE = "train_state.pt"
LM_LOG = "train_log.json"
HELDOUT_TEXT = "heldout.txt"
CHECKPOINT_INFO = "checkpoint.json"
MODEL_CONFIG = "config.json"  # written by Hugging Face's save_pretrained
TWINS = "twins"
TRAINING_JSON = "training.json"
ANSWER = "answer.md"

_LEVEL = re.compile(r"^level_(\d+)$")
_STEP = re.compile(r"^step-(\d+)$")


class _Under:
    """A read-only attribute: the path `parts` below the instance's directory (`dir` or `root`)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, obj, owner=None) -> Path:
        if obj is None:
            return self
        base = obj.dir if hasattr(obj, "dir") else obj.root
        return Path(base).joinpath(*self.parts)


def log_file(directory: Path, label: str) -> Path:
    """The log of a launched run in a `logs/` folder: its label, every run of non-alphanumerics one '_'."""
    return Path(directory) / (re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") + ".log")


def level_name(level: int) -> str:
    """`level_03`: the directory (and job) name of a level."""
    return f"level_{level:02d}"


def parse_level(name: str) -> int | None:
    """The level of a directory named `level_LL`, None for any other name."""
    match = _LEVEL.match(name)
    return int(match.group(1)) if match else None


def job_name(level: int, branch: str | None = None) -> str:
    """`level_03` on the ticket line, `<branch>/level_03` on a branch: jobs' names in logs and tables."""
    return level_name(level) if branch is None else f"{branch}/{level_name(level)}"


@dataclass(frozen=True)
class JobFiles:
    """The files of one job directory."""

    dir: Path

    mask = _Under(MASK)
    weights = _Under(WEIGHTS)
    metrics = _Under(METRICS)
    spectra = _Under(SPECTRA)
    done = _Under(DONE)
    checkpoint = _Under(CHECKPOINTS, LAST_CHECKPOINT)

    def artifacts(self) -> list[str]:
        """The artifact names a finished job lists in its `DONE` manifest (spectra when measured)."""
        names = [MASK, WEIGHTS, METRICS]
        return names + ([SPECTRA] if self.spectra.exists() else [])


@dataclass(frozen=True)
class ReportFiles:
    """The files of a report directory (`<run_dir>/report/` or any `--out`)."""

    dir: Path

    markdown = _Under(REPORT_MARKDOWN)
    html = _Under(REPORT_HTML)
    verdict = _Under(VERDICT)
    figures = _Under(FIGURES)
    calibration = _Under(CALIBRATION)  # `ltc calibrate`'s confusion matrices (in its report directory).

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"


@dataclass(frozen=True)
class _Root:
    """A directory whose files are named below `root` (given as str or Path, kept as a Path)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))


class RunLayout(_Root):
    """The paths of one run directory (or of a secondary line inside it, laid out the same way)."""

    config = _Under(CONFIG)
    init = _Under(INIT)
    rewind = _Under(REWIND)
    branches = _Under(BRANCHES)

    @property
    def report(self) -> ReportFiles:
        return ReportFiles(self.root / REPORT)

    wandb = _Under(WANDB)
    logs = _Under(LOGS)
    submitit = _Under(LOGS, SUBMITIT)  # `ltc seeds --launcher`: submitit's jobs (pickled calls, logs) and recipes
    lock = _Under(LOCK)  # while `ltc imp` runs: its owner (`lth.lock`)

    def job(self, level: int, branch: str | None = None) -> JobFiles:
        """A level of the ticket line (branch None) or of a branch."""
        parent = self.root if branch is None else self.branches / branch
        return JobFiles(parent / level_name(level))

    def line(self, name: str) -> RunLayout:
        """A secondary IMP line (`branches/<name>/`), itself laid out like a run."""
        return RunLayout(self.branches / name)

    measured_spectra_dir = _Under(MEASURED_SPECTRA)

    def measured_spectra(self, level: int, branch: str | None = None) -> Path:
        """Where `ltc spectra` writes the spectra of a job's saved weights."""
        return self.measured_spectra_dir / f"{job_name(level, branch).replace('/', '__')}.npz"

    def level_dirs(self, branch: str | None = None) -> dict[int, Path]:
        """Every `level_LL` directory of the ticket line or a branch, finished or not, by level."""
        parent = self.root if branch is None else self.branches / branch
        if not parent.is_dir():
            return {}
        found = {parse_level(p.name): p for p in parent.iterdir() if p.is_dir()}
        return {level: found[level] for level in sorted(k for k in found if k is not None)}

    def branch_names(self) -> list[str]:
        """The branch directories present, sorted."""
        return sorted(p.name for p in self.branches.iterdir() if p.is_dir()) if self.branches.is_dir() else []


class SweepLayout(_Root):
    """The paths of one `ltc jacobian` output directory (pairs are named by their slug `a__b`)."""

    identity = _Under(SWEEP_IDENTITY)
    config = _Under(CONFIG)
    results_json = _Under(RESULTS_JSON)
    results_npz = _Under(RESULTS_NPZ)
    lens = _Under(LENS)
    figures = _Under(FIGURES)

    def figure(self, name: str, slug: str | None = None) -> Path:
        """`figures/<name>.png`, or `figures/<slug>/<name>.png` for a pair's figure."""
        return (self.figures if slug is None else self.figures / slug) / f"{name}.png"

    state = _Under(STATE)

    @property
    def covariance_state(self) -> Path:
        return self.state / COVARIANCE_STATE

    def shard_state(self, index: int, count: int) -> Path:
        return self.state / f"shard-{index}-of-{count}.npz"

    def shard_states(self) -> list[Path]:
        """Every shard's state file present, sorted."""
        return sorted(self.state.glob("shard-*-of-*.npz"))

    def item(self, slug: str, context: int, target: int) -> Path:
        return self.root / ITEMS / slug / f"c{context:05d}-t{target:05d}.npz"

    wandb = _Under(WANDB)


def step_name(step: int) -> str:
    """`step-000300`: the directory of the checkpoint saved after `step` optimiser steps."""
    return f"step-{step:06d}"


def parse_step(name: str) -> int | None:
    """The step of a directory named `step-NNNNNN`, None for any other name."""
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


class LMLayout(_Root):
    """The paths of one `ltc lm` directory: a causal LM's training and its checkpoints."""

    recipe = _Under(LM_RECIPE)
    identity = _Under(LM_IDENTITY)
    state = _Under(LM_STATE)
    log = _Under(LM_LOG)
    heldout = _Under(HELDOUT_TEXT)

    def checkpoint(self, step: int) -> Path:
        return self.root / step_name(step)

    def checkpoints(self) -> dict[int, Path]:
        """Every finished checkpoint (its `checkpoint.json` written last), by step."""
        if not self.root.is_dir():
            return {}
        found = {parse_step(p.name): p for p in self.root.iterdir() if (p / CHECKPOINT_INFO).is_file()}
        return {step: found[step] for step in sorted(k for k in found if k is not None)}

    @staticmethod
    def info(checkpoint: Path) -> Path:
        """A checkpoint's `checkpoint.json` (step, losses, time)."""
        return Path(checkpoint) / CHECKPOINT_INFO


class TrainingSweepLayout(_Root):
    """The paths of `ltc jacobian --checkpoints`: one sweep per checkpoint or twin, and the series."""

    training_json = _Under(TRAINING_JSON)
    answer = _Under(ANSWER)
    figures = _Under(FIGURES)
    wandb = _Under(WANDB)

    def sweep(self, label: str) -> SweepLayout:
        """The sweep of one model (`step-000300`, `twin-permuted`, ...)."""
        return SweepLayout(self.root / label)

    def twin(self, name: str) -> Path:
        """The model directory of a randomised twin."""
        return self.root / TWINS / name

    def figure(self, name: str, slug: str | None = None) -> Path:
        return (self.figures if slug is None else self.figures / slug) / f"{name}.png"


class CalibrationLayout(_Root):
    """`ltc calibrate`'s directory: one run directory per planted world instance and seed, and a report.

        <out>/population_<p>/<instance>/seed_<s>/   a run directory (RunLayout)
        <out>/logs/               the runs' logs
        <out>/readings/<instance>.json   each instance's scored reading, kept while its inputs stand
        <out>/report/             calibration.json, report.md, index.html, figures/
    """

    logs = _Under(LOGS)

    def reading(self, instance: str) -> Path:
        return self.root / "readings" / f"{instance}.json"

    def run(self, world: str, seed: int) -> Path:
        return self.root / world / f"seed_{seed}"

    @property
    def report(self) -> ReportFiles:
        return ReportFiles(self.root / REPORT)


DEFAULT_CALIBRATION = CalibrationLayout(Path("runs") / "calibration")
