"""Kafka source: one Bytewax partition per topic-partition, offsets in recovery.

Modelled on Bytewax's own Kafka connector, on kafka-python instead of
confluent-kafka: no consumer group (``group_id=None``, no auto-commit);
each partition gets its own consumer, ``assign``-ed and ``seek``-ed to the
offset held in the recovery snapshot, so a restart with the same recovery
directory continues exactly after the last snapshotted offset. The snapshot
is the NEXT offset to read (last offset + 1, or past a transaction marker the
client stepped over), kept by :mod:`connectors.kafka.partition` for both clients.

Bounded mode reads up to each partition's end as it was when the partition
was built, then emits a ``done`` chunk and stops. The end is the high
watermark carried by a fetch response (``consumer.highwater``), not
``end_offsets()``: Tansu answers ListOffsets(latest) with the base offset of
the last record batch, which would lose the tail. The same
high watermark places ``starting_offset: latest`` exactly at the log end.

Null values (tombstones) become ``b""`` lines, which the parse step
dead-letters with their topic/partition/offset.

Chunk size (:mod:`connectors.sources.chunk_size`): a chunk that came back
full, or that leaves the partition behind its high watermark, doubles the
next one up to ``max_batch_size``; one that finds the partition caught up
goes back to ``batch_size``. A chunk is polled in steps of 2,000 records
(:mod:`connectors.kafka.steps`).
"""

from __future__ import annotations

import logging
import time
from operator import attrgetter
from typing import Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from kafka import KafkaConsumer, TopicPartition

from config.settings import KafkaSourceSettings
from connectors.kafka.client_config import consumer_config
from connectors.kafka.partition import KafkaPartitionBase, part_name
from connectors.sources.chunk_size import ChunkSize
from operators.records import RawChunk

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_SECONDS = 30.0
_OFFSET, _VALUE = attrgetter("offset"), attrgetter("value")

__all__ = ["KafkaPartition", "KafkaSource", "parse_part_name", "part_name"]


def parse_part_name(name: str) -> TopicPartition:
    topic, _, index = name[len("kafka:") :].rpartition("/")
    return TopicPartition(topic, int(index))


class KafkaSource(FixedPartitionedSource[RawChunk, int]):
    """Reads the configured topic(s) as :class:`RawChunk` batches.

    :arg settings: ``source.kafka`` settings.
    :arg batch_size: most records per chunk (one ``poll``) when caught up.
    :arg idle_seconds: a partition without data this long reports idle.
    :arg max_batch_size: most records per chunk while behind (default ``batch_size``: no growth).
    """

    def __init__(
        self, settings: KafkaSourceSettings, batch_size: int, idle_seconds: float, max_batch_size: Optional[int] = None
    ) -> None:
        self._settings = settings
        self._batch_size = batch_size
        self._max_batch_size = max_batch_size or batch_size
        self._idle_seconds = idle_seconds
        self._parts: Optional[list[str]] = None

    def list_parts(self) -> list[str]:
        """One partition name per topic-partition.

        :raises ValueError: a configured topic does not exist.
        """
        if self._parts is None:
            found = self._topic_partitions()
            parts: list[str] = []
            for topic in self._settings.topics:
                if not found.get(topic):
                    raise ValueError(f"source.kafka.topic: topic {topic!r} does not exist on {self._settings.brokers}")
                parts.extend(part_name(topic, i) for i in sorted(found[topic]))
            self._parts = parts
        return list(self._parts)

    def _topic_partitions(self) -> dict[str, set[int]]:
        """Partition indexes of each configured topic (empty: no such topic), from the brokers' metadata."""
        consumer = KafkaConsumer(**consumer_config(self._settings, self._batch_size))
        try:
            return {topic: set(consumer.partitions_for_topic(topic) or ()) for topic in self._settings.topics}
        finally:
            consumer.close()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> StatefulSourcePartition:
        return KafkaPartition(
            self._settings,
            parse_part_name(for_part),
            n_parts=len(self.list_parts()),
            resume_offset=resume_state,
            sizes=ChunkSize(self._batch_size, self._max_batch_size),
            idle_seconds=self._idle_seconds,
        )


class KafkaPartition(KafkaPartitionBase):
    """One topic-partition on kafka-python; its snapshot is the next offset to read."""

    def __init__(
        self,
        settings: KafkaSourceSettings,
        tp: TopicPartition,
        n_parts: int,
        resume_offset: Optional[int],
        sizes: ChunkSize,
        idle_seconds: float,
    ) -> None:
        super().__init__(tp.topic, tp.partition, n_parts, sizes, idle_seconds, _OFFSET, _VALUE)
        self._tp = tp
        self._bounded = settings.bounded
        self._consumer = KafkaConsumer(**consumer_config(settings, sizes.size))
        try:
            self._consumer.assign([tp])
            self._offset = self._start(settings, resume_offset)
        except BaseException:
            self._consumer.close()
            raise
        logger.info(
            "kafka %s: reading from offset %d%s",
            self._origin,
            self._offset,
            f" up to {self._end}" if self._bounded else "",
        )

    def _start(self, settings: KafkaSourceSettings, resume_offset: Optional[int]) -> int:
        consumer, tp = self._consumer, self._tp
        if resume_offset is not None:
            consumer.seek(tp, resume_offset)
            offset = resume_offset
        elif settings.starting_offset == "earliest":
            consumer.seek_to_beginning(tp)
            offset = consumer.position(tp)
        else:
            # Close to the end (exactly on Kafka, the last batch's base on
            # Tansu); the high watermark below puts it exactly there.
            consumer.seek_to_end(tp)
            offset = consumer.position(tp)
        if self._bounded or (resume_offset is None and settings.starting_offset == "latest"):
            highwater = self._probe_highwater()
            if resume_offset is None and settings.starting_offset == "latest":
                offset = highwater
                self._pending = []
                consumer.seek(tp, offset)
            if self._bounded:
                self._end = highwater
        return offset

    def _probe_highwater(self) -> int:
        """Fetch until a response carries the high watermark; keep what it read."""
        deadline = time.monotonic() + _PROBE_TIMEOUT_SECONDS
        while True:
            records = self._consumer.poll(timeout_ms=100, max_records=self._sizes.size)
            self._pending.extend(records.get(self._tp, ()))
            highwater = self._consumer.highwater(self._tp)
            if highwater is not None:
                return highwater
            if time.monotonic() > deadline:
                raise TimeoutError(f"kafka {self._origin}: no fetch response within {_PROBE_TIMEOUT_SECONDS}s")

    def _fetch(self, count: int) -> list:
        return self._consumer.poll(timeout_ms=0, max_records=count).get(self._tp, [])

    def _highwater(self) -> Optional[int]:
        return self._consumer.highwater(self._tp)

    def _position(self) -> Optional[int]:
        return self._consumer.position(self._tp, timeout_ms=0)

    def _close_client(self) -> None:
        self._consumer.close()
