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
import os
from pathlib import Path
from typing import BinaryIO, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.sources.chunk_size import ChunkSize
from operators.records import RawChunk

_PREFIX = "file:"


def matching_files(pattern: str) -> list[str]:
    """Files named by ``pattern`` (a path or a glob), sorted for a stable partition list."""
    if any(ch in pattern for ch in "*?["):
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    return [pattern] if os.path.isfile(pattern) else []


_READ_BYTES = 1 << 20
"""Bytes per read: a grown chunk (20,000 lines of ~250 bytes) takes a few reads."""


class _LineReader:
    """A file's lines without their ``\n`` (a ``\r`` of CRLF stays: JSON whitespace), read in blocks.

    Chunks carry payloads without terminators, so that a newline in a chunk
    always means one inside a payload (see ``operators/events/decoder.py``).
    A block is split in one C call; iterating the file line by line and then
    joining and splitting again to drop the terminators made every line twice.
    ``offset`` is the byte offset of the first line not yet taken: the resume point.
    """

    def __init__(self, file: BinaryIO, offset: int) -> None:
        self._file = file
        self.offset = offset
        self._lines: list[bytes] = []  # complete lines read, not yet taken
        self._partial = b""  # the bytes after the last newline read
        self._at_end = False
        self._unterminated = False  # the file's last line, held in _lines, has no newline

    def take(self, count: int) -> list[bytes]:
        """Up to ``count`` lines; fewer only at the end of the file."""
        while len(self._lines) < count and not self._at_end:
            block = self._file.read(_READ_BYTES)
            if not block:
                self._at_end = True
                if self._partial:
                    self._lines.append(self._partial)
                    self._partial = b""
                    self._unterminated = True
                break
            parts = (self._partial + block).split(b"\n")
            self._partial = parts.pop()
            self._lines += parts
        taken, self._lines = self._lines[:count], self._lines[count:]
        # Every line taken ended in a newline, but for a last one that had none.
        last_unterminated = self._unterminated and not self._lines and bool(taken)
        self.offset += sum(map(len, taken)) + len(taken) - last_unterminated
        if last_unterminated:
            self._unterminated = False
        return taken


class _FilePartition(StatefulSourcePartition[RawChunk, tuple[int, int]]):
    def __init__(self, part: str, path: str, n_parts: int, sizes: ChunkSize, resume: Optional[tuple[int, int]]):
        self._part = part
        self._path = path
        self._n_parts = n_parts
        self._sizes = sizes
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        offset, self._next_line = resume if resume is not None else (0, 1)
        self._file.seek(offset)
        self._reader = _LineReader(self._file, offset)
        self._finished = False

    def next_batch(self) -> list[RawChunk]:
        if self._finished:
            raise StopIteration()
        asked = self._sizes.size
        lines = self._reader.take(asked)
        first = self._next_line
        self._next_line += len(lines)
        done = len(lines) < asked
        self._finished = done
        self._sizes.update(behind=not done)
        return [RawChunk(self._part, self._n_parts, lines, self._path, first, done=done, skip_blank=True)]

    def snapshot(self) -> tuple[int, int]:
        return (self._reader.offset, self._next_line)

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
