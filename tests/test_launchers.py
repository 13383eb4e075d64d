"""`ltc seeds --launcher`: each run as a submitit job (submitit's local executor stands in for
SLURM), collected with runs done / running / left; a failed job is one line naming the run."""
from __future__ import annotations

import yaml

from experiments.cli import main
from experiments.launchers import LaunchTally
from lth.rundir import is_done
from tests.helpers import write_config


def test_seeds_as_submitit_jobs_finish_and_a_failed_one_is_named(tmp_path, capsys):
    cfg = write_config(tmp_path, imp={"levels": 1})
    root = tmp_path / "runs"
    foreign = root / "seed_1"  # holds another config's run: its job must fail, the other finish
    foreign.mkdir(parents=True)
    (foreign / "config.yaml").write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "seed_everything": 9}))
    capsys.readouterr()
    code = main(["seeds", "--config", str(cfg), "--seeds", "[0, 1]", "--run_dir", str(root), "--report", "false",
                 "--launcher", "local", "--executor", "{timeout_min: 10}"])
    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "1 of 2 runs failed; seed 1:" in err and "another config" in err, err
    assert all(is_done(root / "seed_0" / f"level_{level:02d}") for level in (0, 1))
    assert "submitted seed 0" in out and "(2 done, 0 running, 0 left of 2)" in out
    assert list((root / "logs" / "submitit").glob("*.yaml"))  # the jobs' recipes, kept for the cluster


def test_unknown_executor_is_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["seeds", "--config", str(cfg), "--seeds", "[0]", "--run_dir", str(tmp_path / "r"),
                 "--launcher", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "submitit executor 'nowhere'" in err, err


def test_tally_counts_and_eta():
    tally = LaunchTally(4, "ltc seeds")
    tally.started()
    tally.started()
    assert tally.line("x").endswith("(0 done, 2 running, 2 left of 4)")
    tally.finished(60.0)
    assert "(1 done, 1 running, 2 left of 4; ETA 3 min 00 s)" in tally.line("x")  # 3 runs x 60 s, 1 at a time


def test_eta_counts_the_workers_not_the_runs_running_at_the_moment_it_prints():
    """Between one run's end and the next one's start a pool of 2 has 1 running: the ETA must not double."""
    tally = LaunchTally(4, "ltc calibrate", parallel=2)
    tally.started()
    tally.started()
    tally.finished(60.0)
    assert "; ETA 1 min 30 s)" in tally.line("x")  # 3 runs x 60 s, 2 at a time
    tally.started()
    assert "; ETA 1 min 30 s)" in tally.line("x")
    for _ in range(2):
        tally.finished(60.0)
    assert "; ETA 1 min 00 s)" in tally.line("x")  # the last run, alone
