"""Which sinks receive which stream, built from settings.

Every sink receives ``(key, item)`` pairs so that partitioned sinks
(files, DynamoDB) can route by key and dynamic sinks simply ignore it:

- alerts: key = alert["key"]; item = alert record (operators/alerts.py)
- metrics: key = window_start (ISO); item = list of per-region records of
  one minute (operators/region_windows.py ``_minute_records``)
- transactions: key = source partition; item = :class:`~operators.records.TransactionBatch`
- dead_letters: key = source; item = dead-letter record (operators/parse.py)
- lake: the three above merged: ``(part, LakeChunk)``, keyed alerts and keyed
  minutes (connectors/lake/sink.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bytewax.outputs import Sink

from config.settings import Settings


@dataclass
class Outputs:
    alerts: list[Sink] = field(default_factory=list)
    metrics: list[Sink] = field(default_factory=list)
    transactions: list[Sink] = field(default_factory=list)
    dead_letters: list[Sink] = field(default_factory=list)
    lake: list[Sink] = field(default_factory=list)


def build_outputs(settings: Settings) -> Outputs:
    """Sinks for the configured outputs; AWS sinks only when enabled."""
    from connectors.sinks.jsonl import JsonlSink
    from connectors.sinks.stdout import StdoutSink

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
    _add_aws_and_dead_letter_sinks(outputs, settings)
    return outputs


def _add_aws_and_dead_letter_sinks(outputs: Outputs, settings: Settings) -> None:
    """AWS sinks (each only when enabled) and the Kafka/SQS dead-letter sink; see docs/sinks.md.

    One dead-letter writer per process, shared by the AWS sinks (records
    they cannot deliver) and, for kafka/sqs, by the flow's dead letters.
    """
    sinks = settings.sinks
    aws_on = sinks.cloudwatch.enabled or sinks.sns.enabled or sinks.dynamodb.enabled or sinks.lake.enabled
    if not aws_on and sinks.dead_letter.type == "jsonl":
        return
    from connectors.sinks.dead_letter import DeadLetterSink, build_dead_letter_writer

    writer = build_dead_letter_writer(settings)
    if sinks.dead_letter.type in ("kafka", "sqs"):
        outputs.dead_letters.append(DeadLetterSink(writer))
    if sinks.cloudwatch.enabled:
        from connectors.sinks.cloudwatch import CloudWatchSink

        outputs.metrics.append(CloudWatchSink(settings, writer))
    if sinks.sns.enabled:
        from connectors.sinks.sns import SnsSink

        outputs.alerts.append(SnsSink(settings, writer))
    if sinks.dynamodb.enabled:
        from connectors.sinks.dynamodb import AGGREGATES, ALERTS, TRANSACTIONS, DynamoDbSink

        outputs.alerts.append(DynamoDbSink(settings, ALERTS, writer))
        outputs.metrics.append(DynamoDbSink(settings, AGGREGATES, writer))
        if sinks.dynamodb.transactions != "none":
            outputs.transactions.append(DynamoDbSink(settings, TRANSACTIONS, writer))
    if sinks.lake.enabled:
        from connectors.lake.sink import LakeSink

        outputs.lake.append(LakeSink(settings, writer))
