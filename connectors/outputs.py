"""Which sinks receive which stream, built from settings.

Every sink receives ``(key, item)`` pairs so that partitioned sinks
(files, DynamoDB) can route by key and dynamic sinks simply ignore it:

- alerts: key = alert["key"]; item = alert record (operators/alerts.py)
- metrics: key = window_start (ISO); item = list of per-region records of
  one minute (operators/region_windows.py ``_minute_records``)
- transactions: key = source partition; item = :class:`TransactionBatch`
- dead_letters: key = source; item = dead-letter record (operators/parse.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bytewax.outputs import Sink

from config.settings import Settings


@dataclass(slots=True)
class TransactionBatch:
    """The scored transactions of one chunk.

    :ivar jsonl: every valid transaction as JSONL (input fields + category,
        fraud_score, fraud_status, processed_at), one line each.
    :ivar count: number of lines in ``jsonl``.
    :ivar flagged: the REVIEW_REQUIRED / FRAUD_SUSPECTED ones as dicts.
    """

    jsonl: bytes
    count: int
    flagged: list


@dataclass
class Outputs:
    alerts: list[Sink] = field(default_factory=list)
    metrics: list[Sink] = field(default_factory=list)
    transactions: list[Sink] = field(default_factory=list)
    dead_letters: list[Sink] = field(default_factory=list)


def build_outputs(settings: Settings) -> Outputs:
    """Sinks for the configured outputs; AWS sinks only when enabled."""
    from connectors.jsonl_sink import JsonlSink
    from connectors.stdout_sink import StdoutSink

    outputs = Outputs()
    stdout = settings.sinks.stdout
    if stdout.alerts:
        outputs.alerts.append(StdoutSink("alert"))
    if stdout.metrics:
        outputs.metrics.append(StdoutSink("metrics"))
    if stdout.dead_letters:
        outputs.dead_letters.append(StdoutSink("dead_letter"))
    jsonl = settings.sinks.jsonl
    if jsonl.dir:
        outputs.alerts.append(JsonlSink(jsonl.dir, "alerts", jsonl.files))
        outputs.metrics.append(JsonlSink(jsonl.dir, "metrics", jsonl.files))
        outputs.transactions.append(JsonlSink(jsonl.dir, "transactions", jsonl.files))
        outputs.dead_letters.append(JsonlSink(jsonl.dir, "dead_letter", jsonl.files))
    return outputs
