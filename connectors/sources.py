"""Builds the configured source. Every source emits :class:`RawChunk` items."""

from __future__ import annotations

from bytewax.inputs import Source

from config.settings import Settings


def build_source(settings: Settings) -> Source:
    kind = settings.source.type
    batch_size = settings.source.batch_size
    if kind == "simulator":
        from connectors.simulator import SimulatorSource

        return SimulatorSource(settings.simulator, batch_size)
    if kind == "file":
        from connectors.file_source import JsonlFileSource

        return JsonlFileSource(settings.source.path, batch_size)
    raise ValueError(f"source.type: {kind!r} has no connector")
