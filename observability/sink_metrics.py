"""What a sink records: requests, records, retries, errors, latency, buffer.

Every sink uses the shared ``paywatch_sink_*`` series of
:mod:`observability.registry` through one :class:`SinkSeries` per sink
partition (label ``sink`` = the sink name, e.g. ``dynamodb-alerts``; never a
record key). Sink dead letters are counted in
``paywatch_dead_letters_total{reason}`` like the flow's own.
``paywatch_sink_buffered{partition}`` is the records a buffered sink
partition holds while its API is slow or down.
"""

from __future__ import annotations

from observability.registry import (
    DEAD_LETTERS,
    SINK_BUFFERED,
    SINK_ERRORS,
    SINK_LATENCY,
    SINK_RECORDS,
    SINK_REQUESTS,
    SINK_RETRIES,
    LabelGuard,
)

_sink_label = LabelGuard()


class SinkSeries:
    """The series of one sink partition, bound once so a request costs no label lookups."""

    def __init__(self, sink: str, partition: str) -> None:
        self.sink = sink
        self.buffered = SINK_BUFFERED.labels(partition=partition)
        self._records = SINK_RECORDS.labels(sink)
        self._requests = SINK_REQUESTS.labels(sink)
        self._latency = SINK_LATENCY.labels(sink)
        label = _sink_label(sink)
        self._retries = SINK_RETRIES.labels(label)
        self._transient = SINK_ERRORS.labels(label, "transient")
        self._permanent = SINK_ERRORS.labels(label, "permanent")

    def request(self, seconds: float, delivered: int) -> None:
        """One answered request that acknowledged ``delivered`` records."""
        self._requests.inc()
        self._latency.observe(seconds)
        if delivered:
            self._records.inc(delivered)

    def error(self, transient: bool) -> None:
        """One failed request: transient ones are retried (and counted as a retry), permanent ones are not."""
        if transient:
            self._transient.inc()
            self._retries.inc()
        else:
            self._permanent.inc()

    def dead_letters(self, reason: str, count: int) -> None:
        """``count`` records the sink gave up on, by dead-letter reason."""
        DEAD_LETTERS.labels(reason).inc(count)
