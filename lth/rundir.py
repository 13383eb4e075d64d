"""The run directory: atomic artifact writes, checksummed `DONE` manifests, config identity.

Every file is written to a temporary name in the same directory and renamed into place, so a
crash never leaves a half-written file under a final name. A level is finished when its `DONE`
manifest exists; the manifest holds the sha256 of every artifact, checked on load. Tensor files
also carry the sha256 of their own contents in their safetensors metadata, so files outside a
level (init.safetensors, rewind.safetensors) are checked too.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lth.errors import LTCError
from lth.layout import DONE

CHECKSUM_KEY = "lth.sha256"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, SafetensorError)):  # disk full, read-only, not a directory...
            raise LTCError(f"cannot write {path}: {' '.join(str(exc).split())}; free disk space or fix "
                           "the directory, then re-run the same command to resume") from exc
        raise


def is_temporary(path: Path) -> bool:
    """Whether `path` is a leftover of an interrupted `atomic_write` (never a finished file)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a name -> tensor mapping as safetensors with the sha256 of its contents in the metadata
    (copies break weight tying, which safetensors refuses)."""
    plain = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    metadata = {**(metadata or {}), CHECKSUM_KEY: tensors_sha256(plain)}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking the contents against the sha256 in its metadata (if any)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            expected = (fh.metadata() or {}).get(CHECKSUM_KEY)
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except Exception as exc:  # safetensors raises several types on missing or corrupt files
        raise LTCError(f"cannot read {path} ({' '.join(str(exc).split())}); "
                       "delete the file (or its level) to recompute it") from exc
    if expected is not None and tensors_sha256(tensors) != expected:
        raise LTCError(f"{path} does not match the checksum stored in it: the file is corrupt; "
                       "delete it (or its level) to recompute it")
    return tensors


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


def read_manifest(directory: Path) -> dict[str, str]:
    """The `DONE` manifest's artifact -> sha256 table."""
    done = Path(directory) / DONE
    try:
        files = json.loads(done.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a table")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LTCError(f"{done} is unreadable ({' '.join(str(exc).split())}); "
                       f"delete {directory} to recompute it") from exc
    return files


def verify(directory: Path, name: str) -> Path:
    """Return the path of artifact `name` after checking it against the level's `DONE` manifest."""
    directory = Path(directory)
    path = directory / name
    expected = read_manifest(directory).get(name)
    if expected is None or not path.is_file():
        raise LTCError(f"{path} is missing from a finished level; delete {directory} to recompute it")
    if sha256(path) != expected:
        raise LTCError(f"{path} does not match its checksum in {directory / DONE}: the file is corrupt; "
                       f"delete {directory} to recompute it")
    return path


def verify_all(directory: Path) -> None:
    """Check every artifact listed in the level's `DONE` manifest."""
    for name in read_manifest(directory):
        verify(directory, name)


def config_hash(config: Mapping) -> str:
    """First 8 hex digits of the sha256 of the config as canonical JSON."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
