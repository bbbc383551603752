"""One Kafka topic-partition as a Bytewax source partition: what both clients share.

kafka-python (:mod:`connectors.kafka.source`) and confluent-kafka
(:mod:`connectors.kafka.confluent_source`) differ only in how they fetch
records, read the high watermark and report the consumer's position. Chunk
taking, idle and done chunks, the lag gauge, chunk growth and, above all, the
offset that goes into the recovery snapshot live here, once, so that a flow
can switch clients and resume from the same snapshot.

The snapshot is the next offset to read. After each read it is the offset
after the last record taken or, when the client's position is further on,
that position (capped at a bounded read's end): a position beyond the last
record means the client stepped over offsets that hold no record to hand out
(a transaction's commit or abort marker, a compacted-away or aborted record).
So a transactional topic's trailing marker does not keep the lag gauge at 1
for ever, and a resume does not fetch that marker again. Before this, a read
that found only such offsets left the snapshot on the marker, and only a
bounded read moved it (to the end).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Optional

from bytewax.inputs import StatefulSourcePartition

from connectors.kafka.steps import take
from connectors.sources.chunk_size import ChunkSize
from observability.source_lag import clear_lag, set_lag
from operators.records import RawChunk

logger = logging.getLogger(__name__)

_IDLE_EMIT_SECONDS = 1.0
# Pause after an empty poll so an idle partition does not spin a core;
# short enough not to matter for alert latency.
_EMPTY_POLL_PAUSE = timedelta(milliseconds=20)


def part_name(topic: str, partition: int) -> str:
    """The Bytewax partition name of a topic-partition, the same for both clients."""
    return f"kafka:{topic}/{partition}"


class KafkaPartitionBase(StatefulSourcePartition[RawChunk, int], ABC):
    """A topic-partition read in chunks; its snapshot is the next offset to read.

    A subclass builds its client, sets ``_offset`` (and ``_end`` in bounded
    mode, ``_pending`` for what a start-up probe read) and supplies the four
    client calls below.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        n_parts: int,
        sizes: ChunkSize,
        idle_seconds: float,
        offset_of: Callable[[Any], Any],
        value_of: Callable[[Any], Optional[bytes]],
    ) -> None:
        """``offset_of`` and ``value_of`` read a record's offset and value (C-level accessors where possible)."""
        self._offset_of, self._value_of = offset_of, value_of
        self._name = part_name(topic, partition)
        self._origin = f"{topic}/{partition}"
        self._n_parts = n_parts
        self._sizes = sizes
        self._idle_seconds = idle_seconds
        self._offset = 0
        self._end: Optional[int] = None
        self._pending: list[Any] = []
        self._finished = False
        self._awake: Optional[datetime] = None
        self._last_data = time.monotonic()
        self._last_idle_emit = 0.0

    @abstractmethod
    def _fetch(self, count: int) -> list[Any]:
        """At most ``count`` records already fetched, in offset order, without waiting."""

    @abstractmethod
    def _highwater(self) -> Optional[int]:
        """The high watermark the last fetch response carried; None before the first one."""

    @abstractmethod
    def _position(self) -> Optional[int]:
        """The offset the client reads next; None while it has none."""

    @abstractmethod
    def _close_client(self) -> None:
        """Close the client."""

    def next_batch(self) -> list[RawChunk]:
        if self._finished:
            raise StopIteration()
        if self._end is not None and self._offset >= self._end:
            self._finished = True
            set_lag("kafka", self._origin, 0)
            logger.info("kafka %s: bounded read done at offset %d", self._origin, self._offset)
            return [RawChunk(self._name, self._n_parts, [], self._origin, self._offset, done=True)]
        asked = self._sizes.size
        pending, self._pending = self._pending, []
        taken = take(self._fetch, pending, asked, self._offset, self._end, self._offset_of, self._value_of)
        self._offset = self._next_offset(taken.next_offset)
        highwater = self._highwater()
        lag = max(0, highwater - self._offset) if highwater is not None else 0
        if highwater is not None:
            set_lag("kafka", self._origin, lag)
        now = time.monotonic()
        if not taken.lines:
            self._sizes.update(behind=False)
            if self._end is not None and self._offset >= self._end:
                return []  # only markers or compacted-away offsets were left; the next call is done
            self._awake = datetime.now(UTC) + _EMPTY_POLL_PAUSE
            if now - self._last_data >= self._idle_seconds and now - self._last_idle_emit >= _IDLE_EMIT_SECONDS:
                self._last_idle_emit = now
                return [RawChunk(self._name, self._n_parts, [], self._origin, self._offset, idle=True)]
            return []
        self._awake = None
        self._last_data = now
        self._sizes.update(behind=len(taken.lines) >= asked or lag > 0)
        return [RawChunk(self._name, self._n_parts, taken.lines, self._origin, taken.first, taken.positions)]

    def _next_offset(self, after_taken: int) -> int:
        """The snapshot after a read: past the last record taken, or the client's position if further on.

        Every record the client handed out was taken or lay outside
        ``[offset, end)``, so a position beyond ``after_taken`` only stepped
        over offsets without a record to hand out; in bounded mode it is
        capped at the end, as records past the end were dropped unread.
        """
        position = self._position()
        if position is None or position <= after_taken:
            return after_taken
        return position if self._end is None else min(position, self._end)

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        clear_lag("kafka", self._origin)
        self._close_client()
