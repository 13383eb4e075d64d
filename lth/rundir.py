"""The run directory: atomic artifact writes, checksummed `DONE` manifests, config identity.

Every file is written to a temporary name in the same directory and renamed into place, so a
crash never leaves a half-written file under a final name. A level is finished when its `DONE`
manifest exists; the manifest holds the sha256 of every artifact, checked on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lth.errors import LTCError

DONE = "DONE"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a name -> tensor mapping as safetensors (copies break weight tying, which safetensors refuses)."""
    plain = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:
        raise LTCError(f"cannot read {path}: {exc}; delete the file (or its level) to recompute it") from exc


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mark_done(directory: Path, files: list[str], info: dict | None = None) -> None:
    """Write the `DONE` manifest last: the sha256 of each finished artifact."""
    manifest = {"files": {name: sha256(directory / name) for name in files}, **(info or {})}
    write_json(directory / DONE, manifest)


def is_done(directory: Path) -> bool:
    return (Path(directory) / DONE).is_file()


def verify(directory: Path, name: str) -> Path:
    """Return the path of artifact `name` after checking it against the level's `DONE` manifest."""
    directory = Path(directory)
    path = directory / name
    try:
        manifest = json.loads((directory / DONE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LTCError(f"{directory / DONE} is unreadable ({exc}); delete {directory} to recompute it") from exc
    expected = manifest.get("files", {}).get(name)
    if expected is None or not path.is_file():
        raise LTCError(f"{path} is missing from a finished level; delete {directory} to recompute it")
    if sha256(path) != expected:
        raise LTCError(f"{path} does not match its checksum in {directory / DONE}: the file is corrupt; "
                       f"delete {directory} to recompute it")
    return path


def config_hash(config: Mapping) -> str:
    """First 8 hex digits of the sha256 of the config as canonical JSON."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
