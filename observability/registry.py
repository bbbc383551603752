"""Every ``paywatch_*`` series, in one registry per process.

Why this shape: a Bytewax process runs several worker threads that all
execute the same steps, so the series are module-level objects shared by the
whole process (prometheus-client counters are thread-safe), served by one
HTTP server per process (:mod:`observability.server`). Prometheus scrapes
every process (pod) and sums. Labels stay bounded (:class:`LabelGuard`):
source type, outcome, reason, alert type/state, sink, region, partition;
never a user or a transaction.

====================================================  =========================================
``paywatch_events_total{source,outcome}``             events in; outcome valid / invalid / late
``paywatch_dead_letters_total{reason}``               dead-letter records by reason
``paywatch_alerts_total{type,state}``                 alert records by type and state
``paywatch_window_results_total``                     per-region minute records emitted
``paywatch_region_failure_ratio{region}``             failure ratio (0-1) of the last closed minute
``paywatch_region_minute_events{region}``             events in the last closed minute
``paywatch_last_window_end_timestamp_seconds``        end of the last closed minute (event time)
``paywatch_newest_event_timestamp_seconds{source}``   newest event time seen (unix seconds)
``paywatch_event_time_lag_seconds{source}``           wall clock minus the newest event time
``paywatch_kafka_lag_records{partition}``             high watermark - next offset (per partition)
``paywatch_kinesis_millis_behind_latest{shard}``      MillisBehindLatest of the last GetRecords
``paywatch_sink_requests_total{sink}``                requests sent to a sink's API / file
``paywatch_sink_records_total{sink}``                 records written by a sink
``paywatch_sink_retries_total{sink}``                 retried requests (transient errors)
``paywatch_sink_errors_total{sink,kind}``             errors; kind transient / permanent
``paywatch_sink_request_seconds{sink}``               request latency histogram
``paywatch_sink_buffered{partition}``                 records a sink partition holds while its API is slow
``paywatch_ready``                                    1 once this process's dataflow is running
``paywatch_metrics_server_start_timestamp_seconds``   when this endpoint started
====================================================  =========================================

Source lag comes from :mod:`observability.source_lag` (the sources report it
there) and is read at scrape time, so a stalled source still shows its last
lag. The event-time lag is also computed at scrape time: if events stop
arriving, the lag keeps growing, which is what an operator wants to see.

A new series goes here, with a line in the table above; the code that
updates it goes in :mod:`observability.metrics` (the flow's steps) or
:mod:`observability.sink_metrics` (sinks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily

from observability import source_lag

#: Paywatch's own registry. Not prometheus-client's global one, because
#: Bytewax's dataflow API (``BYTEWAX_DATAFLOW_API_ENABLED``) serves the
#: global registry too, and a series must be scraped from one place only.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: Sink latency buckets: a local file write (ms) up to a throttled AWS call (s).
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Most distinct values one free-text label may take before the rest count as "other".
LABEL_VALUE_LIMIT = 64

EVENTS = Counter(
    "paywatch_events",
    "Events read, by source type and outcome (valid, invalid, late).",
    ["source", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "paywatch_dead_letters", "Dead-letter records, by machine-readable reason.", ["reason"], registry=REGISTRY
)
ALERTS = Counter(
    "paywatch_alerts", "Alert records emitted, by alert type and state.", ["type", "state"], registry=REGISTRY
)
WINDOW_RESULTS = Counter("paywatch_window_results", "Per-region minute records emitted.", registry=REGISTRY)
REGION_FAILURE_RATIO = Gauge(
    "paywatch_region_failure_ratio",
    "Failure ratio (0-1) of the last closed minute, per region.",
    ["region"],
    registry=REGISTRY,
)
REGION_MINUTE_EVENTS = Gauge(
    "paywatch_region_minute_events", "Events in the last closed minute, per region.", ["region"], registry=REGISTRY
)
LAST_WINDOW_END = Gauge(
    "paywatch_last_window_end_timestamp_seconds",
    "Event-time end of the last closed minute (unix seconds).",
    registry=REGISTRY,
)
SINK_REQUESTS = Counter("paywatch_sink_requests", "Requests sent by a sink.", ["sink"], registry=REGISTRY)
SINK_RECORDS = Counter("paywatch_sink_records", "Records written by a sink.", ["sink"], registry=REGISTRY)
SINK_RETRIES = Counter(
    "paywatch_sink_retries", "Sink requests retried after a transient error.", ["sink"], registry=REGISTRY
)
SINK_ERRORS = Counter(
    "paywatch_sink_errors",
    "Sink errors; kind is transient (retried) or permanent.",
    ["sink", "kind"],
    registry=REGISTRY,
)
SINK_LATENCY = Histogram(
    "paywatch_sink_request_seconds",
    "Latency of one sink request, retries excluded.",
    ["sink"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
READY = Gauge("paywatch_ready", "1 once this process's dataflow is running.", registry=REGISTRY)
# Live reference data (observability/reference_metrics.py records them).
RULES_INFO = Gauge(
    "paywatch_rules_info",
    "1 for the rules version (short hash) in force in this process.",
    ["version"],
    registry=REGISTRY,
)
RULES_RELOAD_FAILURES = Counter(
    "paywatch_rules_reload_failures",
    "Rules documents refused (invalid, or changing a restart-only rule) or unreadable at reload.",
    registry=REGISTRY,
)
MERCHANTS = Gauge("paywatch_reference_merchants", "Merchants in the loaded merchant table.", registry=REGISTRY)
MERCHANT_LOAD_FAILURES = Counter(
    "paywatch_reference_load_failures",
    "Merchant table reads that failed (the last good copy stays in force).",
    registry=REGISTRY,
)
MERCHANTS_LOADED_AT = Gauge(
    "paywatch_reference_loaded_timestamp_seconds",
    "Wall-clock time of the last successful merchant table load.",
    registry=REGISTRY,
)
SERVER_START = Gauge(
    "paywatch_metrics_server_start_timestamp_seconds",
    "When this process's metrics endpoint started (unix seconds).",
    registry=REGISTRY,
)
SINK_BUFFERED = Gauge(
    "paywatch_sink_buffered", "Records waiting in a sink partition's buffer.", ["partition"], registry=REGISTRY
)


class LabelGuard:
    """Caps the distinct values of a label so a bug upstream cannot explode cardinality."""

    def __init__(self, limit: int = LABEL_VALUE_LIMIT) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        text = str(value) if value is not None else "unknown"
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(text)
                return text
        return "other"


class _EventTimeCollector:
    """Newest event time per source type, and the lag computed at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: dict[str, float] = {}

    def update(self, source: str, newest: float) -> None:
        with self._lock:
            if newest > self._newest.get(source, float("-inf")):
                self._newest[source] = newest

    def reset(self) -> None:
        with self._lock:
            self._newest.clear()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            newest = dict(self._newest)
        now = time.time()
        ts = GaugeMetricFamily(
            "paywatch_newest_event_timestamp_seconds",
            "Newest event time seen by this process (unix seconds).",
            labels=["source"],
        )
        lag = GaugeMetricFamily(
            "paywatch_event_time_lag_seconds",
            "Wall clock minus the newest event time seen by this process.",
            labels=["source"],
        )
        for source, value in sorted(newest.items()):
            ts.add_metric([source], value)
            lag.add_metric([source], now - value)
        yield ts
        yield lag


class _SourceLagCollector:
    """Reads :mod:`observability.source_lag` at scrape time; one family per unit."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        kafka = GaugeMetricFamily(
            "paywatch_kafka_lag_records",
            "Kafka high watermark minus the next offset to read, per partition.",
            labels=["partition"],
        )
        kinesis = GaugeMetricFamily(
            "paywatch_kinesis_millis_behind_latest",
            "Kinesis MillisBehindLatest of the last GetRecords, per shard.",
            labels=["shard"],
        )
        for (source, partition), value in sorted(source_lag.lags().items()):
            if source == "kafka":
                kafka.add_metric([partition], value)
            elif source == "kinesis":
                kinesis.add_metric([partition], value)
        yield kafka
        yield kinesis


EVENT_TIME = _EventTimeCollector()
REGISTRY.register(EVENT_TIME)
REGISTRY.register(_SourceLagCollector())
