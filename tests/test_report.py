"""`ltc seeds` on a tiny recipe, then `ltc report` (the `seeds_run` fixture of conftest.py): every test in the
verdict, the page, the W&B summary run."""
import json

import pytest
import yaml
from wandb_offline import read_runs

from channels.verdict.battery import TESTS
from experiments.cli import main
from experiments.commands.seeds import build_parser, plan
from experiments.config import parse
from experiments.report.build import build_report
from lth.rundir import is_done
from tests.helpers import write_config

KEYS = [t.key for t in TESTS]
VERDICTS = ("channels", "subcircuits", "inconclusive", "no ticket")


def test_seeds_runs_every_seed_and_data_order(seeds_run):
    _, root = seeds_run
    names = sorted(p.name for p in root.iterdir() if (p / "config.yaml").exists())
    assert names == ["seed_0", "seed_0_order_5", "seed_1", "seed_1_order_5"]
    for name in names:
        config = yaml.safe_load((root / name / "config.yaml").read_text())
        assert config["seed_everything"] == int(name[5]) and "seeds" not in config
        assert all(is_done(root / name / f"level_{lvl:02d}") for lvl in range(3))
        has_controls = (root / name / "branches" / "random_prune" / "level_02" / "DONE").exists()
        assert has_controls == ("order" not in name)
        assert config["data_order_seed"] == (5 if "order" in name else None)


def test_report_holds_every_test_and_figure(seeds_run):
    _, root = seeds_run
    report = root / "report"
    verdict = json.loads((report / "verdict.json").read_text())
    assert list(verdict["tests"]) == KEYS
    assert verdict["verdict"] in VERDICTS and verdict["provisional"] is True  # 2 seeds < 5
    ticket = verdict["tests"]["T0"]["sites"]["network"]
    assert set(ticket["units"]) == {"seed 0", "seed 1"} and ticket["ci"][0] <= ticket["effect"] <= ticket["ci"][1]
    assert verdict["tests"]["T0"]["reading"] in ("ticket", "no ticket", "inconclusive")
    assert verdict["tests"]["T1"]["reading"] == "not run"  # no basis branches in this recipe
    for key in ("T2", "T3", "T4"):  # ran on the rebuilt networks, at the input coordinates and the hidden layer
        assert set(verdict["tests"][key]["sites"]) <= {"input", "act.0"} and verdict["tests"][key]["details"], key
    assert set(verdict["tests"]["T2"]["sites"]) == {"input", "act.0"}
    assert len(verdict["tests"]["T5"]["details"]) == 4  # the 2 x 2 pairs of runs with different init seeds
    figures = {p.name for p in (report / "figures").glob("*.png")}
    assert {"accuracy.png", "spectra.png", "level_overlap.png", "T0.png", "T2.png"} <= figures
    page = (report / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures) and "src='http" not in page
    markdown = (report / "report.md").read_text()
    for key in KEYS:
        assert f"## {key} " in markdown and f"<td>{key}</td>" in page
    assert "Calibration on planted worlds" in markdown


def test_wandb_summary_run(seeds_run):
    _, root = seeds_run
    (summary,) = [r for r in read_runs(root / "seed_0" / "wandb") if r.job_type == "summary"]
    verdict = json.loads((root / "report" / "verdict.json").read_text())
    assert summary.group == verdict["experiment"] and summary.summary["verdict"] == verdict["verdict"]
    (row,) = summary.history
    assert row["verdict/table"]["_type"] == "table-file"
    assert {"figures/accuracy", "figures/T0"} <= {k for k in row if k.startswith("figures/")}
    assert all(summary.summary[f"{k}/reading"] == verdict["tests"][k]["reading"] for k in KEYS)


def test_report_shows_the_calibration_beside_the_verdict(seeds_run, tmp_path):
    _, root = seeds_run
    calibration = tmp_path / "calibration.json"
    found = {"wrong": 1, "total": 24, "rate": 1 / 24, "interval": [0.001, 0.211]}
    calibration.write_text(json.dumps({"instances": [], "errors": ["b"], "error_rate": found["rate"],
                                       "error_interval": found["interval"], "verdict_errors": found,
                                       "date": "2026-12-01", "seeds": 5, "population_seed": 7,
                                       "confusion": {"verdict": {"channels": {"channels": 1, "subcircuits": 1}}}}))
    result = build_report([root / "seed_0"], tmp_path / "out", wandb_mode="disabled", calibration=calibration)
    assert result["calibration"]["error_rate"] == found["rate"]
    assert "read 23 of 24 right: verdict error rate 4% [95% 0%, 21%] (wrong: b)" in \
        (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "not a directory"),
    (lambda d: d.mkdir(), "no config.yaml"),
    (lambda d: (d.mkdir(), (d / "config.yaml").write_text("seed_everything: 0\n")), "no finished levels"),
])
def test_bad_run_dir_is_one_line_exit_2(tmp_path, capsys, make, message):
    target = tmp_path / "run"
    make(target)
    assert main(["report", "--run_dir", str(target), "--wandb.mode", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_same_run_twice_is_refused(seeds_run, capsys):
    _, root = seeds_run
    run = root / "seed_0"
    assert main(["report", "--run_dir", str(run), str(run), "--wandb.mode", "disabled"]) == 2
    assert "same seed and data order" in capsys.readouterr().err


def test_seeds_plan_points_any_config_at_seeds(tmp_path):
    cfg = write_config(tmp_path, imp={"branches": ["random_prune"]})
    args = parse(build_parser(), ["--config", str(cfg), "--seeds", "[3, 4]", "--data_order_seeds", "[9]"])
    runs = plan(args)
    assert [(r.seed, r.data_order_seed) for r in runs] == [(3, None), (3, 9), (4, None), (4, 9)]
    assert [r.cfg.imp.branches for r in runs] == [["random_prune"], [], ["random_prune"], []]
    assert len({r.run_dir for r in runs}) == 4 and all("seeds" not in r.cfg for r in runs)
    assert main(["seeds", "--config", str(cfg), "--seeds", "[]"]) == 2
