"""The report's W&B run: one `job_type=summary` run in the experiment's group, with the verdict
table, the stability table, the figures and the readings in its summary."""
from __future__ import annotations

import os
from pathlib import Path

from experiments.report.document import Figure
from experiments.report.verdict import STABILITY_HEADERS, VERDICT_HEADERS, stability_table, verdict_rows


def log_summary_run(result: dict, figures: list[Figure], save_dir: Path, project: str, mode: str) -> None:
    """One W&B run (job_type=summary, group = the experiment id) with the verdict table and figures."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, group=result["experiment"], job_type="summary", mode=mode,
                     name=f"{result['experiment']}/summary", dir=str(save_dir),
                     config={"runs": [r["dir"] for r in result["runs"]], "rule": result["rule"]})
    try:
        payload = {"verdict/table": wandb.Table(columns=VERDICT_HEADERS, data=verdict_rows(result))}
        if result["stability"]["rows"]:
            payload["stability/table"] = wandb.Table(columns=STABILITY_HEADERS, data=stability_table(result))
        payload.update({f"figures/{f.name}": wandb.Image(str(f.path), caption=f.caption) for f in figures})
        run.log(payload)
        run.summary["verdict"] = result["verdict"]
        run.summary["score"] = result["score"]
        for name, test in result["tests"].items():
            run.summary[f"{name}/reading"] = test["reading"]
            if test["effect"] is not None:
                run.summary[f"{name}/effect"] = test["effect"]
            if test["ci"][0] is not None:
                run.summary[f"{name}/ci_low"], run.summary[f"{name}/ci_high"] = test["ci"]
    finally:
        run.finish()
