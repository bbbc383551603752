"""Source lag per partition, for the metrics exporter.

Paywatch's sources read without a consumer group (recovery owns the
positions), so broker-side lag tools see nothing; the sources report their
own lag here and the Prometheus exporter reads it.

- Kafka: offset lag = high watermark - next offset to read (messages).
- Kinesis: ``MillisBehindLatest`` of the last GetRecords (milliseconds).

The registry is process-wide (one per Bytewax process, shared by its worker
threads), keyed by ``(source, partition)``, e.g. ``("kafka", "payments/3")``
or ``("kinesis", "shardId-000000000001")``.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_lags: dict[tuple[str, str], float] = {}


def set_lag(source: str, partition: str, value: float) -> None:
    """Record the latest lag of one source partition."""
    with _lock:
        _lags[(source, partition)] = float(value)


def clear_lag(source: str, partition: str) -> None:
    """Forget a partition (closed shard, partition moved to another worker)."""
    with _lock:
        _lags.pop((source, partition), None)


def lags() -> dict[tuple[str, str], float]:
    """A copy of every reported lag: ``{(source, partition): value}``."""
    with _lock:
        return dict(_lags)
