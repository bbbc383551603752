"""JSONL output files that survive a crash without duplicates.

Follows Bytewax's own ``FileSink``: the file offset is the partition's
snapshot and a resume truncates the file to it, so lines written before a
crash are kept and the replay after the last snapshot does not repeat them.
Unlike ``DirSink`` it writes bytes in one call per batch and fsyncs only at
snapshots (once per epoch), not on every batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional
from zlib import crc32

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.shutdown import flush_on_stop
from operators.records import TransactionBatch
from operators.state.snapshots import SnapshotFormat, unchanged

JSONL_FORMAT = SnapshotFormat("jsonl_sink", 1, {0: unchanged})
"""The file offset of the partition; version 1 added the envelope."""


def encode_records(items: list[Any]) -> bytes:
    """JSONL bytes for a batch of sink items (records, lists of records, transaction batches)."""
    dumps = orjson.dumps
    parts: list[bytes] = []
    for item in items:
        if type(item) is TransactionBatch:
            parts.append(item.jsonl)
        elif type(item) is list:
            parts.extend(dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in item)
        else:
            parts.append(dumps(item, option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(parts)


class _JsonlPartition(StatefulSinkPartition[Any, tuple]):
    def __init__(self, path: Path, resume_offset: Optional[int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 - closed in close()
        self._file.seek(resume_offset or 0)
        self._file.truncate()
        flush_on_stop(self)

    def write_batch(self, values: list[Any]) -> None:
        self._file.write(encode_records(values))

    def flush_on_stop(self, deadline: float) -> None:
        if not self._file.closed:
            self._file.flush()

    def snapshot(self) -> tuple:
        self._file.flush()
        os.fsync(self._file.fileno())
        return JSONL_FORMAT.save(self._file.tell())

    def close(self) -> None:
        self._file.flush()
        self._file.close()


class JsonlSink(FixedPartitionedSink[Any, tuple]):
    """Writes ``{name}-{i}.jsonl`` files in ``directory``; items routed by key.

    Each file is written by exactly one worker, so processes never share a
    file. Every run without a recovery snapshot starts the files empty.
    """

    kind = "jsonl"
    """Its key under ``sinks`` in the settings: names its flow step (``dataflow.py``)."""

    snapshot_format = JSONL_FORMAT

    def __init__(self, directory: str | os.PathLike[str], name: str, files: int = 1) -> None:
        self._dir = Path(directory)
        self._name = name
        self._files = files

    def list_parts(self) -> list[str]:
        return [f"{self._name}-{i}.jsonl" for i in range(self._files)]

    def part_fn(self, item_key: str) -> int:
        return crc32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]) -> _JsonlPartition:
        offset: Optional[int] = JSONL_FORMAT.load(resume_state) if resume_state is not None else None
        return _JsonlPartition(self._dir / for_part, offset)
