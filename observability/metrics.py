"""What the flow's steps record: events, dead letters, alerts, closed minutes.

All cheap, once per chunk or per small record, never per event; the series
themselves are defined in :mod:`observability.registry`. Sinks record their
requests through :class:`observability.sink_metrics.SinkSeries` instead.

- :func:`record_parsed_chunk` ``(chunk, lateness_seconds)`` on every
  :class:`~operators.parse.ParsedChunk` (or :func:`record_chunk` with the
  numbers), which also counts its dead letters by reason.
- :func:`record_dead_letters` ``(records)`` for dead letters produced
  elsewhere.
- :func:`record_alerts` ``(alerts)`` on alert records.
- :func:`record_minutes` ``(records)`` on each list of per-region minute
  records (sets the failure-ratio gauges; counts window results).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Optional

from observability.registry import (
    ALERTS,
    DEAD_LETTERS,
    EVENT_TIME,
    EVENTS,
    LAST_WINDOW_END,
    REGION_FAILURE_RATIO,
    REGION_MINUTE_EVENTS,
    WINDOW_RESULTS,
    LabelGuard,
)

_reason_label = LabelGuard()
_alert_label = LabelGuard()
_region_label = LabelGuard()


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
        EVENT_TIME.update(source, newest_event_time)


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
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
