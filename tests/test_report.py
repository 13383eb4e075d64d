"""`ltc seeds` on a tiny recipe, then `ltc report`: every test in the verdict, the page, the W&B summary run."""
import json

import pytest
import yaml

from experiments.cli import main
from experiments.config import parse
from experiments.commands.report import build_report
from experiments.commands.seeds import build_parser, plan
from wandb_offline import read_runs
from lth.rundir import is_done
from tests.helpers import write_config
from tests.test_tickets import write_fake_run

TESTS = ["T1", "T2", "T3", "T4", "T5", "T6"]


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seeds")
    cfg = write_config(tmp, imp={"branches": ["random_prune", "shuffle"], "branch_levels": [2]},
                       spectra={"sites": ["act.0"], "jacobians": [], "every_n_steps": 10, "probe_size": 64, "top_k": 4},
                       wandb={"mode": "offline"})
    root = tmp / "runs"
    assert main(["seeds", "--config", str(cfg), "--seeds", "[0, 1]", "--data_order_seeds", "[5]",
                 "--run_dir", str(root)]) == 0
    return cfg, root


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
    assert list(verdict["tests"]) == TESTS
    assert verdict["verdict"] in ("channels", "subcircuits", "inconclusive")
    for name in ("T1", "T2", "T3", "T4", "T5"):
        test = verdict["tests"][name]
        assert test["reading"] in ("channels", "subcircuits", "inconclusive"), (name, test["note"])
        assert set(test["units"]) == {"seed 0", "seed 1"} and test["ci"][0] <= test["effect"] <= test["ci"][1]
    assert verdict["tests"]["T6"]["reading"] == "not run"
    pairs = verdict["tests"]["T3"]["details"]["pairs"]
    assert {p["kind"] for p in pairs} == {"same init", "different init"}  # cross-init: units matched via rebuilt nets
    assert len(pairs) == 6 and all([s["level"] for s in p["trajectory"]] == [0, 1, 2] for p in pairs)
    figures = {p.name for p in (report / "figures").glob("*.png")}
    names = ("accuracy", "spectra", "signature", "level_overlap", "pairs", "localisation")
    assert {f"{n}.png" for n in names} <= figures
    page = (report / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures) and "src='http" not in page
    markdown = (report / "report.md").read_text()
    for name in TESTS:
        assert f"## {name} " in markdown and f"<td>{name}</td>" in page


def test_wandb_summary_run(seeds_run):
    _, root = seeds_run
    (summary,) = [r for r in read_runs(root / "seed_0" / "wandb") if r.job_type == "summary"]
    verdict = json.loads((root / "report" / "verdict.json").read_text())
    assert summary.group == verdict["experiment"] and summary.summary["verdict"] == verdict["verdict"]
    (row,) = summary.history
    assert row["verdict/table"]["_type"] == "table-file"
    assert {k for k in row if k.startswith("figures/")} == {f"figures/{n}" for n in
                                                            ("accuracy", "spectra", "signature", "level_overlap",
                                                             "pairs", "localisation")}
    assert all(summary.summary[f"{t}/reading"] == verdict["tests"][t]["reading"] for t in TESTS)


def test_report_of_synthetic_runs_without_wandb(tmp_path):
    runs = [write_fake_run(tmp_path / f"s{s}", "subcircuits", s, 0) for s in (0, 1, 2)]
    verdict = build_report(runs, tmp_path / "out", wandb_mode="disabled", n_boot=200)
    assert verdict["verdict"] == "subcircuits"
    assert (tmp_path / "out" / "index.html").is_file() and not (runs[0] / "wandb").exists()
    assert main(["report", "--run_dir", str(runs[0]), "--wandb.mode", "disabled", "--n_boot", "100"]) == 0
    assert json.loads((runs[0] / "report" / "verdict.json").read_text())["provisional"] is True


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


def test_same_run_twice_is_refused(tmp_path, capsys):
    run = write_fake_run(tmp_path / "s0", "noise", 0, 0)
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
