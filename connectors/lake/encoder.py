"""Raw/enriched files encoded while they are open, a row group at a time, off the worker thread.

A file used to be built and encoded whole when it finished: at a roll point,
or at the end of a bounded input, where the flow then waited for all of it.
Now each open file has a :class:`FileEncoder`: every segment the roller
hands it goes to the zone's encoding thread at once, where its table is built
(Arrow's JSON reader, UTF-8 check) while the flow reads on, and every
``sinks.lake.row_group_rows`` rows become one Parquet row group (zstd).
Arrow releases the GIL for both. When the file finishes only the last row
group's encoding and the footer are left: at the end of a bounded input the
flow waits for those alone. (Tables were first built only when a row group
was full, so the end of the input waited for up to a whole group's JSON too:
0.068 s of a 0.9 s run against 0.028 s now, docs/performance.md.)

Row groups hold exactly ``row_group_rows`` rows (the last one the rest), counted
from the file's first row, so they depend only on the file's rows, not on
chunk boundaries or on when the encoding thread ran: a replay, or a file
encoded again after a resume (inline, from the rows in the snapshot), writes
an equivalent object. The encoded bytes are never in a snapshot: the rows
are, and they are encoded again after a resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Executor, Future
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.lake.rolling import Segment
from connectors.lake.tables import parquet_options, unified_table


def segment_table(segment: Segment) -> pa.Table:
    """A segment's rows as a table.

    A whole source is built for this call only: an open file holds its
    sources for minutes and must not hold their tables too. A source cut in
    parts (at a roll point, at an hour's end) is read by two files, so its
    table is built once and kept on the source until the later file drops it:
    at most a chunk's table or two per open file.
    """
    source, index = segment
    if index is None:
        return source.build()
    return source.table().take(pa.array(index))


class FileEncoder:
    """One open file's Parquet, written a row group at a time by ``executor`` (inline without one).

    :meth:`add` and :meth:`finish` are called on the worker thread and only
    queue work; :meth:`result` (the delivery's sender) waits for the bytes.
    The executor must run tasks one at a time, in order (one thread).

    Between row groups the encoding thread holds the built tables of the rows
    not yet written: at most a row group's worth per open file.
    """

    def __init__(self, compression: str, row_group_rows: int, executor: Optional[Executor] = None) -> None:
        self._compression = compression
        self._group = row_group_rows
        self._executor = executor
        self._done: Optional[Future[bytes]] = None
        # Used only by the encoding thread:
        self._out: Optional[pa.BufferOutputStream] = None
        self._writer: Optional[pq.ParquetWriter] = None
        self._built: list[pa.Table] = []  # tables of the rows not yet in a row group
        self._built_rows = 0
        self._error: Optional[BaseException] = None
        self.row_groups = 0  # written so far

    def add(self, segment: Segment) -> None:
        """The file's next rows, to the encoding thread at once."""
        self._submit([segment], final=False)

    def finish(self) -> None:
        """No more rows: the last row group and the footer go to the encoding thread."""
        if self._done is None:
            self._done = self._submit([], final=True)

    def result(self) -> bytes:
        """The whole file (waits for the encoding thread; raises what encoding raised)."""
        self.finish()
        assert self._done is not None
        return self._done.result()

    def _submit(self, segments: list[Segment], final: bool) -> Future[bytes]:
        if self._executor is not None:
            return self._executor.submit(self._encode, segments, final)
        done: Future[bytes] = Future()
        try:
            done.set_result(self._encode(segments, final))
        except Exception as exc:  # noqa: BLE001 - handed to result(), like the executor does
            done.set_exception(exc)
        return done

    # -- encoding thread -----------------------------------------------------------

    def _encode(self, segments: list[Segment], final: bool) -> bytes:
        if self._error is not None:
            raise self._error  # an earlier row group failed: the file cannot be completed
        try:
            return self._write(segments, final)
        except BaseException as exc:
            self._error = exc
            raise

    def _write(self, segments: list[Segment], final: bool) -> bytes:
        for segment in segments:
            table = segment_table(segment)
            self._built.append(table)
            self._built_rows += table.num_rows
        if self._built_rows >= self._group or (final and self._built_rows):
            table = unified_table(self._built)
            rows = table.num_rows
            whole = rows if final else rows - rows % self._group
            for start in range(0, whole, self._group):
                self._write_group(table.slice(start, min(self._group, whole - start)))
            self._built = [table.slice(whole)] if whole < rows else []
            self._built_rows = rows - whole
        if not final:
            return b""
        if self._writer is None:
            raise ValueError("a lake file without rows")
        self._writer.close()
        assert self._out is not None
        data = self._out.getvalue().to_pybytes()
        self._writer = self._out = None
        return data

    def _write_group(self, table: pa.Table) -> None:
        if self._writer is None:
            self._out = pa.BufferOutputStream()
            self._writer = pq.ParquetWriter(
                self._out, table.schema, **parquet_options(table.column_names, self._compression)
            )
        self._writer.write_table(table, row_group_size=self._group)
        self.row_groups += 1


def encode_segments(segments: Iterable[Segment], compression: str, row_group_rows: int) -> bytes:
    """The same file a :class:`FileEncoder` writes, encoded here and now (a file restored from a snapshot)."""
    encoder = FileEncoder(compression, row_group_rows)
    for segment in segments:
        encoder.add(segment)
    return encoder.result()
