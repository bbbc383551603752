"""Kafka source on confluent-kafka (librdkafka): the fast path.

kafka-python decodes every record in pure Python (10-15 us each), which in
one process caps the flow at the serial bound 1/(1/consumer + 1/pipeline).
librdkafka fetches and decodes in C threads outside the GIL; what is left in
Python is one ``consume`` call per chunk and C-level passes over its
messages: ``map(Message.error, ...)`` to find errors, ``map(Message.value,
...)`` for the lines, and the offsets of the first and last message only
(the chunk's positions are implied when they are contiguous, the usual case;
compacted or transactional topics take the per-message path). Selected with
``source.kafka.client: confluent-kafka``.

Chunk size (:mod:`connectors.sources.chunk_size`): a ``consume`` that came
back full, or that leaves the partition behind its high watermark, doubles
the next ``num_messages`` up to ``max_batch_size``; one that finds the
partition caught up goes back to ``batch_size``.

The partition names (``kafka:topic/N``) and the snapshot (the next offset to
read) are the same as :mod:`connectors.kafka.source`'s, so a flow can switch
clients and resume from the same recovery directory. Bounded mode and
``starting_offset: latest`` use the high watermark that fetch responses
carry (``get_watermark_offsets(cached=True)``), not ListOffsets: Tansu
answers ListOffsets(latest) with the base offset of the last batch, which
would lose the tail.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from config.settings import KafkaSourceSettings
from connectors.kafka.client_config import librdkafka_config
from connectors.kafka.partition import KafkaPartitionBase
from connectors.kafka.source import KafkaSource, parse_part_name
from connectors.sources.chunk_size import ChunkSize

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_SECONDS = 30.0
# One wait of the probe: consume() waits out its whole timeout unless a full
# chunk arrives, so a short step ends the probe soon after the first fetch
# response (a 100 ms step cost 100 ms per partition at every bounded start).
_PROBE_STEP_SECONDS = 0.005
_METADATA_TIMEOUT_SECONDS = 30.0


def consumer_config(settings: KafkaSourceSettings) -> dict[str, Any]:
    """A group-less consumer: recovery, not the broker, owns offsets."""
    config = librdkafka_config(settings)
    config.update(
        {
            # librdkafka wants a group id even for assign(); nothing is committed to it.
            "group.id": f"{settings.client_id}-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "max.partition.fetch.bytes": settings.max_partition_fetch_bytes,
            "check.crcs": True,
            # The same records as kafka-python: set, not librdkafka's default.
            "isolation.level": settings.isolation_level,
        }
    )
    return config


class ConfluentKafkaSource(KafkaSource):
    """Reads the configured topic(s) as :class:`RawChunk` batches with librdkafka.

    Partition names, their listing and the snapshot are :class:`KafkaSource`'s;
    only the client differs.
    """

    def _topic_partitions(self) -> dict[str, set[int]]:
        consumer = Consumer(consumer_config(self._settings))
        try:
            found: dict[str, set[int]] = {}
            for topic in self._settings.topics:
                meta = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_SECONDS).topics.get(topic)
                found[topic] = set(meta.partitions) if meta is not None and meta.error is None else set()
            return found
        finally:
            consumer.close()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> StatefulSourcePartition:
        tp = parse_part_name(for_part)
        return ConfluentKafkaPartition(
            self._settings,
            tp.topic,
            tp.partition,
            n_parts=len(self.list_parts()),
            resume_offset=resume_state,
            sizes=ChunkSize(self._batch_size, self._max_batch_size),
            idle_seconds=self._idle_seconds,
        )


class ConfluentKafkaPartition(KafkaPartitionBase):
    """One topic-partition on librdkafka; its snapshot is the next offset to read."""

    def __init__(
        self,
        settings: KafkaSourceSettings,
        topic: str,
        partition: int,
        n_parts: int,
        resume_offset: Optional[int],
        sizes: ChunkSize,
        idle_seconds: float,
    ) -> None:
        super().__init__(topic, partition, n_parts, sizes, idle_seconds, Message.offset, Message.value)
        self._topic, self._partition = topic, partition
        self._tp = TopicPartition(topic, partition)
        self._consumer = Consumer(consumer_config(settings))
        try:
            self._offset = self._start(settings, resume_offset)
        except BaseException:
            self._consumer.close()
            raise
        logger.info(
            "kafka %s: reading from offset %d%s (confluent-kafka)",
            self._origin,
            self._offset,
            f" up to {self._end}" if self._end is not None else "",
        )

    def _start(self, settings: KafkaSourceSettings, resume_offset: Optional[int]) -> int:
        tp = TopicPartition(self._topic, self._partition)
        if resume_offset is not None:
            start = resume_offset
        else:
            # An explicit offset: librdkafka resolves OFFSET_BEGINNING with a
            # backed-off query that costs half a second per partition. The
            # log start from ListOffsets(earliest) is right on Tansu too.
            start, _ = self._consumer.get_watermark_offsets(tp, timeout=_METADATA_TIMEOUT_SECONDS)
        self._consumer.assign([TopicPartition(self._topic, self._partition, start)])
        latest = resume_offset is None and settings.starting_offset == "latest"
        if settings.bounded or latest:
            highwater = self._probe_highwater()
            if latest:
                self._pending = []
                self._consumer.seek(TopicPartition(self._topic, self._partition, highwater))
                start = highwater
            if settings.bounded:
                self._end = highwater
        return start

    def _highwater(self) -> Optional[int]:
        _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        return None if high is None or high < 0 else high

    def _probe_highwater(self) -> int:
        """Fetch until a response carries the high watermark; keep what it read."""
        deadline = time.monotonic() + _PROBE_TIMEOUT_SECONDS
        while True:
            self._pending.extend(self._consume(self._sizes.size, timeout=_PROBE_STEP_SECONDS))
            highwater = self._highwater()
            if highwater is not None:
                return highwater
            if time.monotonic() > deadline:
                raise TimeoutError(f"kafka {self._origin}: no fetch response within {_PROBE_TIMEOUT_SECONDS}s")

    def _consume(self, count: int, timeout: float) -> list[Any]:
        messages = self._consumer.consume(count, timeout)
        # One C-level pass: a KafkaError is always true, None (no error) false.
        if not any(map(Message.error, messages)):
            return messages
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise KafkaException(error)
                logger.warning("kafka %s: %s", self._origin, error)
        return good

    def _fetch(self, count: int) -> list[Any]:
        return self._consume(count, timeout=0)

    def _position(self) -> Optional[int]:
        # librdkafka answers OFFSET_INVALID (negative) until a message or marker has been consumed.
        position = self._consumer.position([self._tp])[0].offset
        return position if position >= 0 else None

    def _close_client(self) -> None:
        self._consumer.close()
