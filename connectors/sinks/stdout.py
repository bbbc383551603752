"""Human-readable lines on stdout for local runs: alerts, minutes, dead letters."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition


def format_alert(alert: dict[str, Any]) -> str:
    return f"ALERT {alert['state']:<8} {alert['type']:<17} {alert['key']} at {alert['event_time']}: {alert['message']}"


def format_minute(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    partial = " (partial: the flow saw only part of this minute)" if records[0].get("partial") else ""
    lines = [f"MINUTE {records[0]['window_start']}{partial}"]
    for r in records:
        lines.append(
            f"  {r['region']:<12} count={r['count']:<7} failures={r['failures']:<6} "
            f"failure_rate={r['failure_rate']:.2f}% fraud_suspected={r['fraud_suspected']}"
        )
    return "\n".join(lines)


def format_dead_letter(record: dict[str, Any]) -> str:
    field = f"({record['field']})" if record.get("field") else ""
    return (
        f"DEAD-LETTER {record['reason']}{field} {record.get('source')}:{record.get('position')}: {record.get('detail')}"
    )


_FORMATS: dict[str, Callable[[Any], str]] = {
    "alert": format_alert,
    "metrics": format_minute,
    "dead_letter": format_dead_letter,
}


class _StdoutPartition(StatelessSinkPartition[tuple[str, Any]]):
    def __init__(self, kind: str) -> None:
        self._format = _FORMATS[kind]

    def write_batch(self, items: list[tuple[str, Any]]) -> None:
        text = "\n".join(filter(None, (self._format(value) for _key, value in items)))
        if text:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()


class StdoutSink(DynamicSink[tuple[str, Any]]):
    """Prints one kind of record (``alert``, ``metrics`` or ``dead_letter``)."""

    kind = "stdout"
    """Its key under ``sinks`` in the settings: names its flow step (``dataflow.py``)."""

    def __init__(self, kind: str) -> None:
        if kind not in _FORMATS:
            raise ValueError(f"unknown stdout record kind {kind!r}")
        self._kind = kind

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StdoutPartition:
        return _StdoutPartition(self._kind)
