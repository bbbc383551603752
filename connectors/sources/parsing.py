"""Parse each chunk in the source partition that read it.

Parsing is the heaviest per-event step. As a keyed step (keyed by source
partition) it would run on whichever worker Bytewax's key hash picks, not
on the worker that read the partition: two files read by two processes
were parsed by one of them, and a second process added nothing. Parsing
inside the partition keeps the work where the bytes are, so the flow
scales with source partitions, and the partition's event-time state (its
high mark, see ``operators/events/partition_time.py``) is snapshotted
together with the source position it belongs to.

The wrapper does no I/O of its own: the inner source reads, the pure
:class:`~operators.parse.ChunkParser` parses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.events.partition_time import PartitionTime
from operators.parse import ChunkParser, ParsedChunk
from operators.state.snapshots import SnapshotFormat, unchanged

# (inner source's resume state, the partition's PartitionTime as a plain tuple)
ParsingState = tuple[Any, tuple[float, int, float]]


def _high_mark_to_partition_time(state: tuple[Any, Optional[float]]) -> ParsingState:
    """Version 1 kept the partition's highest event time alone (None before the first event)."""
    inner, max_ts = state
    high, ahead, ahead_min = PartitionTime.restore(max_ts)
    return inner, (high, ahead, ahead_min)


SOURCE_FORMAT = SnapshotFormat("source", 2, {0: unchanged, 1: _high_mark_to_partition_time})
"""Version 1 added the envelope around ``(inner position, max event time)``;
version 2 keeps the partition's event-time state (high mark, skew run) in
place of the max event time. The inner position is the source kind's own
(Kafka offset, Kinesis shard positions, file offset and line, simulator
index): a change to one of them bumps this version with a migration that
leaves the other kinds alone."""


class _ParsingPartition(StatefulSourcePartition[ParsedChunk, tuple]):
    def __init__(self, inner: StatefulSourcePartition, parser: ChunkParser, clock: PartitionTime) -> None:
        self._inner = inner
        self._parser = parser
        self._clock = clock

    def next_batch(self) -> list[ParsedChunk]:
        parsed = []
        for chunk in self._inner.next_batch():
            self._clock, out = self._parser.parse(self._clock, chunk)
            parsed.append(out)
        return parsed

    def next_awake(self) -> Optional[datetime]:
        return self._inner.next_awake()

    def snapshot(self) -> tuple:
        # A plain tuple: a snapshot must not depend on where a class lives.
        return SOURCE_FORMAT.save((self._inner.snapshot(), tuple(self._clock)))

    def close(self) -> None:
        self._inner.close()


class ParsingSource(FixedPartitionedSource[ParsedChunk, tuple]):
    """Wraps a source of :class:`~operators.records.RawChunk` items.

    :arg source: the partitioned source that reads.
    :arg make_parser: builds the parser of one partition
        (:meth:`~operators.parse.ChunkParser.for_partition`: per-chunk state
        of its own, the process's user and merchant caches shared).
    """

    snapshot_format = SOURCE_FORMAT

    def __init__(self, source: FixedPartitionedSource, make_parser: Callable[[], ChunkParser]) -> None:
        self._source = source
        self._make_parser = make_parser

    def list_parts(self) -> list[str]:
        return self._source.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]) -> _ParsingPartition:
        inner_state, clock = SOURCE_FORMAT.load(resume_state) if resume_state is not None else (None, None)
        inner = self._source.build_part(step_id, for_part, inner_state)
        return _ParsingPartition(inner, self._make_parser(), PartitionTime.restore(clock))
