"""Progress a person can read: which job of how many, steps with the time left, the metrics and the
experiment's ETA; plain lines when the output is not a terminal."""
from __future__ import annotations

import re

from experiments.cli import main
from experiments.environment.progress import ExperimentClock, duration
from lth.jobs import Position
from tests.helpers import write_config


def test_piped_output_is_a_few_plain_lines_per_job(tmp_path, capsys):
    cfg = write_config(tmp_path, imp={"levels": 1, "branches": ["random_prune"], "branch_levels": [-1]},
                       trainer={"max_steps": 20, "val_check_interval": 10, "enable_progress_bar": True})
    capsys.readouterr()
    assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "Epoch" not in out
    for label in ("level 0/1 (job 1/3)", "level 1/1 (job 2/3)", "branch random_prune, level 1/1 (job 3/3)"):
        lines = [line for line in out.splitlines() if line.strip().startswith(label)]
        assert [re.search(r"step (\d+)/20", line).group(1) for line in lines] == ["5", "10", "15"], (label, out)
        assert all("left;" in line and "train/loss" in line and "experiment ETA" in line for line in lines)
    assert re.search(r"level_00 .* 1/3 jobs, experiment ETA \d+ s", out), out


def test_clock_and_durations():
    assert [duration(s) for s in (42, 185, 3720)] == ["42 s", "3 min 05 s", "1 h 02 min"]
    clock = ExperimentClock()
    assert clock.eta(Position(1, 4, 3)) == "experiment ETA after the first job"
    clock.job_finished(skipped=True, train_time_s=30.0)  # a job found finished: its recorded time
    assert clock.left(Position(2, 4, 3), current_left=5.0) == 5.0 + 2 * 30.0
    assert clock.left(Position(4, 4, 3), current_left=5.0) == 5.0  # the last job: only its own rest
