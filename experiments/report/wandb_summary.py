"""The report's W&B run: one `job_type=summary` run in the experiment's group, with the verdict
table, the stability table, the figures and the readings in its summary."""
from __future__ import annotations

import os
from pathlib import Path

from experiments.report.document import Figure
from experiments.report.verdict import STABILITY_HEADERS, TEST_HEADERS, stability_table, test_rows


def log_summary_run(result: dict, figures: list[Figure], save_dir: Path, project: str, mode: str) -> None:
    """One W&B run (job_type=summary, group = the experiment id) with the verdict table and figures."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=project, group=result["experiment"], job_type="summary", mode=mode,
                     name=f"{result['experiment']}/summary", dir=str(save_dir),
                     config={"runs": [r["dir"] for r in result["runs"]], "rule": result["rule"]})
    if result.get("calibration"):
        run.summary["calibration/error_rate"] = result["calibration"]["error_rate"]
    try:
        payload = {"verdict/table": wandb.Table(columns=TEST_HEADERS, data=test_rows(result))}
        if result["stability"]["rows"]:
            payload["stability/table"] = wandb.Table(columns=STABILITY_HEADERS, data=stability_table(result))
        payload.update({f"figures/{f.name}": wandb.Image(str(f.path), caption=f.caption) for f in figures})
        run.log(payload)
        run.summary["verdict"] = result["verdict"]
        run.summary["verdict_why"] = result["why"]
        for name, test in result["tests"].items():
            run.summary[f"{name}/reading"] = test["reading"]
            for site, found in test["sites"].items():
                if found["effect"] is not None:
                    run.summary[f"{name}/{site}/effect"] = found["effect"]
                if found["ci"][0] is not None:
                    run.summary[f"{name}/{site}/ci_low"], run.summary[f"{name}/{site}/ci_high"] = found["ci"]
    finally:
        run.finish()
