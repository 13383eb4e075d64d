"""End-to-end `ltc imp` runs on tiny sizes: artifacts, sparsities, resume, refusals."""
import json

import pytest
import torch

from experiments.cli import main
from lth.masks import density, load_mask
from lth.rundir import load_tensors
from tests.helpers import write_config


def _files(run_dir):
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imp")
    cfg = write_config(tmp, imp={"branches": ["random_reinit", "random_prune", "shuffle"], "branch_levels": [2]})
    run_dir = tmp / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run_dir)]) == 0
    return cfg, run_dir


def test_artifacts_and_sparsities(finished_run):
    _, run = finished_run
    assert (run / "config.yaml").is_file() and (run / "init.safetensors").is_file()
    assert not (run / "rewind.safetensors").exists()  # k = 0 rewinds to init
    for level, expected in [(0, 1.0), (1, 0.8), (2, 0.64)]:
        d = run / f"level_{level:02d}"
        for name in ("mask.safetensors", "weights.safetensors", "metrics.json", "DONE"):
            assert (d / name).is_file(), (d, name)
        mask = load_mask(d / "mask.safetensors")
        assert density(mask) == pytest.approx(expected, abs=1e-3)
        metrics = json.loads((d / "metrics.json").read_text())
        assert 0.0 <= metrics["test"]["test/acc"] <= 1.0
        assert metrics["evaluations"] and metrics["evaluations"][-1]["step"] == 20
        weights = load_tensors(d / "weights.safetensors")
        for name, m in mask.items():
            assert (weights[name][~m] == 0).all()
        manifest = json.loads((d / "DONE").read_text())
        assert set(manifest["files"]) >= {"mask.safetensors", "weights.safetensors", "metrics.json"}
    for branch in ("random_reinit", "random_prune", "shuffle"):
        d = run / "branches" / branch / "level_02"
        assert (d / "DONE").is_file()
        assert density(load_mask(d / "mask.safetensors")) == pytest.approx(0.64, abs=1e-3)
    ticket = load_mask(run / "level_02" / "mask.safetensors")
    assert all(torch.equal(ticket[k], v) for k, v in load_mask(run / "branches/random_reinit/level_02/mask.safetensors").items())
    assert not all(torch.equal(ticket[k], v) for k, v in load_mask(run / "branches/random_prune/level_02/mask.safetensors").items())


def test_rerun_skips_finished_levels(finished_run, capsys):
    cfg, run = finished_run
    before = _files(run)
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    assert "done earlier" in capsys.readouterr().out
    after = _files(run)
    assert {p: b for p, b in after.items() if p.name != "config.yaml"} == \
           {p: b for p, b in before.items() if p.name != "config.yaml"}


def test_more_levels_extend_the_same_run(finished_run, tmp_path):
    cfg, run = finished_run
    ext = tmp_path / "ext"
    import shutil
    shutil.copytree(run, ext)
    assert main(["imp", "--config", str(cfg), "--run_dir", str(ext), "--imp.levels", "3"]) == 0
    assert density(load_mask(ext / "level_03" / "mask.safetensors")) == pytest.approx(0.512, abs=1e-3)
    assert (ext / "level_00" / "DONE").read_bytes() == (run / "level_00" / "DONE").read_bytes()


def test_interrupted_level_resumes_to_the_same_result(finished_run, tmp_path, monkeypatch):
    cfg, run = finished_run
    import lth.driver as imp

    class Crash(imp.pl.Callback):  # a pre-empted node, simulated inside the process
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 12 and "level_01" in str(trainer.default_root_dir):
                raise RuntimeError("simulated crash")

    original = imp.IMPDriver._train

    def train_with_interrupt(self, job, start):
        self.env.make_callbacks = lambda j: [Crash()]
        return original(self, job, start)

    monkeypatch.setattr(imp.IMPDriver, "_train", train_with_interrupt)
    target = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["imp", "--config", str(cfg), "--run_dir", str(target), "--imp.branches", "[]"])
    assert (target / "level_00" / "DONE").exists() and not (target / "level_01" / "DONE").exists()
    assert (target / "level_01" / "checkpoints" / "last.ckpt").exists()
    monkeypatch.setattr(imp.IMPDriver, "_train", original)
    assert main(["imp", "--config", str(cfg), "--run_dir", str(target), "--imp.branches", "[]"]) == 0
    for level in (1, 2):
        a = load_mask(run / f"level_{level:02d}" / "mask.safetensors")
        b = load_mask(target / f"level_{level:02d}" / "mask.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (target / "level_01" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("args, message", [
    (["--imp.prune_fraction", "1.2"], "prune_fraction"),
    (["--imp.prune_fraction", "0"], "prune_fraction"),
    (["--imp.levels", "-1"], "levels"),
    (["--imp.rewind_step", "500"], "beyond the training length"),
    (["--imp.rate_overrides", '{"nope.*": 0.1}'], "matches no"),
    (["--imp.ignore", '["nothing*"]'], "matches no"),
    (["--imp.ignore", '["*"]'], "no prunable tensors"),
    (["--imp.bogus", "1"], "bogus"),
    (["--imp.branches", '["everything"]'], "unknown branch"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(finished_run, capsys, args, message):
    cfg, run = finished_run
    before = _files(run)
    capsys.readouterr()
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert _files(run) == before


def test_unknown_key_in_config_file(tmp_path, capsys):
    cfg = write_config(tmp_path, surprise=3)
    assert main(["imp", "--config", str(cfg), "--run_dir", str(tmp_path / "r")]) == 2
    assert "surprise" in capsys.readouterr().err


def test_run_dir_of_another_config_is_refused_unless_forced(finished_run, tmp_path, capsys):
    cfg, run = finished_run
    before = _files(run)
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run), "--seed_everything", "7"]) == 2
    assert "another config" in capsys.readouterr().err
    assert _files(run) == before


def test_print_config_prints_resolved_yaml(tmp_path, capsys):
    cfg = write_config(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["imp", "--config", str(cfg), "--imp.levels", "4", "--print_config"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "levels: 4" in out and "class_path: experiments.models.mlp.MLP" in out


@pytest.mark.parametrize("levels, wanted, expected, noted", [
    (5, None, [1, 2, 3, 4, 5], False),
    (5, [2, -1], [2, 5], False),
    (8, [2, 5], [2, 5], False),
    (3, [2, 5], [2, 3], True),       # the README's `--imp.levels 3` on a recipe with branches at 5
    (3, [-1], [3], False),
    (2, [-4], [1], True),
    (0, [-1], [], True),
])
def test_branch_levels_follow_any_level_count(levels, wanted, expected, noted):
    from lth.config import ImpConfig

    resolved, note = ImpConfig(levels=levels, branch_levels=wanted).resolved_branch_levels()
    assert resolved == expected and (note is not None) == noted
    if noted:
        assert f"1..{levels}" in note and str(expected) in note or "no pruned level" in note
