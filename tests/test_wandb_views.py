"""What W&B gets from the default recipe (shrunk to seconds: fewer levels, steps and units), read
back from the offline run files:
each job's flat config, metric definitions, final summary and reference artifacts; the report's
summary run with the long spectra table, the metrics table, the custom chart and its spec; the
spec compiling to a chart over that table; `ltc workspace` built on the logged names, and refused
offline in one line."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from wandb_offline import read_runs

from channels.keys import stored_keys
from channels.verdict.rundata import load_run
from experiments.cli import main
from experiments.report.spectra_table import CHART_FIELDS, SPEC, SPECTRA_COLUMNS
from experiments.report.workspace import build_workspace
from lth.masks import density, load_mask

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "configs" / "mnist1d_imp.yaml")
WIDTH = 32  # the recipe's 200 units make the report's unit searches slow; every name stays the recipe's
SHRUNK = ["--imp.levels", "1", "--imp.branches", "[random_prune]", "--trainer.max_steps", "20",
          "--trainer.val_check_interval", "10", "--imp.rewind_step", "5", "--spectra.every_n_steps", "10",
          "--model.init_args.net.init_args.hidden", f"[{WIDTH}, {WIDTH}]", "--spectra.probe_size", "100",
          "--trainer.enable_progress_bar", "false", "--wandb.mode", "offline"]
JOBS = ("level_00", "level_01", "random_prune/level_01")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("default") / "run"
    assert main(["imp", "--config", DEFAULT, "--run_dir", str(run), *SHRUNK]) == 0
    assert main(["report", "--run_dir", str(run)]) == 0
    runs = {r.name.split("/", 1)[1]: r for r in read_runs(run / "wandb")}
    assert sorted(runs) == sorted([*JOBS, "summary"])
    return run, runs


def test_each_job_has_flat_config_final_summary_and_artifacts(default_run):
    run_dir, runs = default_run
    for job in JOBS:
        wb = runs[job]
        level, branch = int(job[-2:]), job.split("/")[0] if "/" in job else "ticket"
        job_dir = run_dir / ("" if branch == "ticket" else f"branches/{branch}") / f"level_{level:02d}"
        remaining = density(load_mask(job_dir / "mask.safetensors"))
        config = wb.config
        assert (config["level"], config["branch"], config["seed"], config["experiment"]) == \
               (level, branch, 0, "mnist1d_imp")
        assert config["density"] == pytest.approx(remaining) and config["experiment_id"] == wb.group
        assert wb.summary["level"] == level and wb.summary["sparsity/remaining"] == pytest.approx(remaining)
        assert 0 <= wb.summary["final/test/acc"] <= 1
        for key in ("act.0/cov", "act.1/cov", "act.0->act.1/jac"):
            assert wb.summary[f"spectra/{key}/effective_rank"] == wb.summary[f"final/spectra/{key}/effective_rank"] > 0
            assert wb.metrics[f"final/spectra/{key}/effective_rank"] == "sparsity/remaining"
        assert wb.metrics["final/test/acc"] == "sparsity/remaining"
        expected = {"mask": job_dir / "mask.safetensors", "weights": job_dir / "weights.safetensors"}
        if job == "level_00":
            expected.update(theta_0=run_dir / "init.safetensors", theta_k=run_dir / "rewind.safetensors")
        prefix = wb.group + ("" if branch == "ticket" else f"-{branch}")
        assert {a["name"]: a["type"] for a in wb.artifacts if a["type"] in ("mask", "weights") and not a["used"]} == \
               {f"{prefix}-{what}": "mask" if what == "mask" else "weights" for what in expected}
        for artifact in wb.artifacts:
            if artifact["type"] not in ("mask", "weights") or artifact["used"]:  # inputs: the lineage test
                continue
            what = artifact["name"][len(prefix) + 1:]
            assert artifact["refs"] == {expected[what].name: expected[what].resolve().as_uri()}
            assert f"level_{level:02d}" in artifact["aliases"] and artifact["metadata"]["level"] == level


def test_summary_run_holds_the_long_table_metrics_table_chart_and_spec(default_run):
    run_dir, runs = default_run
    summary = runs["summary"]
    columns, rows = summary.table(summary.summary["spectra/long"])
    assert columns == SPECTRA_COLUMNS
    kept = summary.summary["spectra/ranks_kept"]
    assert kept == WIDTH and len(rows) == len(JOBS) * 3 * kept  # 3 spectra of WIDTH eigenvalues, all fit
    record = {c: i for i, c in enumerate(columns)}
    run = load_run(run_dir)
    for row in rows[:: kept * 3 // 2]:
        job = run.line(None if row[record["branch"]] == "ticket" else row[record["branch"]])[row[record["level"]]]
        where, kind = row[record["site"]], row[record["kind"]]
        values = job.spectra[f"{where}/{kind}/eigenvalues"][-1]
        assert row[record["eigenvalue"]] == pytest.approx(values[row[record["rank"]] - 1])
        assert row[record["normalised"]] == pytest.approx(values[row[record["rank"]] - 1] / values.sum())
        assert row[record["density"]] == pytest.approx(job.density) and row[record["seed"]] == 0
    metric_columns, metric_rows = summary.table(summary.summary["metrics/table"])
    assert len(metric_rows) == len(JOBS) and "test/acc" in metric_columns
    assert "spectra/act.0->act.1/jac/effective_rank" in metric_columns
    chart = summary.config["_wandb"]["visualize"]["spectra/by_level"]["panel_config"]
    assert chart["panelDefId"] == "spectra-by-level" and chart["fieldSettings"] == CHART_FIELDS
    assert summary.summary["spectra/by_level_table"]["path"] == summary.summary["spectra/long"]["path"]
    assert "spectra_by_level.vl.json" in summary.files
    saved = summary.file.parent / "files" / "spectra_by_level.vl.json"
    assert not saved.is_symlink() and saved.read_text() == SPEC.read_text()


def test_chart_spec_compiles_to_lines_over_the_long_table(default_run):
    vlc = pytest.importorskip("vl_convert")
    _, runs = default_run
    summary = runs["summary"]
    columns, rows = summary.table(summary.summary["spectra/long"])
    text = SPEC.read_text()
    placeholders = set(re.findall(r"\$\{field:(\w+)\}", text))
    assert placeholders == set(CHART_FIELDS) and set(CHART_FIELDS.values()) <= set(columns)
    text = re.sub(r"\$\{field:(\w+)\}", lambda m: CHART_FIELDS[m.group(1)], text).replace("${string:title}", "t")
    spec = json.loads(text)
    spec["data"] = {"values": [dict(zip(columns, row)) for row in rows]}
    svg = vlc.vegalite_to_svg(spec)
    assert svg.count("<path") >= len(JOBS) * 3  # a line per job and spectrum
    assert all(name in svg for name in ("act.0 cov", "act.1 cov", "act.0-&gt;act.1 jac"))


def test_workspace_is_built_on_the_logged_names(default_run):
    run_dir, runs = default_run
    level = runs["level_01"]
    keys = stored_keys(load_run(run_dir).dense.spectra)
    workspace = build_workspace("me", "lottery-channels", [level.group], keys, "view")
    across, during = workspace.sections
    scatter = [p for p in across.panels if type(p).__name__ == "ScatterPlot"]
    assert {p.y.name for p in scatter} == {"test/acc", *(f"spectra/{k}/effective_rank" for k in keys)}
    assert all(p.y.name in level.summary and p.x.name in level.summary for p in scatter)
    (line,) = [p for p in across.panels if type(p).__name__ == "LinePlot"]
    assert all(level.metrics[y] == line.x for y in line.y)
    (chart,) = [p for p in across.panels if type(p).__name__ == "CustomChart"]
    assert chart.chart_name == "me/spectra-by-level" and chart.chart_fields == CHART_FIELDS
    assert chart.query["summaryTable"]["tableKey"] in runs["summary"].summary
    assert all(p.y[0] in level.summary for p in during.panels)
    runs_filter = str(workspace.runset_settings.filters)  # wandb-workspaces keeps filters as an expression
    assert "Group" in runs_filter and level.group in runs_filter, runs_filter


def test_workspace_is_refused_offline_in_one_line(default_run, capsys):
    run_dir, _ = default_run
    capsys.readouterr()
    assert main(["workspace", "--run_dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "W&B is offline here" in err, err


def _artifacts(run, used: bool) -> dict[tuple[str, str], str]:
    """(artifact name, referenced file) -> content digest, of the artifacts a run logged or used."""
    return {(a["name"], ref): a["digest"] for a in run.artifacts if a["used"] == used
            and a["type"] in ("mask", "weights") for ref in a["refs"].values()}


def test_lineage_report_uses_what_the_jobs_logged_and_jobs_use_what_they_started_from(default_run):
    run_dir, runs = default_run
    logged = {}
    for job in JOBS:
        logged.update(_artifacts(runs[job], used=False))
    summary = runs["summary"]
    assert not _artifacts(summary, used=False)  # the report produces no masks or weights
    used = _artifacts(summary, used=True)
    # every mask and weights file of every job, and theta_0 / theta_k: the same names, files and
    # content digests as the jobs logged, so W&B joins each use to the version a job produced
    assert used == logged and summary.summary["artifacts/used"] == len(logged) == 3 * 2 + 2
    group = runs["level_00"].group

    def uri(*parts: str) -> str:
        return run_dir.joinpath(*parts).resolve().as_uri()

    assert set(_artifacts(runs["level_00"], used=True)) == set()  # dense: starts from theta_0 it logs itself
    assert set(_artifacts(runs["level_01"], used=True)) == {
        (f"{group}-weights", uri("level_00", "weights.safetensors")),  # pruned by level 0's magnitudes
        (f"{group}-theta_k", uri("rewind.safetensors"))}               # rewound to theta_k
    assert set(_artifacts(runs["random_prune/level_01"], used=True)) == {
        (f"{group}-mask", uri("level_01", "mask.safetensors"))}        # a control of the level's ticket
    for run in runs.values():
        for (name, ref), digest in _artifacts(run, used=True).items():
            assert logged[(name, ref)] == digest, (name, ref)
