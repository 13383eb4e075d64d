"""`channels.open_runs`, the notebook API, on the tiny seeds experiment (conftest `seeds_run`):
every table and array checked against the run directories' files read independently (json,
numpy, safetensors), and the ways a folder of runs is found; then the example notebook executed
top to bottom on those runs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
from safetensors.numpy import load_file

from channels import Runs, open_runs
from lth.errors import LTCError
from lth.masks import density

RUNS = ["seed_0", "seed_0_order_5", "seed_1", "seed_1_order_5"]
NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explore_runs.ipynb"


@pytest.fixture(scope="module")
def runs(seeds_run) -> Runs:
    return open_runs(seeds_run[1])


def _job_dir(root: Path, run: str, level: int, branch: str = "ticket") -> Path:
    return root / run / ("" if branch == "ticket" else f"branches/{branch}") / f"level_{level:02d}"


def test_a_seeds_folder_opens_every_run(runs, seeds_run):
    assert [r.dir.name for r in runs.runs] == RUNS and runs.seeds == [0, 1]
    assert runs.keys == ["act.0/cov"]
    one = open_runs(seeds_run[1] / "seed_1")
    assert [r.dir.name for r in one.runs] == ["seed_1"] and one.run() is one.runs[0]


def test_metrics_has_one_row_per_job_with_the_files_values(runs, seeds_run):
    metrics = runs.metrics
    # the init seeds' runs: 3 levels + random_prune and shuffle at level 2; the data orders: 3 levels
    assert len(metrics) == 2 * 5 + 2 * 3
    assert list(metrics.columns[:8]) == ["experiment", "run", "seed", "data_order_seed", "branch", "level",
                                         "density", "test/acc"]
    assert set(metrics.branch) == {"ticket", "random_prune", "shuffle"}
    for row in metrics.to_dict("records"):
        job = _job_dir(seeds_run[1], row["run"], row["level"], row["branch"])
        written = json.loads((job / "metrics.json").read_text())
        assert row["test/acc"] == pytest.approx(written["test"]["test/acc"])
        mask = load_file(job / "mask.safetensors")
        assert row["density"] == pytest.approx(sum(v.sum() for v in mask.values()) / sum(v.size for v in mask.values()))
        spectra = np.load(job / "spectra.npz")
        assert row["spectra/act.0/cov/effective_rank"] == pytest.approx(spectra["act.0/cov/effective_rank"][-1])
    assert (metrics[metrics.run == "seed_0_order_5"].data_order_seed == 5).all()


def test_spectra_are_the_stored_eigenvalues(runs, seeds_run):
    final = runs.spectra()
    assert set(final.spectrum) == {"act.0/cov"} and set(final.site) == {"act.0"} and set(final.kind) == {"cov"}
    assert final.groupby(["run", "branch", "level"]).ngroups == len(runs.metrics)
    assert np.allclose(final.groupby(["run", "branch", "level"])["normalised"].sum(), 1.0)
    stored = np.load(_job_dir(seeds_run[1], "seed_1", 2, "shuffle") / "spectra.npz")
    one = final[(final.run == "seed_1") & (final.branch == "shuffle") & (final.level == 2)].sort_values("rank")
    assert np.allclose(one.eigenvalue, stored["act.0/cov/eigenvalues"][-1])
    assert list(one["rank"]) == list(range(1, 17)) and one.step.iloc[0] == stored["steps"][-1]
    during = runs.spectra("act.0/cov", every_step=True)
    steps = during[(during.run == "seed_1") & (during.branch == "shuffle") & (during.level == 2)].step.unique()
    assert list(steps) == list(stored["steps"]) and len(steps) > 1
    assert runs.spectra("act.1/cov").empty


def test_masks_weights_and_eigenvectors_are_the_files(runs, seeds_run):
    root = seeds_run[1]
    ticket, shuffled = runs.mask(2, seed=1), runs.mask(2, "shuffle", seed=1)
    stored = load_file(_job_dir(root, "seed_1", 2) / "mask.safetensors")
    assert set(ticket) == set(stored) and all((ticket[n].numpy() == stored[n].astype(bool)).all() for n in ticket)
    # the shuffle control keeps each tensor's count and moves the weights it keeps
    assert all(shuffled[n].sum() == ticket[n].sum() for n in ticket)
    assert any((shuffled[n] != ticket[n]).any() for n in ticket) and density(shuffled) == pytest.approx(density(ticket))
    weights = runs.weights(2, seed=1)
    assert all((weights[n][~ticket[n]] == 0).all() for n in ticket)  # pruned weights are exactly zero
    vectors = runs.eigenvectors("act.0/cov", 2, seed=1)
    assert vectors.shape == (16, 4) and np.allclose(vectors.T @ vectors, np.eye(4), atol=1e-5)
    assert runs.job(2, "ticket", seed=0, data_order_seed=5).dir == _job_dir(root, "seed_0_order_5", 2)


def test_verdict_and_calibration(runs, seeds_run, tmp_path):
    root = seeds_run[1]
    assert runs.verdict == json.loads((root / "report" / "verdict.json").read_text())
    assert runs.calibration is None  # no `ltc calibrate` beside this report
    # `ltc calibrate`'s folder: <world>/seed_<s>/ runs and report/calibration.json
    for world, seed in (("world_a", 0), ("world_b", 1)):
        (tmp_path / world).mkdir(exist_ok=True)
        os.symlink(root / f"seed_{seed}", tmp_path / world / f"seed_{seed}")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "calibration.json").write_text(json.dumps({"error_rate": 0.2}))
    calibration = open_runs(tmp_path)
    assert [r.dir.parent.name for r in calibration.runs] == ["world_a", "world_b"]
    assert calibration.calibration == {"error_rate": 0.2} and calibration.verdict is None


def test_runs_kept_beside_a_seeds_folder_are_found_through_its_report(seeds_run, tmp_path):
    """`ltc seeds` without --run_dir keeps its runs beside its folder (runs/<exp>-<hash>) and names
    them in the report."""
    root = seeds_run[1]
    folder = tmp_path / "runs" / "tiny-seeds-0000"
    (folder / "report").mkdir(parents=True)
    os.symlink(root / "seed_1", tmp_path / "runs" / "tiny-1111")
    recorded = [{"dir": str(root / "seed_0")}, {"dir": "runs/tiny-1111"}]  # absolute; relative to elsewhere
    (folder / "report" / "verdict.json").write_text(json.dumps({"verdict": "channels", "runs": recorded}))
    found = open_runs(folder)
    assert [r.seed for r in found.runs] == [0, 1] and found.verdict["verdict"] == "channels"


@pytest.mark.parametrize("call, message", [
    (lambda runs, tmp: open_runs(tmp / "missing"), "is not a directory"),
    (lambda runs, tmp: open_runs(tmp), "holds no run directory"),
    (lambda runs, tmp: runs.run(), "holds 4 runs; pass seed="),
    (lambda runs, tmp: runs.run(seed=7), "0 runs .* have seed 7 and data order 7"),
    (lambda runs, tmp: runs.job(9, seed=0), "no finished level 9"),
    (lambda runs, tmp: runs.mask(0, "shuffle", seed=0), "no finished level 0 on branch shuffle"),
    (lambda runs, tmp: runs.eigenvectors("act.1/cov", 0, seed=0), "holds no spectrum"),
])
def test_a_wrong_pick_is_one_line_naming_what_there_is(runs, tmp_path, call, message):
    with pytest.raises(LTCError, match=message) as caught:
        call(runs, tmp_path)
    assert "\n" not in str(caught.value)


def test_the_example_notebook_runs_top_to_bottom(seeds_run, tmp_path):
    """examples/explore_runs.ipynb, its `RUNS` set to the tiny seeds experiment, executed in a
    fresh kernel: no cell fails, every figure is drawn, the verdict printed is the report's."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = f"RUNS = {str(seeds_run[1])!r}\nKEY = None"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    verdict = json.loads((seeds_run[1] / "report" / "verdict.json").read_text())
    assert f"verdict: {verdict['verdict']} ({verdict['why']})" in printed
    assert "4 run(s), seeds [0, 1]" in printed and "seeds 0 and 1: Jaccard" in printed
