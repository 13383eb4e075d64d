"""Scores from a chosen step (`imp.score_step`), and run directories written before the schedule
keys existed.

- A level with `score_step: k` saves its weights after k optimiser steps (`snapshot.safetensors`,
  in its DONE manifest); the next level's mask is the magnitude pruning of exactly those weights.
  The reference for "the weights at step k" is independent: a run trained for k steps in all
  (the data order and in-step seeds are functions of the step alone).
- A level SIGKILLed after the snapshot step resumes to the uninterrupted result, snapshot included.
- A run directory whose config.yaml lacks `imp.schedule` and `imp.score_step` (as `ltc imp`
  wrote it before they existed) keeps its name and resumes: finished levels skipped, new ones added.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
import yaml

from experiments.cli import main
from experiments.config import experiment_id, imp_parser, parse
from lth import rundir
from lth.layout import RunLayout
from lth.masks import load_mask
from lth.pruning import magnitude_prune
from tests.helpers import write_config
from tests.test_kill_resume import results, run_ltc, write_wrapper

SCORED = {"imp": {"levels": 2, "score_step": 7, "branches": ["random_prune"], "branch_levels": [1]}}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return rundir.load_tensors(path)


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scored")
    cfg = write_config(tmp, **SCORED)
    run = tmp / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    return cfg, run


def test_scores_come_from_the_weights_at_the_chosen_step(scored_run, tmp_path):
    cfg, run = scored_run
    layout = RunLayout(run)
    short = tmp_path / "seven_steps"  # the same level trained for 7 steps in all: its final weights are step 7's
    assert main(["imp", "--config", str(cfg), "--run_dir", str(short), "--imp.levels", "0",
                 "--imp.score_step", "null", "--trainer.max_steps", "7"]) == 0
    snapshot = _weights(rundir.verify(layout.job(0).dir, "snapshot.safetensors"))
    at_seven = _weights(RunLayout(short).job(0).weights)
    assert snapshot.keys() == at_seven.keys()
    assert all(torch.equal(snapshot[k], at_seven[k]) for k in snapshot)
    final = _weights(layout.job(0).weights)
    assert not all(torch.equal(snapshot[k], final[k]) for k in final)  # step 7 is not the end (20)

    dense, level1 = load_mask(layout.job(0).mask), load_mask(layout.job(1).mask)
    assert all(torch.equal(level1[k], m) for k, m in magnitude_prune(snapshot, dense, 0.2).items())
    by_final = magnitude_prune(final, dense, 0.2)
    assert any(not torch.equal(level1[k], by_final[k]) for k in level1)
    level2 = load_mask(layout.job(2).mask)  # and level 2 from level 1's own snapshot
    scores1 = _weights(rundir.verify(layout.job(1).dir, "snapshot.safetensors"))
    assert all(torch.equal(level2[k], m) for k, m in magnitude_prune(scores1, level1, 0.2).items())
    # branches' weights prune nothing: they save no snapshot
    assert not (layout.job(1, "random_prune").dir / "snapshot.safetensors").exists()


def test_a_level_killed_after_its_snapshot_step_resumes_to_the_same_snapshot(scored_run, tmp_path):
    cfg, reference = scored_run
    wrapper, run = write_wrapper(tmp_path), tmp_path / "run"
    one_thread = {"OMP_NUM_THREADS": "1"}  # as the in-process reference (tests/conftest.py): the same sums
    killed = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(run)], fault="checkpoint@level_00:10",
                     extra_env=one_thread)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / "level_00" / "snapshot.safetensors").exists()  # still only in the checkpoint
    resumed = run_ltc(wrapper, ["--config", str(cfg), "--run_dir", str(run)], extra_env=one_thread)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert results(run) == results(reference)


def _strip_new_keys(config: Path) -> None:
    """config.yaml as `ltc imp` wrote it before imp.schedule and imp.score_step existed."""
    raw = yaml.safe_load(config.read_text())
    del raw["imp"]["schedule"], raw["imp"]["score_step"]
    config.write_text(yaml.safe_dump(raw))


def test_a_run_dir_from_before_the_schedule_keys_keeps_its_name_and_resumes(tmp_path):
    cfg = write_config(tmp_path, imp={"levels": 1})
    parser = imp_parser()
    name = experiment_id(parse(parser, ["--config", str(cfg)]))
    run = tmp_path / "runs" / name
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    layout = RunLayout(run)
    _strip_new_keys(layout.config)
    assert not {"schedule", "score_step"} & set(yaml.safe_load(layout.config.read_text())["imp"])
    assert experiment_id(parse(parser, ["--config", str(layout.config)])) == name
    before = {p: p.read_bytes() for p in (layout.job(0).weights, layout.job(1).weights, layout.job(1).mask)}

    assert main(["imp", "--config", str(cfg), "--run_dir", str(run), "--imp.levels", "2"]) == 0
    assert {p: p.read_bytes() for p in before} == before  # finished levels skipped, not retrained
    assert rundir.is_done(layout.job(2).dir)
    level2 = load_mask(layout.job(2).mask)
    expected = magnitude_prune(_weights(layout.job(1).weights), load_mask(layout.job(1).mask), 0.2)
    assert all(torch.equal(level2[k], m) for k, m in expected.items())  # the geometric default, as before
