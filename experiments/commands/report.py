"""`ltc report`: the ticket tests on one or more run directories, the verdict, and a report.

The verdict is shown beside the latest calibration (`ltc calibrate`): how often the battery is
right on planted worlds of known truth.

Writes `report/` (of the first run dir, or `--out`): `index.html` (self-contained, figures
inlined), `report.md`, `verdict.json` and `figures/*.png`; logs a W&B summary run
(job_type=summary) beside the level runs; prints the verdict table.
"""
from __future__ import annotations

from pathlib import Path

from experiments.config import base_parser, parse
from experiments.report.build import build_report
from experiments.report.document import render_console
from experiments.report.verdict import verdict_document
from experiments.runtime import console
from experiments.settings import WandbConfig
from lth.layout import ReportFiles, RunLayout


def build_parser():
    parser = base_parser("ltc report", "The ticket tests of one or more runs, their verdict and a report.")
    parser.add_argument("--run_dir", type=str, nargs="+", required=True,
                        help="run directories written by `ltc imp` (several seeds / data orders of one config)")
    parser.add_argument("--out", type=str | None, default=None,
                        help="report directory (default: <first run dir>/report)")
    parser.add_argument("--calibration", type=str | None, default=None,
                        help="calibration.json to show beside the verdict (default: runs/calibration/report/)")
    parser.add_argument("--wandb.mode", type=str | None, default=None,
                        help="offline (default), online or disabled: the W&B summary run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the tests (1: fastest on shared cores)")
    return parser


def print_verdict(result: dict) -> None:
    """The console sections of the report (the verdict table, the stability sentence)."""
    render_console(verdict_document(result, []), console)


def main(argv: list[str]) -> int:
    cfg = parse(build_parser(), argv)
    mode = WandbConfig(mode=cfg.wandb.mode).resolved_mode()
    out = Path(cfg.out) if cfg.out else None
    result = build_report([Path(d) for d in cfg.run_dir], out, mode, cfg.calibration, cfg.threads)
    print_verdict(result)
    files = ReportFiles(out) if out else RunLayout(Path(cfg.run_dir[0])).report
    console.print(f"report: {files.html}")
    return 0
