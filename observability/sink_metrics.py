"""The AWS sinks' Prometheus series, on top of :mod:`observability.metrics`.

Requests, records, retries, errors and latency use the shared
``paywatch_sink_*`` series there (label ``sink`` = the sink name, e.g.
``dynamodb-alerts``; never a record key). Sink dead letters are counted in
``paywatch_dead_letters_total{reason}`` like the flow's own. One series is
added here because only a buffered sink has it: ``paywatch_sink_buffered``,
the records a sink partition holds while AWS is slow or down.
"""

from __future__ import annotations

from prometheus_client import Gauge

from observability import metrics

_BUFFERED = Gauge(
    "paywatch_sink_buffered", "Records waiting in a sink partition's buffer.", ["partition"], registry=metrics.REGISTRY
)


class SinkSeries:
    """The series of one sink partition."""

    def __init__(self, sink: str, partition: str) -> None:
        self.sink = sink
        self.buffered = _BUFFERED.labels(partition=partition)
        self._records = metrics.SINK_RECORDS.labels(sink)
        self._requests = metrics.SINK_REQUESTS.labels(sink)
        self._latency = metrics.SINK_LATENCY.labels(sink)

    def request(self, seconds: float, delivered: int) -> None:
        """One answered request that acknowledged ``delivered`` records."""
        self._requests.inc()
        self._latency.observe(seconds)
        if delivered:
            self._records.inc(delivered)

    def error(self, transient: bool) -> None:
        metrics.record_sink_error(self.sink, transient)
        if transient:
            metrics.record_sink_retry(self.sink)

    def dead_letters(self, reason: str, count: int) -> None:
        metrics.DEAD_LETTERS.labels(reason).inc(count)
