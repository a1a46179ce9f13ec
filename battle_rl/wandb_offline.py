"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) without a server or an account.

An offline run keeps everything it would upload (the run's group, name, tags, the resolved
config, the logged history) in one ``.wandb`` file until ``wandb sync``. That file is a
LevelDB-style log of protobuf ``Record`` messages: a 7-byte header (``:W&B``, magic 0xBEE1,
version 0), then 32 KiB blocks of chunks, each with a 7-byte header (crc32 4, length 2,
type 1: full / first / middle / last). The records are parsed with W&B's own protobuf classes.

Used by ``battle_rl.report`` (training curves and the W&B group of each job) and the tests.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_record_bytes(path: str | Path):
    """Yield the serialized ``Record`` messages of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What one offline run recorded."""

    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # one dict per logged step
    exit_code: int | None = None                       # None: the run did not finish


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse a ``.wandb`` file, or the ``offline-run-*`` folder holding one."""
    from wandb.proto import wandb_internal_pb2 as pb  # heavy: only when asked

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise FileNotFoundError(f"no .wandb file in {path}")
        path = files[0]
    run = OfflineRun(path=path)
    for raw in iter_record_bytes(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.name, run.tags = r.display_name, list(r.tags)
            run.config.update({_item_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({_item_key(i): json.loads(i.value_json)
                               for i in rec.config.update})
        elif kind == "history":
            run.history.append({_item_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def find_offline_runs(run_dir: str | Path) -> list[Path]:
    """The ``offline-run-*`` folders under one job's output folder."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*"))
