"""JSONL replay: a path or a glob, one partition per file, exact resume.

The resume state is the byte offset of the next line plus its line number,
so a restarted flow continues exactly after the last snapshotted line and
dead letters still name the right line.

A file being read always has more lines ready than one chunk, so chunks
double from ``batch_size`` up to ``max_batch_size``
(:mod:`connectors.sources.chunk_size`); the file's end is the first chunk
shorter than asked for.
"""

from __future__ import annotations

import glob
import itertools
import os
from pathlib import Path
from typing import Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.sources.chunk_size import ChunkSize
from operators.records import RawChunk

_PREFIX = "file:"


def matching_files(pattern: str) -> list[str]:
    """Files named by ``pattern`` (a path or a glob), sorted for a stable partition list."""
    if any(ch in pattern for ch in "*?["):
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    return [pattern] if os.path.isfile(pattern) else []


def _without_newlines(lines: list[bytes]) -> list[bytes]:
    """The lines without their ``\\n`` (a ``\\r`` of CRLF stays: JSON whitespace).

    Chunks carry payloads without terminators, so that a newline in a chunk
    always means one inside a payload (see ``operators/events/decoder.py``).
    One join and one split in C instead of a strip per line.
    """
    if not lines:
        return lines
    joined = b"".join(lines)
    if joined.endswith(b"\n"):
        joined = joined[:-1]
    return joined.split(b"\n")


class _FilePartition(StatefulSourcePartition[RawChunk, tuple[int, int]]):
    def __init__(self, part: str, path: str, n_parts: int, sizes: ChunkSize, resume: Optional[tuple[int, int]]):
        self._part = part
        self._path = path
        self._n_parts = n_parts
        self._sizes = sizes
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        offset, self._next_line = resume if resume is not None else (0, 1)
        self._file.seek(offset)
        self._finished = False

    def next_batch(self) -> list[RawChunk]:
        if self._finished:
            raise StopIteration()
        asked = self._sizes.size
        lines = list(itertools.islice(self._file, asked))
        first = self._next_line
        self._next_line += len(lines)
        done = len(lines) < asked
        self._finished = done
        self._sizes.update(behind=not done)
        return [
            RawChunk(self._part, self._n_parts, _without_newlines(lines), self._path, first, done=done, skip_blank=True)
        ]

    def snapshot(self) -> tuple[int, int]:
        return (self._file.tell(), self._next_line)

    def close(self) -> None:
        self._file.close()


class JsonlFileSource(FixedPartitionedSource[RawChunk, tuple[int, int]]):
    """Reads JSONL files; the flow ends by itself when every file is read.

    :arg pattern: a file path or a glob (``data/*.jsonl``).
    :arg batch_size: lines in a file's first chunk.
    :arg max_batch_size: lines per chunk once grown (default ``batch_size``: no growth).
    :raises FileNotFoundError: naming ``source.path`` when nothing matches.
    """

    def __init__(self, pattern: str, batch_size: int = 1000, max_batch_size: Optional[int] = None) -> None:
        self._files = matching_files(pattern)
        if not self._files:
            raise FileNotFoundError(f"source.path: no file matches {pattern!r}")
        self._batch_size = batch_size
        self._max_batch_size = max_batch_size or batch_size

    def list_parts(self) -> list[str]:
        return [_PREFIX + str(Path(p)) for p in self._files]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple[int, int]]) -> _FilePartition:
        path = for_part[len(_PREFIX) :]
        sizes = ChunkSize(self._batch_size, self._max_batch_size)
        return _FilePartition(for_part, path, len(self._files), sizes, resume_state)
