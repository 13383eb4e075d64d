"""`ltc bench` smoke test on tiny sizes, the peak-memory meter, and the bench's one-line errors."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from experiments.bench import jacobian as bench_jacobian
from experiments.bench.callback import measurement_count
from experiments.bench.end_to_end import default_jobs
from experiments.bench.suite import CASES, CPU_CASES, CUDA_CASES, PeakMemory
from experiments.bench.tables import markdown_table
from experiments.cli import main
from experiments.runtime import limit_cpu_threads
from tests.helpers import write_config

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "mnist1d_imp.yaml")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    """`ltc bench --tiny` with the GPT-2 shape of the Jacobian cases shrunk to 2 x 64 (module constants)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_jacobian, "LAYERS", 2)
        mp.setattr(bench_jacobian, "WIDTH", 64)
        mp.setattr(bench_jacobian, "HEADS", 2)
        for var in THREAD_VARIABLES:  # restored when the context ends
            mp.setenv(var, "1")
        threads = torch.get_num_threads()
        try:
            assert main(["bench", "--tiny", "--out", str(out), "--config", DEFAULT_CONFIG]) == 0
        finally:
            limit_cpu_threads(threads)
    return json.loads(out.read_text())


def test_every_case_has_finite_positive_timings_and_ratios(tiny_result):
    rows = tiny_result["rows"]
    assert {r["case"] for r in rows} == set(CPU_CASES)
    for r in rows:
        for key in ("ours_s", "baseline_s", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["case"], r["what"], key, r[key])
        assert r["peak_bytes"] > 0 and r["memory_method"], r
    for name, case in tiny_result["cases"].items():
        assert case["seconds"] > 0 and case["figures"], name


def test_rows_agree_with_the_case_figures(tiny_result):
    cases = tiny_result["cases"]
    by_case = {}
    for r in tiny_result["rows"]:
        by_case.setdefault(r["case"], []).append(r)
    masking = cases["masking"]["figures"]["mnist1d-mlp"]
    assert by_case["masking"][0]["ratio"] == pytest.approx(masking["masked_vs_dense"])
    speedup = cases["jacobian"]["figures"]["all_pairs"]["speedup_extrapolated"]
    assert by_case["jacobian"][0]["ratio"] == pytest.approx(speedup)
    assert by_case["jacobian"][0]["ratio"] == pytest.approx(by_case["jacobian"][0]["baseline_s"] / by_case["jacobian"][0]["ours_s"])
    callback = cases["callback"]["figures"]
    assert callback["share"] == pytest.approx(callback["callback_s"] / callback["train_s_with_callback"])
    assert 0 < callback["share"] < 1
    e2e = cases["end_to_end"]["figures"]
    assert e2e["extrapolated"] and e2e["measured_jobs"] == 3
    assert e2e["default_jobs"] == default_jobs(DEFAULT_CONFIG)[0]
    assert e2e["estimated_default_s"] > e2e["startup_s"]


def test_peers_measure_the_same_blocks_on_the_sized_model(tiny_result):
    peers = tiny_result["cases"]["jacobian_peers"]["figures"]
    assert (peers["layers"], peers["width"]) == (2, 64)  # the size's model, not the module's GPT-2 shape
    assert all(c["max_rel_block_diff"] < 1e-4 for c in peers["coupling"])  # per-token and ours: one Jacobian
    assert all(0 < e["matrix_cosine"] <= 1 + 1e-6 for e in peers["lens"])


def test_chunk_sizes_are_shown_side_by_side_with_their_peaks(tiny_result):
    runs = tiny_result["cases"]["jacobian_chunks"]["figures"]["runs"]
    assert [r["chunk_size"] for r in runs] == [2, 4]
    assert all(r["peak_bytes"] > 0 for r in runs)


def test_markdown_table_has_one_line_per_row(tiny_result):
    text = markdown_table(tiny_result)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(tiny_result["rows"])


def test_every_case_of_either_device_is_registered_and_loads():
    """The CUDA-only case never runs here: at least its registry entry must name a real function."""
    assert set(CPU_CASES) <= set(CUDA_CASES) == set(CASES)
    for name in CUDA_CASES:
        assert callable(CASES[name].load()), name


def test_peak_memory_sees_a_large_temporary_allocation():
    with PeakMemory("cpu") as small:
        torch.ones(1000).sum()
    with PeakMemory("cpu") as big:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    if small.method.startswith("peak RSS"):
        assert big.bytes >= 60 * 2**20 > small.bytes
    else:
        assert big.bytes > 0


def test_thread_limit_reaches_torch_and_later_libraries(monkeypatch):
    for var in THREAD_VARIABLES:
        monkeypatch.setenv(var, "2")
    before = torch.get_num_threads()
    try:
        limit_cpu_threads(1)
        assert torch.get_num_threads() == 1
        assert all(os.environ[var] == "1" for var in THREAD_VARIABLES)
    finally:
        limit_cpu_threads(before)


def test_measurement_count():
    assert measurement_count(3000, 500) == 7  # steps 0, 500, ..., 2500 and the end
    assert measurement_count(300, 500) == 2
    assert measurement_count(1000, 500) == 3

def test_default_jobs_counts_levels_and_controls(tmp_path):
    branches = {"branches": ["random_prune", "shuffle"], "rewind_step": 5}
    assert default_jobs(str(write_config(tmp_path, imp={**branches, "branch_levels": [2]}))) == (3 + 2, 20, 5)
    assert default_jobs(str(write_config(tmp_path, imp={**branches, "branch_levels": None}))) == (3 + 2 * 2, 20, 5)
    stability = {"branches": ["instability"], "branch_levels": [2], "rewind_step": 0}
    assert default_jobs(str(write_config(tmp_path, imp=stability))) == (3 + 1 + 1, 20, 0)  # levels 0 and 2


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--tiny"], "give one of them"),
    (["--cases", "[nope]"], "unknown case 'nope'"),
    (["--cases", "[precision]"], "unknown case 'precision' on cpu"),
    (["--device", "tpu"], "unknown --device"),
    (["--chunk_sizes", "[8]"], "--chunk_sizes takes two sizes"),
    (["--chunk_sizes", "[0, 8]"], "CUDA only"),
    (["--threads", "-1"], "--threads must be >= 0"),
    (["--no_such_flag", "1"], "bad config"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
