"""Builds the configured source. Every source emits :class:`RawChunk` items."""

from __future__ import annotations

from bytewax.inputs import FixedPartitionedSource

from config.settings import Settings


def build_source(settings: Settings) -> FixedPartitionedSource:
    kind = settings.source.type
    batch_size, most = settings.source.batch_size, settings.source.max_batch_size
    idle = settings.source.idle_partition_seconds
    if kind == "simulator":
        from connectors.simulator.source import SimulatorSource

        return SimulatorSource(settings.simulator, batch_size, most)
    if kind == "file":
        from connectors.sources.file import JsonlFileSource

        return JsonlFileSource(settings.source.path, batch_size, most)
    if kind == "kafka":
        if settings.source.kafka.client == "confluent-kafka":
            from connectors.kafka.confluent_source import ConfluentKafkaSource

            return ConfluentKafkaSource(settings.source.kafka, batch_size, idle, max_batch_size=most)
        from connectors.kafka.source import KafkaSource

        return KafkaSource(settings.source.kafka, batch_size, idle, max_batch_size=most)
    if kind == "kinesis":
        from connectors.kinesis.source import KinesisSource

        return KinesisSource(settings.source.kinesis, settings.aws, batch_size, idle, max_batch_size=most)
    raise ValueError(f"source.type: {kind!r} has no connector")
