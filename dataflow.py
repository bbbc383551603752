"""Paywatch: the whole detection pipeline as one Bytewax dataflow.

``python -m bytewax.run dataflow`` builds the flow from settings
(config/defaults.yaml, ``PAYWATCH_CONFIG``, ``PAYWATCH__A__B`` overrides)::

    source -> parse (in the source partition that read the chunk: validate,
              enrich, score, pre-aggregate, judge lateness)
      |-- dead letters ---------------------------------> dead-letter sinks
      |-- scored transactions (JSONL blob per chunk) ---> transaction sinks
      |-- FRAUD_SUSPECTED alerts ------------------------> alerts
      |-- per (region, second) counts + watermark -> region windows
      |        -> per-minute metrics -> metric sinks; FAILURE_RATE /
      |           TRAFFIC_DROP incidents -> alerts
      |-- per user-shard event lists -> user risk -> alerts
    alerts -> alert sinks

Items are chunks (one per source batch) until the streams become small
(alerts, minutes), which keeps Bytewax's per-item cost off the per-event
budget. See docs/architecture.md.
"""

from __future__ import annotations

import copy
import gc
import sys
import time
from typing import Any, Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource
from bytewax.operators import StatefulBatchLogic

from config import Settings, SettingsError, load_settings
from connectors.sinks.outputs import Outputs, build_outputs
from connectors.sources import build_source
from connectors.sources.parsing import ParsingSource
from observability import metrics
from operators.parse import ChunkParser, ParsedChunk
from operators.records import TransactionBatch
from operators.region_windows import METRICS, RegionSummary, RegionWindows, RegionWindowState
from operators.user_risk import UserRisk

REGIONS_KEY = "regions"
GC_THRESHOLD = 10_000


class _RegionWindowsLogic(StatefulBatchLogic[RegionSummary, tuple[str, Any], RegionWindowState]):
    """Bytewax shell around :class:`RegionWindows` (all regions under one key)."""

    def __init__(self, settings: Settings, state: Optional[RegionWindowState]) -> None:
        self.windows = RegionWindows(
            settings.rules.failure_rate,
            settings.rules.traffic_drop,
            settings.source.idle_partition_seconds,
            state,
        )

    def on_batch(self, values: list[RegionSummary]) -> tuple[list[tuple[str, Any]], bool]:
        return self.windows.add(values, time.time()), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[str, Any]], bool]:
        return self.windows.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> RegionWindowState:
        return copy.deepcopy(self.windows.state)


class _UserRiskLogic(StatefulBatchLogic[list, dict, bytes]):
    """Bytewax shell around :class:`UserRisk`; discards a shard with no users left."""

    def __init__(self, settings: Settings, state: Optional[bytes]) -> None:
        self.risk = UserRisk(settings.rules, settings.users, state)

    def on_batch(self, values: list[list]) -> tuple[list[dict], bool]:
        out: list[dict] = []
        for events in values:
            out.extend(self.risk.process(events))
        return out, len(self.risk) == 0

    def snapshot(self) -> bytes:
        return self.risk.snapshot()


def _region_summary(chunk: ParsedChunk) -> tuple[str, RegionSummary]:
    return REGIONS_KEY, RegionSummary(
        chunk.part, chunk.n_parts, chunk.watermark, chunk.done, chunk.idle, chunk.region_counts
    )


def _user_batches(chunk: ParsedChunk) -> list[tuple[str, list]]:
    return [(str(shard), events) for shard, events in chunk.user_events.items()]


def _transactions(chunk: ParsedChunk) -> tuple[str, TransactionBatch]:
    return chunk.part, TransactionBatch(chunk.transactions, chunk.n_transactions, chunk.flagged)


def _keyed_by(stream: Stream, step_id: str, field: str) -> Stream:
    return op.map(step_id, stream, lambda record: (str(record[field]), record))


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

    flow = Dataflow("paywatch")
    lines = any(getattr(sink, "wants_transaction_lines", True) for sink in outputs.transactions)
    parser = ChunkParser(settings, transaction_lines=lines)
    parsed_chunks = op.input("source", flow, ParsingSource(source, parser.for_partition))
    lateness = settings.windows.allowed_lateness_seconds
    op.inspect("count_chunks", parsed_chunks, lambda _step, chunk: metrics.record_parsed_chunk(chunk, lateness))

    dead_letters = op.flat_map("dead_letters", parsed_chunks, lambda chunk: chunk.dead_letters)
    fraud_alerts = op.flat_map("fraud_alerts", parsed_chunks, lambda chunk: chunk.alerts)
    transactions = op.map("transaction_batches", parsed_chunks, _transactions)

    summaries = op.map("region_summaries", parsed_chunks, _region_summary)
    region_out = op.stateful_batch("region_windows", summaries, lambda state: _RegionWindowsLogic(settings, state))
    region_items = op.map("drop_region_key", region_out, lambda kv: kv[1])
    split = op.branch("metrics_or_alerts", region_items, lambda kind_item: kind_item[0] == METRICS)
    minutes = op.map("minute_records", split.trues, lambda kind_item: kind_item[1])
    region_alerts = op.map("region_alerts", split.falses, lambda kind_item: kind_item[1])

    user_batches = op.flat_map("user_shards", parsed_chunks, _user_batches)
    user_alerts = op.map(
        "drop_shard_key",
        op.stateful_batch("user_risk", user_batches, lambda state: _UserRiskLogic(settings, state)),
        lambda kv: kv[1],
    )

    alerts = op.merge("alerts", fraud_alerts, region_alerts, user_alerts)
    op.inspect("count_alerts", alerts, lambda _step, alert: metrics.record_alerts((alert,)))
    op.inspect("count_minutes", minutes, lambda _step, records: metrics.record_minutes(records))
    op.output("readiness", minutes, metrics.ReadinessSink())
    keyed_alerts = _keyed_by(alerts, "key_alerts", "key")
    keyed_minutes = op.map(
        "key_minutes", op.filter("non_empty_minutes", minutes, bool), lambda recs: (recs[0]["window_start"], recs)
    )
    keyed_dead = _keyed_by(dead_letters, "key_dead_letters", "source")
    keyed_transactions = op.filter("non_empty_batches", transactions, lambda kv: kv[1].count > 0)

    for stream, sinks, name in (
        (keyed_alerts, outputs.alerts, "alerts"),
        (keyed_minutes, outputs.metrics, "metrics"),
        (keyed_transactions, outputs.transactions, "transactions"),
        (keyed_dead, outputs.dead_letters, "dead_letters"),
    ):
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
