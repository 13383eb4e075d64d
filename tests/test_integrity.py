"""Integrity: every artifact carries a checksum (the level's DONE manifest; tensor files also in
their own metadata), loading verifies it, and a corrupt file is refused with a clear message."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from experiments.cli import main
from lth import rundir
from lth.errors import LTCError
from tests.helpers import write_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    cfg = write_config(tmp, imp={"levels": 1, "rewind_step": 5, "branches": ["shuffle"]})
    run = tmp / "run"
    assert main(["imp", "--config", str(cfg), "--run_dir", str(run)]) == 0
    return cfg, run


def _reference_digest(tensors: dict[str, torch.Tensor]) -> str:
    """The content digest recomputed independently: name, dtype, shape, then the raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = tensors[name].numpy()
        digest.update(f"{name}|{tensors[name].dtype}|{tuple(array.shape)}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_every_artifact_carries_a_checksum(finished):
    _, run = finished
    levels = [run / "level_00", run / "level_01", run / "branches/shuffle/level_01"]
    for level in levels:
        manifest = json.loads((level / rundir.DONE).read_text())["files"]
        on_disk = {p.name for p in level.iterdir() if p.is_file() and p.name != rundir.DONE}
        assert set(manifest) == on_disk == {"mask.safetensors", "weights.safetensors", "metrics.json", "spectra.npz"}
        for name, digest in manifest.items():
            assert hashlib.sha256((level / name).read_bytes()).hexdigest() == digest
    for name in ("init.safetensors", "rewind.safetensors", "level_01/weights.safetensors"):
        with safe_open(str(run / name), framework="pt") as fh:
            stored = fh.metadata()[rundir.CHECKSUM_KEY]
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        assert stored == _reference_digest(tensors)


def test_corrupt_weights_of_a_finished_level_are_refused_through_the_cli(finished, tmp_path, capsys):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    weights = run / "level_01" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file() and p.name != "config.yaml"}
    capsys.readouterr()

    assert main(["imp", "--config", str(cfg), "--run_dir", str(run), "--imp.levels", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(weights) in err and "does not match its checksum" in err and "delete" in err
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file() and p.name != "config.yaml"}
    assert after == before  # nothing written, nothing repaired, no level 2
    assert not (run / "level_02").exists()


@pytest.mark.parametrize("damage", ["data", "header", "truncated"])
def test_tensor_files_check_their_own_contents(tmp_path, damage):
    path = tmp_path / "theta.safetensors"
    rundir.save_tensors(path, {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)})
    assert torch.equal(rundir.load_tensors(path)["w"], torch.arange(12.0).reshape(3, 4))
    data = bytearray(path.read_bytes())
    if damage == "data":
        data[-1] ^= 0x40
    elif damage == "header":
        start = data.index(b'"lth.sha256":"') + len(b'"lth.sha256":"')
        data[start] = ord("0") if data[start] != ord("0") else ord("1")
    else:
        data = data[: len(data) - 5]
    path.write_bytes(bytes(data))
    with pytest.raises(LTCError, match=r"corrupt|cannot read"):
        rundir.load_tensors(path)


def test_manifest_checks(tmp_path):
    level = tmp_path / "level_00"
    rundir.write_json(level / "metrics.json", {"acc": 0.5})
    rundir.write_text(level / "notes.txt", "x")
    rundir.mark_done(level, ["metrics.json", "notes.txt"])
    rundir.verify_all(level)
    (level / "notes.txt").write_text("y")
    with pytest.raises(LTCError, match="notes.txt does not match its checksum"):
        rundir.verify_all(level)
    (level / "notes.txt").unlink()
    with pytest.raises(LTCError, match="missing from a finished level"):
        rundir.verify(level, "notes.txt")
    with pytest.raises(LTCError, match="missing from a finished level"):
        rundir.verify(level, "never_listed.txt")
    (level / rundir.DONE).write_text('["not", "a", "manifest"]')
    with pytest.raises(LTCError, match="unreadable"):
        rundir.verify(level, "metrics.json")
