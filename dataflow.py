"""Paywatch: the whole detection pipeline as one Bytewax dataflow.

``python -m bytewax.run dataflow`` builds the flow from settings
(config/defaults.yaml, ``PAYWATCH_CONFIG``, ``PAYWATCH__A__B`` overrides)::

    source (parses each chunk in the partition that read it: validate,
            enrich, score, pre-aggregate, judge lateness)
      -> split_chunks
           |-- dead_letters ------------------------------> dead-letter sinks
           |-- transactions (JSONL blob per chunk) -------> transaction sinks
           |-- fraud_alerts (FRAUD_SUSPECTED) ------------> alerts
           |-- region_summaries (per region-second counts + watermark)
           |     -> region_windows
           |          |-- minutes ------------------------> metric sinks
           |          |-- region_alerts (FAILURE_RATE,
           |                            TRAFFIC_DROP) ----> alerts
           |-- user_batches (per user shard) -> user_risk -> alerts
    alerts -> alert sinks

Each arrow is a named stream: the composite steps (:mod:`operators.steps`)
return small dataclasses of streams, the way Bytewax's windowing operators do.
Items are chunks (one per source batch) until the streams become small
(alerts, minutes), which keeps Bytewax's per-item cost off the per-event
budget. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import Sink

import cli.native_threads  # noqa: F401 - before numpy loads (see the module)
from config import Settings
from config.loader import hash_key
from connectors.reference.loader import ReferenceLoader
from connectors.sinks.outputs import Outputs, build_outputs
from connectors.sources import build_source
from connectors.sources.parsing import ParsingSource
from observability import metrics, readiness, server
from operators.parse import ChunkParser, ParsedChunk
from operators.privacy import Redactor
from operators.records import LakeChunk
from operators.steps import region_windows, split_chunks, user_risk


def _keyed_by(step_id: str, stream: Stream[dict], field: str) -> Stream[tuple[str, dict]]:
    """Key records by one of their fields, so each sink partition gets a stable share."""
    return op.map(step_id, stream, lambda record: (str(record[field]), record))


def _keyed_minutes(step_id: str, minutes: Stream[list[dict]]) -> Stream[tuple[str, list[dict]]]:
    """Key each non-empty minute by its window start; an empty minute has nothing to write."""
    return op.filter_map(step_id, minutes, lambda records: (records[0]["window_start"], records) if records else None)


def _lake_chunk(chunk: ParsedChunk) -> Optional[tuple[str, LakeChunk]]:
    """The lake's share of a chunk, keyed by source partition (none for an empty or idle chunk)."""
    return (chunk.part, chunk.lake) if chunk.lake is not None and chunk.lake.lines else None


def build_flow(
    settings: Settings,
    source: Optional[FixedPartitionedSource] = None,
    outputs: Optional[Outputs] = None,
    reference: Optional[ReferenceLoader] = None,
) -> Dataflow:
    """Build the Paywatch dataflow.

    :arg settings: validated settings.
    :arg source: overrides the configured source (tests use TestingSource
        with :class:`~operators.records.RawChunk` items); any partitioned
        source of raw chunks, parsed where it is read.
    :arg outputs: overrides the configured sinks.
    :raises SettingsError: ``privacy.hash_fields`` set and no key in the environment.
    :arg reference: the loader of the rules file and merchant table (built
        from settings when None). Its first load runs here, before the first
        event; its thread keeps them current while the flow runs, and the
        operators read the version in force once per chunk or batch.
    :raises ~connectors.reference.loader.ReferenceStartError: the first load failed.
    """
    redactor = Redactor(settings.privacy, hash_key(settings))
    server.start_server(settings.metrics.port)
    loader = reference if reference is not None else ReferenceLoader(settings)
    live = loader.holder if loader.holder is not None else loader.load_initial()
    loader.start()
    # Operators start on the rules in force (a rules file may set window lengths).
    settings = settings.model_copy(update={"rules": live.current.rules})
    source = source if source is not None else build_source(settings)
    outputs = outputs if outputs is not None else build_outputs(settings)
    lines = any(getattr(sink, "wants_transaction_lines", True) for sink in outputs.transactions)
    parser = ChunkParser(settings, transaction_lines=lines, redactor=redactor, reference=live)
    lateness = settings.windows.allowed_lateness_seconds

    flow = Dataflow("paywatch")
    parsed = op.input("source", flow, ParsingSource(source, parser.for_partition))
    chunks = split_chunks("chunks", parsed)
    regions = region_windows("region_windows", chunks.region_summaries, settings, live)
    user_alerts = user_risk("user_risk", chunks.user_batches, settings, live)
    alerts = op.merge("alerts", chunks.fraud_alerts, regions.region_alerts, user_alerts)

    op.inspect("count_chunks", parsed, lambda _step, chunk: metrics.record_parsed_chunk(chunk, lateness))
    op.inspect("count_alerts", alerts, lambda _step, alert: metrics.record_alerts((alert,)))
    op.inspect("count_minutes", regions.minutes, lambda _step, records: metrics.record_minutes(records))
    op.output("readiness", regions.minutes, readiness.ReadinessSink())

    keyed_alerts = _keyed_by("key_alerts", alerts, "key")
    keyed_minutes = _keyed_minutes("key_minutes", regions.minutes)
    if outputs.lake:
        lake_chunks = op.filter_map("lake_chunks", parsed, _lake_chunk)
        lake_items = op.merge("lake_items", lake_chunks, keyed_alerts, keyed_minutes)
        for sink in outputs.lake:
            op.output("lake_out", lake_items, sink)
    routes = (
        ("alerts", keyed_alerts, outputs.alerts),
        ("metrics", keyed_minutes, outputs.metrics),
        ("transactions", chunks.transactions, outputs.transactions),
        ("dead_letters", _keyed_by("key_dead_letters", chunks.dead_letters, "source"), outputs.dead_letters),
    )
    for name, stream, sinks in routes:
        for sink in sinks:
            op.output(sink_step_id(name, sink), stream, sink)
    return flow


def sink_step_id(stream: str, sink: Sink) -> str:
    """The id of the step writing ``stream`` to ``sink``: the stream and the sink's kind.

    The sink's kind is its key under ``sinks`` in the settings
    (``metrics_to_jsonl``, ``alerts_to_dynamodb``), so turning one sink on or
    off leaves every other sink's recovery state under its own id. (Ids once
    came from list positions: turning the stdout sinks off moved the JSONL
    sinks' state to another sink.) At most one sink of a kind per stream.
    """
    return f"{stream}_to_{getattr(sink, 'kind', None) or type(sink).__name__.lower()}"


def __getattr__(name: str) -> Dataflow:
    """``bytewax.run`` looks up ``flow``: build it from settings on demand.

    Lazy so that importing this module (tests, tools) does not read the
    environment or open sources; start-up checks and the banner live in
    :mod:`cli.startup`.
    """
    if name != "flow":
        raise AttributeError(name)
    from cli.startup import start

    return start(build_flow)
