"""The W&B run of one IMP job, made for comparing jobs: what a dashboard filters, plots and fetches.

- config: the nested recipe plus flat keys (`experiment`, `experiment_id`, `job`, `level`,
  `branch` (`ticket` on the ticket line), `density`, `seed`, `data_order_seed`, `run_dir`), so a
  W&B filter or a parallel-coordinates plot reads them directly;
- metrics: Lightning's (against `trainer/global_step`), and at the end one row of `final/<metric>`
  (test metrics and the last value of each spectrum metric) defined against `sparsity/remaining`
  (`define_metric`), so runs of one group line up by sparsity; `level`, `density` and the final
  spectra metrics land in the summary;
- artifacts: the job's mask and trained weights, and at a line's dense level theta_0 and theta_k,
  as references to the run-directory files (`file://`, checksummed, nothing copied), typed
  (`mask`, `weights`) and aliased by level (`level_03`), logged offline too; and, for W&B's
  lineage graph, what the job started from as used artifacts (`job_inputs`).
"""
from __future__ import annotations

import re
from pathlib import Path

from channels.keys import final_metrics
from channels.spectra import load_npz
from experiments.settings import WandbConfig
from lth.branches import BRANCHES, TICKET
from lth.jobs import Job
from lth.layout import RunLayout, level_name
from lth.masks import density

REMAINING = "sparsity/remaining"


def job_config(job: Job, experiment_id: str, seed: int, data_order_seed: int, run_dir: Path, recipe: dict) -> dict:
    """The run config: the recipe with the flat keys a dashboard filters and groups by."""
    return {**recipe, "experiment_id": experiment_id, "job": job.name, "level": job.level,
            "branch": job.branch or TICKET, "density": density(job.mask), "seed": seed,
            "data_order_seed": data_order_seed, "run_dir": str(Path(run_dir).resolve())}


def make_logger(settings: WandbConfig, mode: str, experiment_id: str, job: Job, config: dict, save_dir: Path):
    """A WandbLogger for one job: group = experiment id, job_type = level or branch:<name>."""
    from pytorch_lightning.loggers import WandbLogger

    return WandbLogger(project=settings.project, entity=settings.entity, group=experiment_id,
                       job_type="level" if job.branch is None else f"branch:{job.branch}",
                       name=f"{experiment_id}/{job.name}", save_dir=str(save_dir), mode=mode,
                       tags=list(settings.tags), config=config)


def final_spectra(path: Path) -> dict[str, float]:
    """The last measurement of every spectrum metric in a job's spectra file, by W&B name."""
    if not path.is_file():
        return {}
    return final_metrics(load_npz(path))


def record_finished(run, job: Job, metrics: dict, experiment_id: str, run_dir: Path) -> None:
    """The final row, the summary and the artifacts of a finished job (its files are written)."""
    spectra = final_spectra(job.files.spectra)
    final = {f"final/{name}": value for name, value in {**metrics["test"], **spectra}.items()}
    for name in final:
        run.define_metric(name, step_metric=REMAINING)
    run.log({REMAINING: metrics["density"], "level": job.level, **final})
    run.summary.update({"level": job.level, "density": metrics["density"], "branch": job.branch or TICKET, **spectra})
    log_artifacts(run, job, metrics["density"], experiment_id, RunLayout(run_dir))


def artifact_name(experiment_id: str, branch: str | None, what: str) -> str:
    """`<experiment id>[-<branch>]-<what>`, in the characters W&B allows in artifact names."""
    name = "-".join(part for part in (experiment_id, branch, what) if part)
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def reference_artifact(experiment_id: str, branch: str | None, what: str, path: Path, metadata: dict | None = None):
    """The W&B artifact of one run-directory file: a checksummed `file://` reference (nothing copied),
    named by `artifact_name`, typed `mask` or `weights`. Logging it (the job) and using it (a
    later job, the report) build the same artifact, so W&B joins them into one version."""
    import wandb

    artifact = wandb.Artifact(artifact_name(experiment_id, branch, what), type="mask" if what == "mask" else "weights",
                              metadata={**(metadata or {}), "file": str(path)})
    artifact.add_reference(Path(path).resolve().as_uri(), name=Path(path).name)
    return artifact


def use_artifact(run, artifact) -> None:
    """Declare `artifact` an input of `run` (an edge of W&B's lineage graph). wandb refuses
    `use_artifact` offline (0.31: TypeError), so an offline run records the use as `use_artifact`
    does online for an artifact not yet on the server: the artifact, logged with `use_after_commit`,
    which `wandb sync` commits (one version per content digest) and then marks used by the run."""
    if run.offline:
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(artifact)


def job_inputs(job: Job, run: RunLayout) -> dict[tuple[str | None, str], Path]:
    """What a job of `run` started from, as ((branch, what) -> file) of artifacts logged before it:
    a line's level L >= 1 prunes level L-1's trained weights and rewinds the survivors to theta_k
    (theta_0 when k = 0); a branch is planned from its level's ticket mask."""
    if job.branch is not None and not (job.branch in BRANCHES and BRANCHES[job.branch].is_line):
        return {(None, "mask"): run.job(job.level).mask}
    if job.level == 0:
        return {}
    layout = run if job.branch is None else run.line(job.branch)
    start = ("theta_k", layout.rewind) if layout.rewind.is_file() else ("theta_0", layout.init)
    return {(job.branch, "weights"): layout.job(job.level - 1).weights, (job.branch, start[0]): start[1]}


def log_artifacts(run, job: Job, remaining: float, experiment_id: str, layout: RunLayout) -> None:
    """Mask, trained weights (and theta_0 / theta_k) as reference artifacts aliased by level, and
    the job's inputs (`job_inputs`) as used artifacts."""
    metadata = {"experiment_id": experiment_id, "job": job.name, "level": job.level, "branch": job.branch or TICKET,
                "density": remaining}
    files = {"mask": job.files.mask, "weights": job.files.weights}
    files.update({name: path for name, path in job.run_files.items() if path.is_file()})
    for what, path in files.items():
        run.log_artifact(reference_artifact(experiment_id, job.branch, what, path, metadata),
                         aliases=[level_name(job.level)])
    for (branch, what), path in job_inputs(job, layout).items():
        if path.is_file():
            use_artifact(run, reference_artifact(experiment_id, branch, what, path))
