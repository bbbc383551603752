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

import gc
import sys
from typing import Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource

from config import Settings, SettingsError, load_settings
from connectors.sinks.outputs import Outputs, build_outputs
from connectors.sources import build_source
from connectors.sources.parsing import ParsingSource
from observability import metrics
from operators.parse import ChunkParser
from operators.steps import region_windows, split_chunks, user_risk

GC_THRESHOLD = 10_000


def _keyed_by(step_id: str, stream: Stream[dict], field: str) -> Stream[tuple[str, dict]]:
    """Key records by one of their fields, so each sink partition gets a stable share."""
    return op.map(step_id, stream, lambda record: (str(record[field]), record))


def _keyed_minutes(step_id: str, minutes: Stream[list[dict]]) -> Stream[tuple[str, list[dict]]]:
    """Key each non-empty minute by its window start; an empty minute has nothing to write."""
    return op.filter_map(step_id, minutes, lambda records: (records[0]["window_start"], records) if records else None)


def build_flow(
    settings: Settings, source: Optional[FixedPartitionedSource] = None, outputs: Optional[Outputs] = None
) -> Dataflow:
    """Build the Paywatch dataflow.

    :arg settings: validated settings.
    :arg source: overrides the configured source (tests use TestingSource
        with :class:`~operators.records.RawChunk` items); any partitioned
        source of raw chunks, parsed where it is read.
    :arg outputs: overrides the configured sinks.
    """
    metrics.start_server(settings.metrics.port)
    source = source if source is not None else build_source(settings)
    outputs = outputs if outputs is not None else build_outputs(settings)
    lines = any(getattr(sink, "wants_transaction_lines", True) for sink in outputs.transactions)
    parser = ChunkParser(settings, transaction_lines=lines)
    lateness = settings.windows.allowed_lateness_seconds

    flow = Dataflow("paywatch")
    parsed = op.input("source", flow, ParsingSource(source, parser.for_partition))
    chunks = split_chunks("chunks", parsed)
    regions = region_windows("region_windows", chunks.region_summaries, settings)
    user_alerts = user_risk("user_risk", chunks.user_batches, settings)
    alerts = op.merge("alerts", chunks.fraud_alerts, regions.region_alerts, user_alerts)

    op.inspect("count_chunks", parsed, lambda _step, chunk: metrics.record_parsed_chunk(chunk, lateness))
    op.inspect("count_alerts", alerts, lambda _step, alert: metrics.record_alerts((alert,)))
    op.inspect("count_minutes", regions.minutes, lambda _step, records: metrics.record_minutes(records))
    op.output("readiness", regions.minutes, metrics.ReadinessSink())

    routes = (
        ("alerts", _keyed_by("key_alerts", alerts, "key"), outputs.alerts),
        ("metrics", _keyed_minutes("key_minutes", regions.minutes), outputs.metrics),
        ("transactions", chunks.transactions, outputs.transactions),
        ("dead_letters", _keyed_by("key_dead_letters", chunks.dead_letters, "source"), outputs.dead_letters),
    )
    for name, stream, sinks in routes:
        for index, sink in enumerate(sinks):
            op.output(f"{name}_out_{index}_{type(sink).__name__.lower()}", stream, sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    """``bytewax.run`` looks up ``flow``: build it from settings on demand.

    Lazy so that importing this module (tests, tools) does not read the
    environment or open sources.
    """
    if name != "flow":
        raise AttributeError(name)
    try:
        settings = load_settings()
        flow = build_flow(settings)
    except (SettingsError, FileNotFoundError) as exc:
        sys.exit(f"paywatch: {exc}")
    sys.stderr.write(_banner(settings))
    _tune_garbage_collector()
    return flow


def _tune_garbage_collector() -> None:
    """Collect less often in a process that allocates a chunk's objects per batch.

    With the default threshold (700 allocations) CPython runs a young
    collection every few dozen events, and each one walks every container
    still alive. Freezing what start-up built (modules, settings, the flow)
    takes it out of every later collection; a higher first threshold trades a
    few MB of young garbage for about a tenth of the collections. Reference
    counting still frees almost everything at once: only cycles wait.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def _banner(settings: Settings) -> str:
    """One line for whoever started the flow: what it reads and where results go."""
    source = settings.source.type
    if source == "simulator":
        sim = settings.simulator
        pace = f"{sim.rate:g} events/s" if sim.rate else "as fast as possible"
        amount = f"{sim.events} events" if sim.events else "endless"
        source = f"simulator (scenario {sim.scenario}, {pace}, {amount})"
    elif source == "file":
        source = f"file {settings.source.path}"
    outputs = ["stdout"] if any(settings.sinks.stdout.model_dump().values()) else []
    if settings.sinks.jsonl.dir:
        outputs.append(f"jsonl:{settings.sinks.jsonl.dir}")
    lateness = settings.windows.allowed_lateness_seconds
    return (
        f"paywatch: reading {source}; writing to {', '.join(outputs) or 'nothing'}. "
        f"Per-minute metrics appear once a minute of event time has closed (+{lateness:g}s lateness).\n"
    )
