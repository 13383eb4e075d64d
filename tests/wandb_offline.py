"""Read W&B offline runs (`run-<id>.wandb`) without a server: what a run logged, for tests and reports.

The file is a transaction log: a 7-byte header (b":W&B", magic 0xBEE1 as little-endian uint16,
version byte 0) and then 32 KiB blocks in the leveldb log format. Each block holds chunks with a
7-byte header (crc32 of type byte + payload, uint16 payload length, type byte FULL=1, FIRST=2,
MIDDLE=3, LAST=4); fewer than 7 bytes left in a block are padding. Chunks join into records, each
a serialized `wandb.proto.wandb_internal_pb2.Record`. Item values are JSON (`value_json`), their
names in `key` or in `nested_key` (a list: one element for a name such as `val/acc`, several for
a logged dict, e.g. a table reference, which is rebuilt here as nested dicts).
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lth.errors import LTCError

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes, path: Path) -> Iterator[tuple[int, bytes]]:
    offset = len(HEADER)
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:
            offset += left_in_block
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, offset)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            offset += left_in_block
            continue
        payload = data[offset + CHUNK_HEADER: offset + CHUNK_HEADER + length]
        if len(payload) < length:
            return  # a run still being written: stop at the last complete chunk
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise LTCError(f"{path} is corrupt at byte {offset} (checksum mismatch)")
        yield kind, payload
        offset += CHUNK_HEADER + length


def read_records(path: str | Path) -> Iterator:
    """Every record of one `.wandb` file, as `wandb_internal_pb2.Record` messages, in order."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(HEADER[:4]):
        raise LTCError(f"{path} is not a W&B run file (no :W&B header)")
    pending = b""
    for kind, payload in _chunks(data, path):
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _path(item) -> list[str]:
    return list(item.nested_key) or [item.key]


def _value(item):
    return json.loads(item.value_json) if item.value_json else None


def _items(items) -> dict:
    """Items as a dict; a nested path (a logged dict such as a table reference) becomes nested dicts."""
    out: dict = {}
    for item in items:
        *parents, last = _path(item)
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _value(item)
    return out


@dataclass
class OfflineRun:
    """What one offline run holds: its identity, config, history rows, final summary, metric
    definitions (name or glob -> step metric), logged artifacts and saved files."""

    file: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    finished: bool = False

    def table(self, value: dict) -> tuple[list[str], list[list]]:
        """(columns, rows) of a logged table, from the reference a history row or the summary holds."""
        data = json.loads((self.file.parent / "files" / value["path"]).read_text())
        return data["columns"], data["data"]


def _artifact(record) -> dict:
    """A logged artifact; `used`: declared an input of the run (`use_after_commit`), not an output."""
    return {"name": record.name, "type": record.type, "aliases": sorted(record.aliases),
            "metadata": json.loads(record.metadata or "{}"), "digest": record.digest,
            "used": record.use_after_commit,
            "refs": {entry.path: entry.ref for entry in record.manifest.contents}}


def read_run(path: str | Path, settle_s: float = 30.0) -> OfflineRun:
    """Parse one `.wandb` file (or the one inside an `offline-run-*` directory).

    `run.finish()` can return before wandb's service has written the file's tail, so a file without
    its `exit` record is read again until it has one or `settle_s` has passed (then as it stands)."""
    file = run_files(path)
    if len(file) != 1:
        raise LTCError(f"{path} holds {len(file)} W&B runs; pass one run's directory or use read_runs")
    deadline = time.monotonic() + settle_s
    while True:
        run = _parse(file[0])
        if run.finished or time.monotonic() >= deadline:
            return run
        time.sleep(0.2)


def _parse(file: Path) -> OfflineRun:
    run = OfflineRun(file)
    for record in read_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.run_id, run.project, run.group = info.run_id, info.project, info.run_group
            run.job_type, run.name = info.job_type, info.display_name
            run.config.update(_items(info.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
            for item in record.summary.remove:
                run.summary.pop(_path(item)[0], None)
        elif kind == "metric":
            run.metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "artifact":
            run.artifacts.append(_artifact(record.artifact))
        elif kind == "files":
            run.files.extend(item.path for item in record.files.files)
        elif kind == "exit":
            run.finished = True
    return run


def run_files(path: str | Path) -> list[Path]:
    """The `.wandb` files at `path`: the file itself, or every one below a directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LTCError(f"{path} does not exist; pass a .wandb file or a directory holding offline runs")
    return sorted(path.rglob("*.wandb"))


def read_runs(path: str | Path) -> list[OfflineRun]:
    """Every offline run below `path` (e.g. a run directory's `wandb/`), oldest first."""
    return [read_run(file) for file in run_files(path)]


def read_history(path: str | Path) -> list[dict]:
    """The history rows (one dict per `log` call, names as logged) of the one run at `path`."""
    return read_run(path).history
