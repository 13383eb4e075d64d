"""The instability branch: a second copy of each level trained with another data order, the error
barrier between the copies, and its place in `ltc imp`'s table, W&B and `ltc report`."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from channels.verdict.rundata import load_run
from channels.verdict.stability import STABLE_BARRIER, stability_rows, stability_summary
from experiments.cli import main
from experiments.data.mnist1d import MNIST1DDataModule
from experiments.models.mlp import MLP
from experiments.report.build import build_report
from wandb_offline import read_runs
from lth import rundir
from lth.connectivity import recompute_batchnorm_statistics
from lth.errors import LTCError
from lth.masks import load_mask
from tests.helpers import TINY, write_config

POINTS = 5


@pytest.fixture(scope="module")
def stability_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("instability")
    cfg = write_config(tmp, imp={"levels": 1, "branches": ["random_prune", "instability"],
                                 "instability_points": POINTS},
                       trainer={"max_steps": 30, "val_check_interval": 15, "enable_progress_bar": False})
    run = tmp / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    return cfg, run


def _metrics(directory):
    return json.loads((directory / "metrics.json").read_text())


def _test_error(state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """Independent evaluation: the tiny MLP loaded with `state`, argmax over the whole test set."""
    net = MLP(**TINY["model"]["init_args"]["net"]["init_args"])
    net.load_state_dict(state)
    with torch.no_grad():
        return (net.eval()(x).argmax(1) != y).sum().item() / y.numel()


def test_copies_share_start_and_mask_but_not_data_order(stability_run):
    _, run = stability_run
    for level in (0, 1):
        copy = run / "branches" / "instability" / f"level_{level:02d}"
        assert rundir.is_done(copy)
        ticket_mask, copy_mask = load_mask(run / f"level_{level:02d}/mask.safetensors"), load_mask(copy / "mask.safetensors")
        assert all(torch.equal(ticket_mask[k], copy_mask[k]) for k in ticket_mask)
        a = rundir.load_tensors(run / f"level_{level:02d}/weights.safetensors")
        b = rundir.load_tensors(copy / "weights.safetensors")
        assert not torch.equal(a["hidden.0.weight"], b["hidden.0.weight"])  # another data order
        for name, m in copy_mask.items():
            assert torch.all(b[name][m == 0] == 0)
    assert not (run / "branches" / "instability" / "level_00" / "checkpoints").exists()


def test_barrier_line_matches_an_independent_evaluation(stability_run):
    _, run = stability_run
    dm = MNIST1DDataModule(**TINY["data"]["init_args"])
    dm.setup("test")
    x, y = map(torch.cat, zip(*dm.test_dataloader()))
    for level in (0, 1):
        a = rundir.load_tensors(run / f"level_{level:02d}/weights.safetensors")
        copy = run / "branches" / "instability" / f"level_{level:02d}"
        b = rundir.load_tensors(copy / "weights.safetensors")
        line = _metrics(copy)["instability"]
        assert line["alphas"] == pytest.approx(np.linspace(0, 1, POINTS).tolist())
        for alpha, error in zip(line["alphas"], line["errors"]):
            mid = {k: (1 - alpha) * a[k].double() + alpha * b[k].double() for k in a}
            assert error == pytest.approx(_test_error({k: v.float() for k, v in mid.items()}, x, y), abs=1e-9)
        # the ends are the two trained copies, whose own test runs agree
        assert line["error_a"] == pytest.approx(1 - _metrics(run / f"level_{level:02d}")["test"]["test/acc"], abs=1e-6)
        assert line["error_b"] == pytest.approx(1 - _metrics(copy)["test"]["test/acc"], abs=1e-6)
        errors = np.array(line["errors"])
        assert line["barrier_vs_mean"] == pytest.approx(errors.max() - (errors[0] + errors[-1]) / 2)
        chord = errors[0] + np.array(line["alphas"]) * (errors[-1] - errors[0])
        assert line["barrier"] == pytest.approx((errors - chord).max())


def test_table_shows_the_barrier_and_a_rerun_skips_it(stability_run, capsys):
    cfg, run = stability_run
    before = _metrics(run / "branches/instability/level_01")
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "instability/level_01" in out and "done earlier" in out and "error barrier" in out
    assert _metrics(run / "branches/instability/level_01") == before
    row = next(line for line in out.splitlines() if line.strip().startswith("│     1"))
    assert f"{100 * before['instability']['barrier_vs_mean']:.2f}" in row


def test_report_has_a_stability_section_and_does_not_count_the_copy_as_a_control(stability_run, tmp_path):
    _, run = stability_run
    result = build_report([run], tmp_path / "report", wandb_mode="disabled")
    rows = result["stability"]["rows"]
    assert [r["level"] for r in rows] == [0, 1]
    barrier = _metrics(run / "branches/instability/level_01")["instability"]["barrier_vs_mean"]
    assert rows[1]["barrier"] == pytest.approx(barrier) and rows[1]["stable"] == (barrier <= STABLE_BARRIER)
    assert [r["start"] for r in rows] == ["theta_0", "theta_0"]  # TINY rewinds to step 0
    assert all("instability" not in row for row in result["tests"]["T0"]["details"])
    assert (tmp_path / "report/figures/instability.png").is_file()
    assert "Stability (linear mode connectivity)" in (tmp_path / "report/report.md").read_text()


def test_stability_summary_names_the_unstable_levels():
    assert "no instability branch" in stability_summary([])
    dense_shaky = {"level": 0, "density": 1.0, "stable": False}
    stable = {"level": 1, "density": 0.8, "stable": True}
    text = stability_summary([dense_shaky, stable])
    assert "from initialisation is unstable" in text and "every measured pruned level is stable" in text
    shaky = {"level": 3, "density": 0.512, "stable": False}
    text = stability_summary([stable, shaky])
    assert "level 3 (51.2% remaining)" in text and "level 1" not in text and "dense" not in text


def test_stability_rows_skip_runs_without_the_branch(stability_run, tmp_path):
    _, run = stability_run
    assert len(stability_rows([load_run(run)])) == 2
    other = tmp_path / "plain"
    assert main(["imp", "--config", str(write_config(tmp_path, imp={"levels": 0, "branches": []})),
                 "--run_dir", str(other)]) == 0
    assert stability_rows([load_run(other)]) == []


def test_barrier_is_logged_to_wandb(tmp_path):
    cfg = write_config(tmp_path, imp={"levels": 0, "branches": ["instability"], "instability_points": 3},
                       wandb={"mode": "offline"})
    run = tmp_path / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    copy = next(r for r in read_runs(run / "wandb") if r.job_type == "branch:instability")
    logged = {k: v for row in copy.history for k, v in row.items() if k.startswith("instability/")}
    barrier = _metrics(run / "branches/instability/level_00")["instability"]["barrier_vs_mean"]
    assert logged["instability/barrier_vs_mean"] == pytest.approx(barrier)
    assert "instability/line" in logged  # the error along the line, as a W&B table


def test_too_few_points_is_one_line_exit_2(tmp_path, capsys):
    cfg = write_config(tmp_path, imp={"branches": ["instability"], "instability_points": 1})
    assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instability_points" in err
    assert not (tmp_path / "run").exists()


def test_batchnorm_statistics_are_the_plain_average_over_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3))
    net[1].running_mean.fill_(5.0)
    batches = [torch.randn(16, 3) * 2 + 1 for _ in range(3)]
    assert recompute_batchnorm_statistics(net, iter(batches)) == 3
    with torch.no_grad():
        hidden = [net[0](b).numpy().astype(np.float64) for b in batches]
    expected_mean = np.mean([h.mean(0) for h in hidden], axis=0)
    expected_var = np.mean([h.var(0, ddof=1) for h in hidden], axis=0)  # PyTorch keeps the unbiased variance
    np.testing.assert_allclose(net[1].running_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net[1].running_var.numpy(), expected_var, rtol=1e-5, atol=1e-6)
    assert net[1].momentum == 0.3 and not net.training


def test_batchnorm_recompute_without_batches_is_an_error():
    with pytest.raises(LTCError, match="no batches"):
        recompute_batchnorm_statistics(nn.Sequential(nn.BatchNorm1d(2)), iter([]))


def test_interrupted_copy_resumes_to_the_same_weights_and_barrier(stability_run, tmp_path, monkeypatch):
    cfg, reference = stability_run
    import lth.driver as imp

    class Crash(imp.pl.Callback):  # a pre-empted node, in the middle of the copy's training
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 22 and "instability" in str(trainer.default_root_dir):
                raise RuntimeError("simulated crash")

    original = imp.IMPDriver._train

    def train_with_crash(self, job, start, **kwargs):
        self.env.make_callbacks = lambda j: [Crash()]
        return original(self, job, start, **kwargs)

    monkeypatch.setattr(imp.IMPDriver, "_train", train_with_crash)
    run = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["imp", "--config", str(cfg), "--run_dir", str(run)])
    copy = run / "branches" / "instability" / "level_00"
    assert (copy / "checkpoints" / "last.ckpt").exists() and not rundir.is_done(copy)
    monkeypatch.setattr(imp.IMPDriver, "_train", original)
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    for level in (0, 1):
        name = f"branches/instability/level_{level:02d}"
        a, b = rundir.load_tensors(reference / name / "weights.safetensors"), rundir.load_tensors(run / name / "weights.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert _metrics(run / name)["instability"] == _metrics(reference / name)["instability"]
