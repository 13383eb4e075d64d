"""Safe loading: nothing in a run directory can run code when read. Masks and weights are
safetensors, spectra npz without pickle, metrics and manifests JSON; checkpoints are loaded with
`weights_only=True`. Malicious pickles planted in a run dir are refused with a clear message and
their payload (creating a marker file) never runs."""
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lth.driver
from channels.verdict.rundata import Trained
from channels.spectra import load_npz
from experiments.cli import main
from lth import rundir
from lth.errors import LTCError
from tests.helpers import write_config
from tests.test_kill_resume import REPO


class Payload:
    """Unpickling this creates `marker` (what an attacker's code would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safe")
    cfg = write_config(tmp, imp={"levels": 1, "branches": []})
    run = tmp / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    return cfg, run


def _copy(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    return cfg, run


def _plant_checkpoint(path: Path, marker: Path, form: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "torch_zip":
        torch.save({"state_dict": {}, "global_step": 3, "evil": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


@pytest.mark.parametrize("form", ["torch_zip", "raw_pickle"])
def test_malicious_checkpoint_of_an_unfinished_level_is_refused(finished, tmp_path, capsys, form):
    cfg, run = _copy(finished, tmp_path)
    marker = tmp_path / "pwned"
    ckpt = run / "level_02" / "checkpoints" / "last.ckpt"
    _plant_checkpoint(ckpt, marker, form)
    capsys.readouterr()

    assert main(["imp", "--config", str(cfg), "--run_dir", str(run), "--imp.levels", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot resume from {ckpt}" in err and "delete it" in err, err
    assert not marker.exists()
    assert not (run / "level_02" / rundir.DONE).exists()
    if form == "torch_zip":  # the payload is live: an unsafe load would have run it
        torch.load(ckpt, weights_only=False)
    else:
        pickle.loads(ckpt.read_bytes())
    assert marker.exists()


def test_lightning_resumes_with_weights_only_even_if_the_environment_asks_otherwise(
        finished, tmp_path, monkeypatch):
    """Without the driver's own check, Lightning's loading of the checkpoint still refuses the
    pickle: the driver passes weights_only=True explicitly, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    (the switch back to unsafe loads when weights_only is left unset) does not override."""
    cfg, run = _copy(finished, tmp_path)
    marker = tmp_path / "pwned"
    _plant_checkpoint(run / "level_02" / "checkpoints" / "last.ckpt", marker, "torch_zip")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setattr(lth.driver, "resumable_checkpoint", lambda path: path if path.exists() else None)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        main(["imp", "--config", str(cfg), "--run_dir", str(run), "--imp.levels", "2"])
    assert not marker.exists()


def test_malicious_mask_is_refused(finished, tmp_path, capsys):
    cfg, run = _copy(finished, tmp_path)
    marker = tmp_path / "pwned"
    level = run / "level_01"
    torch.save(Payload(marker), level / "mask.safetensors")
    rundir.mark_done(level, list(rundir.read_manifest(level)))  # checksums cannot tell an attacker
    capsys.readouterr()
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run), "--imp.levels", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot read mask" in err, err
    assert not marker.exists()


def test_spectra_with_an_object_array_are_refused_and_never_unpickled(finished, tmp_path, capsys):
    cfg, run = _copy(finished, tmp_path)
    marker = tmp_path / "pwned"
    level = run / "level_01"
    with open(level / "spectra.npz", "wb") as fh:
        np.savez(fh, steps=np.array([Payload(marker)], dtype=object))
    rundir.mark_done(level, list(rundir.read_manifest(level)))
    # the driver only checksums finished spectra: the re-run completes without reading them
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    assert not marker.exists()
    with pytest.raises(LTCError, match="holds pickled objects.*allow_pickle=False"):
        load_npz(level / "spectra.npz")
    job = Trained(dir=level, level=1, branch=None, metrics={})
    with pytest.raises(LTCError, match="holds pickled objects"):
        _ = job.spectra  # what `ltc report` and `ltc spectra` read
    assert not marker.exists()
    _ = np.load(level / "spectra.npz", allow_pickle=True)["steps"]  # the payload is live
    assert marker.exists()


def _calls(source: str, name: str) -> list[str]:
    """The text of every call `name(...)` in `source` (balanced parentheses)."""
    out = []
    for match in re.finditer(re.escape(name) + r"\(", source):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(source)):
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            if depth == 0:
                break
        out.append(source[match.start(): end + 1])
    return out


def test_no_loader_in_the_code_can_run_pickled_code():
    """Every torch.load passes weights_only=True, every np.load allow_pickle=False; pickle only
    reads CIFAR-10's own batch files (its published format), yaml only through safe loaders."""
    for path in sorted(REPO.glob("[lce]*/**/*.py")):
        if ".venv" in path.parts:
            continue
        source = path.read_text()
        for call in _calls(source, "torch.load"):
            assert "weights_only=True" in call, (path, call)
        for call in _calls(source, "np.load") + _calls(source, "numpy.load"):
            assert "allow_pickle=False" in call, (path, call)
        if path.relative_to(REPO).as_posix() != "experiments/data/vision.py":
            assert not _calls(source, "pickle.load") and not _calls(source, "pickle.loads"), path
        assert not _calls(source, "yaml.load") and not _calls(source, "yaml.unsafe_load"), path
