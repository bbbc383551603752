"""Prometheus metrics and health endpoints, one HTTP server per process.

Why this shape: a Bytewax process runs several worker threads that all
execute the same steps, so the metrics are module-level objects shared by
the whole process (prometheus-client counters are thread-safe) and the
server is started once per process, whatever the number of workers or of
``build_flow`` calls. Prometheus scrapes every process (pod) and sums.
Labels stay bounded: source type, outcome, reason, alert type/state, sink,
region, partition; never a user or a transaction.

Every name starts with ``paywatch_``:

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
``paywatch_sink_errors_total{sink,kind}``             errors; kind transient / permanent / unhandled
``paywatch_sink_request_seconds{sink}``               request latency histogram
``paywatch_ready``                                    1 once this process's dataflow is running
``paywatch_metrics_server_start_timestamp_seconds``   when this endpoint started
====================================================  =========================================

Source lag comes from :mod:`observability.source_lag` (the sources report it
there) and is read at scrape time, so a stalled source still shows its
last lag. The event-time lag is also computed at scrape time: if events
stop arriving, the lag keeps growing, which is what an operator wants to see.

What the flow calls (all cheap, once per chunk or per small record, never
per event):

- :func:`start_server` ``(settings.metrics.port)`` when the flow is built;
  ``None`` leaves metrics off; a second call is a no-op.
- :func:`record_parsed_chunk` ``(chunk, lateness_seconds)`` on every
  :class:`~operators.parse.ParsedChunk` (or :func:`record_chunk` with the
  numbers), which also counts its dead letters by reason.
- :func:`record_dead_letters` ``(records)`` for dead letters produced
  elsewhere (a sink's permanent failures).
- :func:`record_alerts` ``(alerts)`` on alert records.
- :func:`record_minutes` ``(records)`` on each list of per-region minute
  records (sets the failure-ratio gauges; counts window results).
- :func:`observe_sink` ``(sink, records)`` around one sink request;
  :func:`record_sink_retry` / :func:`record_sink_error` inside the retry loop.
- :class:`ReadinessSink`: attach it with ``op.output`` to any stream; Bytewax
  builds it on every worker once the cluster has formed and the resume
  point is known, which is when ``/readyz`` starts answering 200.

Endpoints: ``/metrics`` (Prometheus text format), ``/healthz`` (liveness:
the process answers), ``/readyz`` (readiness: the dataflow is running).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

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
    "Sink errors; kind is transient, permanent or unhandled.",
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
SERVER_START = Gauge(
    "paywatch_metrics_server_start_timestamp_seconds",
    "When this process's metrics endpoint started (unix seconds).",
    registry=REGISTRY,
)


class _LabelGuard:
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


_reason_label = _LabelGuard()
_alert_label = _LabelGuard()
_region_label = _LabelGuard()
_sink_label = _LabelGuard()


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
        from observability import source_lag

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


_event_time = _EventTimeCollector()
REGISTRY.register(_event_time)
REGISTRY.register(_SourceLagCollector())


def source_type(part: str) -> str:
    """``kafka:payments/3`` -> ``kafka``: the bounded label for a source partition."""
    return part.split(":", 1)[0] or "unknown"


def record_chunk(source: str, valid: int, invalid: int, late: int, newest_event_time: Optional[float]) -> None:
    """Count one parsed chunk's events.

    :arg source: the source type (``file``, ``kafka``, ``kinesis``, ``simulator``).
    :arg newest_event_time: the newest event time accepted so far on the
        chunk's partition (unix seconds), or None before the first one.
    """
    if valid:
        EVENTS.labels(source, "valid").inc(valid)
    if invalid:
        EVENTS.labels(source, "invalid").inc(invalid)
    if late:
        EVENTS.labels(source, "late").inc(late)
    if newest_event_time is not None:
        _event_time.update(source, newest_event_time)


def record_parsed_chunk(chunk: Any, lateness_seconds: float) -> None:
    """Count a :class:`~operators.parse.ParsedChunk`: events by outcome and dead letters by reason.

    The newest event time is the chunk's watermark plus the allowed
    lateness (the parser keeps ``watermark = newest - lateness``).
    """
    dead = chunk.dead_letters
    newest = None if chunk.watermark is None else chunk.watermark + lateness_seconds
    record_chunk(source_type(chunk.part), chunk.n_transactions, len(dead) - chunk.n_late, chunk.n_late, newest)
    if dead:
        record_dead_letters(dead)


def record_dead_letters(records: Iterable[Mapping[str, Any]]) -> None:
    """Count dead-letter records by their ``reason``."""
    counts: dict[str, int] = {}
    for record in records:
        reason = _reason_label(record.get("reason"))
        counts[reason] = counts.get(reason, 0) + 1
    for reason, n in counts.items():
        DEAD_LETTERS.labels(reason).inc(n)


def record_alerts(alerts: Iterable[Mapping[str, Any]]) -> None:
    """Count alert records by ``type`` and ``state``."""
    for alert in alerts:
        ALERTS.labels(_alert_label(alert.get("type")), _alert_label(alert.get("state"))).inc()


def record_windows(n: int) -> None:
    """Count ``n`` window results (per-region minute records)."""
    if n:
        WINDOW_RESULTS.inc(n)


def record_minutes(records: Iterable[Mapping[str, Any]]) -> None:
    """Publish one closed minute: failure ratio and volume per region.

    :arg records: the per-region records of one minute, as
        :mod:`operators.region_windows` emits them (``region``, ``count``,
        ``failures``, ``window_end``).
    """
    n = 0
    latest_end: Optional[float] = None
    for record in records:
        n += 1
        count = int(record.get("count") or 0)
        failures = int(record.get("failures") or 0)
        region = _region_label(record.get("region"))
        REGION_MINUTE_EVENTS.labels(region).set(count)
        REGION_FAILURE_RATIO.labels(region).set(failures / count if count else 0.0)
        end = _parse_end(record.get("window_end"))
        if end is not None and (latest_end is None or end > latest_end):
            latest_end = end
    record_windows(n)
    if latest_end is not None:
        LAST_WINDOW_END.set(latest_end)


def _parse_end(value: Any) -> Optional[float]:
    from datetime import datetime

    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


@dataclass
class SinkRequest:
    """Handle yielded by :func:`observe_sink`; set ``records`` if it differs from the estimate."""

    sink: str
    records: int
    started: float = field(default_factory=time.perf_counter)


@contextmanager
def observe_sink(sink: str, records: int = 0) -> Iterator[SinkRequest]:
    """Time one sink request and count it.

    On normal exit the request and ``request.records`` are counted; an
    exception escaping the block counts as ``kind="unhandled"`` and is
    re-raised. The latency is observed either way. Use
    :func:`record_sink_retry` and :func:`record_sink_error` for errors the
    sink handles itself.
    """
    label = _sink_label(sink)
    request = SinkRequest(label, records)
    SINK_REQUESTS.labels(label).inc()
    try:
        yield request
    except BaseException:
        SINK_ERRORS.labels(label, "unhandled").inc()
        raise
    else:
        if request.records:
            SINK_RECORDS.labels(label).inc(request.records)
    finally:
        SINK_LATENCY.labels(label).observe(time.perf_counter() - request.started)


def record_sink_retry(sink: str, n: int = 1) -> None:
    """Count ``n`` retried requests of ``sink``."""
    SINK_RETRIES.labels(_sink_label(sink)).inc(n)


def record_sink_error(sink: str, transient: bool, n: int = 1) -> None:
    """Count ``n`` errors of ``sink``: transient (will be retried) or permanent (dead-lettered)."""
    SINK_ERRORS.labels(_sink_label(sink), "transient" if transient else "permanent").inc(n)


# -- health and the HTTP server --------------------------------------------------

_ready = threading.Event()
_server_lock = threading.Lock()
_server: Optional[ThreadingHTTPServer] = None


def mark_ready() -> None:
    """The dataflow runs in this process: ``/readyz`` answers 200 from now on."""
    if not _ready.is_set():
        _ready.set()
        READY.set(1)


def is_ready() -> bool:
    return _ready.is_set()


class _ReadyPartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        """Writes nothing: the sink exists only to be built."""


class ReadinessSink(DynamicSink[Any]):
    """A sink that writes nothing and marks the process ready when built.

    Bytewax builds dynamic sinks on every worker after the cluster has
    formed and the resume point has been read from the recovery store,
    i.e. when this process is really running the dataflow.
    """

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReadyPartition:
        mark_ready()
        return _ReadyPartition()


class _Handler(BaseHTTPRequestHandler):
    server_version = "paywatch-metrics"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            if _ready.is_set():
                self._send(200, b"ready\n")
            else:
                self._send(503, b"dataflow not running yet\n")
        else:
            self._send(404, b"not found; try /metrics, /healthz or /readyz\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        """Scrapes and probes every few seconds would flood the log; say nothing."""


def start_server(port: Optional[int], host: str = "0.0.0.0") -> Optional[int]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` in a daemon thread.

    Once per process: later calls return the port already serving. Port 0
    picks a free port (tests).

    :arg port: ``settings.metrics.port``; None leaves metrics off.
    :returns: the port serving, or None when off.
    :raises OSError: the port is taken (``metrics.port``: give each process
        on one host its own, e.g. ``PAYWATCH__METRICS__PORT``).
    """
    global _server
    if port is None:
        return None
    with _server_lock:
        if _server is None:
            try:
                server = ThreadingHTTPServer((host, port), _Handler)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"metrics.port {port}: cannot listen ({exc.strerror}); give each process on one "
                    "host its own port, e.g. PAYWATCH__METRICS__PORT",
                ) from None
            server.daemon_threads = True
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="paywatch-metrics", daemon=True
            )
            thread.start()
            SERVER_START.set(time.time())
            _server = server
            logger.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
        return _server.server_address[1]


def stop_server() -> None:
    """Stop the server (tests); the metrics keep their values."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.shutdown()
            _server.server_close()
            _server = None
