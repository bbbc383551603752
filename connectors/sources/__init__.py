"""Builds the configured source. Every source emits :class:`RawChunk` items."""

from __future__ import annotations

from bytewax.inputs import FixedPartitionedSource

from config.settings import Settings


def build_source(settings: Settings) -> FixedPartitionedSource:
    kind = settings.source.type
    batch_size = settings.source.batch_size
    if kind == "simulator":
        from connectors.simulator.source import SimulatorSource

        return SimulatorSource(settings.simulator, batch_size)
    if kind == "file":
        from connectors.sources.file import JsonlFileSource

        return JsonlFileSource(settings.source.path, batch_size)
    if kind == "kafka":
        if settings.source.kafka.client == "confluent-kafka":
            from connectors.kafka.confluent_source import ConfluentKafkaSource

            return ConfluentKafkaSource(settings.source.kafka, batch_size, settings.source.idle_partition_seconds)
        from connectors.kafka.source import KafkaSource

        return KafkaSource(settings.source.kafka, batch_size, settings.source.idle_partition_seconds)
    if kind == "kinesis":
        from connectors.kinesis.source import KinesisSource

        return KinesisSource(settings.source.kinesis, settings.aws, batch_size, settings.source.idle_partition_seconds)
    raise ValueError(f"source.type: {kind!r} has no connector")
