"""experiments.bench.vision_gpu on the CPU at tiny size: its table agrees with the run directories."""
import json
import math
from pathlib import Path

import pytest
import torch

from experiments.bench.vision_gpu import main
from experiments.data.synthetic_vision import MARKER, is_synthetic, write_mnist
from lth.layout import RunLayout


def test_tiny_cpu_run_reports_what_the_run_dirs_say(tmp_path, capsys):
    broken = tmp_path / "broken_lenet.yaml"  # a run that fails must cost its row only
    recipe = Path("configs/mnist_lenet300_imp.yaml").read_text()
    broken.write_text(recipe.replace("sites: [fcs.0, fcs.1]", "sites: [no_such_site]"))
    out = tmp_path / "out"
    code = main([str(out), "--device", "cpu", "--size", "tiny", "--steps", "2", "--threads", "1",
                 "--configs", "mnist_lenet300_imp", str(broken), "cifar10_conv2_imp"])
    assert code == 1  # one config failed
    result = json.loads((out / "vision_gpu.json").read_text())
    rows = {row["config"]: row for row in result["rows"]}
    assert list(rows) == ["mnist_lenet300_imp", "broken_lenet", "cifar10_conv2_imp"]

    failed = rows.pop("broken_lenet")
    assert failed["status"] == "failed (exit 2)" and "no_such_site" in failed["error"]
    assert failed["levels"] == []

    for name, row in rows.items():
        assert row["status"] == "ok" and row["device"] == "cpu"
        assert row["data"] == "synthetic" and "chance" in row["note"]
        folder = "MNIST/raw" if "mnist" in name else "cifar-10-batches-py"
        assert is_synthetic(out / "synthetic_data" / "tiny" / folder)
        assert [lv["level"] for lv in row["levels"]] == [0, 1]
        for lv in row["levels"]:
            metrics = json.loads(RunLayout(out / "runs" / name).job(lv["level"]).metrics.read_text())
            assert lv["steps"] == metrics["steps"] == 2
            assert lv["ms_per_step"] > 0
            assert math.isclose(lv["ms_per_step"], 1000 * metrics["train_time_s"] / metrics["steps"])
            assert math.isclose(lv["images_per_s"], 2 * row["batch_size"] / metrics["train_time_s"])
            assert lv["test_acc"] == metrics["test"]["test/acc"] and 0 <= lv["test_acc"] <= 1
            assert lv["density"] == metrics["density"]
            assert 0 < lv["spectra_s"] < metrics["train_time_s"]  # the spectra ran, inside the fit
            assert 0 < lv["ms_per_step_without_spectra"] < lv["ms_per_step"]
        assert row["levels"][0]["density"] == 1 > row["levels"][1]["density"]

    markdown = (out / "vision_gpu.md").read_text()
    assert all(name in markdown for name in [*rows, "broken_lenet"]) and "chance" in markdown
    assert "cifar10_conv2_imp: ok" in capsys.readouterr().out


def test_real_data_is_used_and_a_spent_budget_lists_configs_without_running_them(tmp_path):
    real = tmp_path / "data"
    write_mnist(real)  # stands in for the real files: the same names, without the synthetic marker
    (real / "MNIST" / "raw" / MARKER).unlink()
    out = tmp_path / "out"
    code = main([str(out), "--device", "cpu", "--budget_s", "1e-3", "--data_root", str(real),
                 "--configs", "mnist_lenet300_imp"])
    row, = json.loads((out / "vision_gpu.json").read_text())["rows"]
    assert code == 1 and row["status"].startswith("not run") and row["levels"] == []
    assert row["data"] == "real" and row["data_root"] == str(real) and row["note"] == ""
    assert not (out / "runs" / "mnist_lenet300_imp").exists() and not (out / "synthetic_data").exists()


@pytest.mark.parametrize("args,message", [
    (["--configs", "cifar10_conv3_imp"], "unknown vision config 'cifar10_conv3_imp'"),
    (["--device", "cpu", "--steps", "1"], "--steps >= 2"),
    pytest.param(["--device", "cuda"], "no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    assert main([str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()  # nothing written
