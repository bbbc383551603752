"""DynamoDB sink: alerts, per-minute aggregates and (flagged or all) transactions.

Every item has a deterministic key taken from the data, so a replay after a
resume overwrites the same item instead of adding one:

=============  ============================  =========================================
table          key                           item
=============  ============================  =========================================
alerts         ``alert_id`` (S)              the alert record (``details`` as a map)
aggregates     ``region`` (S) +              one per-region minute record
               ``window_start`` (S, ISO)
transactions   ``transaction_id`` (S)        the scored transaction
=============  ============================  =========================================

Writes are BatchWriteItem of 25 puts. ``UnprocessedItems`` (throttling on a
partition) go back to the front of the buffer and are retried with backoff.
A batch may not hold one key twice, so each call keeps the last put of a key
(the one that would have won anyway). Numbers are written as DynamoDB
numbers: floats through ``Decimal(repr(x))`` (the shortest text that is the
same float, never binary noise like ``0.1000000000000000055``), so boto3's
resource API reads them back as ``Decimal``; NaN and infinities, which
DynamoDB cannot store, are written as strings. With ``ttl_days`` every item
carries ``ttl_attribute`` = write time + ttl_days in epoch seconds (write
time, not event time, so a backfill of last month is not expired at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Optional

import orjson

from config.settings import Settings
from connectors.sinks.dead_letter import DeadLetterWriter
from connectors.sinks.delivery import BufferedAwsSink, BufferedSinkPartition, SendResult
from operators.records import TransactionBatch

MAX_BATCH = 25

ALERTS = "alerts"
AGGREGATES = "aggregates"
TRANSACTIONS = "transactions"

#: Key attributes (hash, then range) per table kind; provisioning uses them too.
KEYS: dict[str, tuple[str, ...]] = {
    ALERTS: ("alert_id",),
    AGGREGATES: ("region", "window_start"),
    TRANSACTIONS: ("transaction_id",),
}


def dynamo_number(value: float) -> Decimal:
    """The Decimal DynamoDB stores for a finite float: its shortest exact repr."""
    return Decimal(repr(value))


def attribute_value(value: Any) -> dict[str, Any]:
    """A Python value in DynamoDB's AttributeValue form (what the low-level client sends)."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if kind is int:
        return {"N": str(value)}
    if kind is float:
        return {"N": str(dynamo_number(value))} if math.isfinite(value) else {"S": repr(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, dict):
        return {"M": {str(k): attribute_value(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [attribute_value(v) for v in value]}
    if isinstance(value, Decimal):
        return {"N": str(value)} if value.is_finite() else {"S": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    return {"S": str(value)}


def to_item(record: dict[str, Any], ttl: Optional[tuple[str, int]] = None) -> dict[str, dict[str, Any]]:
    """A record as a DynamoDB item, with the TTL attribute when given."""
    item = {str(k): attribute_value(v) for k, v in record.items()}
    if ttl is not None:
        item[ttl[0]] = {"N": str(ttl[1])}
    return item


def item_key(item: dict[str, dict[str, Any]], key_names: tuple[str, ...]) -> tuple:
    """The primary key values of an item, to find duplicates within a batch."""
    return tuple(next(iter(item[name].values())) for name in key_names)


def dedupe_last(items: list[dict[str, Any]], key_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Keep the last item per key, in the order of those last occurrences."""
    latest: dict[tuple, dict[str, Any]] = {}
    for item in items:
        key = item_key(item, key_names)
        latest.pop(key, None)
        latest[key] = item
    return list(latest.values())


def records_of(kind: str, item: Any, transactions: str = "flagged") -> list[dict[str, Any]]:
    """The records one flow item stands for, per table kind."""
    if kind == ALERTS:
        return [item]
    if kind == AGGREGATES:
        return list(item)
    if type(item) is not TransactionBatch:
        raise TypeError(f"transactions items must be TransactionBatch, got {type(item).__name__}")
    if transactions == "all":
        return [orjson.loads(line) for line in item.jsonl.splitlines() if line]
    return list(item.flagged)


def _converter(kind: str, settings: Settings) -> Callable[[Any], list[dict[str, Any]]]:
    ddb = settings.sinks.dynamodb
    key_names = KEYS[kind]

    def convert(item: Any) -> list[dict[str, Any]]:
        ttl = (ddb.ttl_attribute, int(time.time() + ddb.ttl_days * 86400)) if ddb.ttl_days else None
        out = []
        for record in records_of(kind, item, ddb.transactions):
            missing = [k for k in key_names if not isinstance(record.get(k), str) or not record.get(k)]
            if missing:
                raise ValueError(f"{kind} record lacks the key attribute(s) {missing}")
            out.append(to_item(record, ttl))
        return out

    return convert


def table_name(settings: Settings, kind: str) -> str:
    ddb = settings.sinks.dynamodb
    return {ALERTS: ddb.alerts_table, AGGREGATES: ddb.aggregates_table, TRANSACTIONS: ddb.transactions_table}[kind]


class DynamoDbSink(BufferedAwsSink):
    """Items of one stream (alerts, metrics or transactions) into their table."""

    kind = "dynamodb"
    """Its key under ``sinks`` in the settings: names its flow step (``dataflow.py``)."""

    def __init__(self, settings: Settings, kind: str, dead_letters: DeadLetterWriter) -> None:
        if kind not in KEYS:
            raise ValueError(f"unknown DynamoDB table kind {kind!r}; one of {sorted(KEYS)}")
        super().__init__(f"dynamodb-{kind}", settings.sinks.dynamodb.partitions, settings, dead_letters)
        self.kind = kind
        self.table = table_name(settings, kind)
        # Only `transactions: all` reads TransactionBatch.jsonl; the flow
        # skips building it when no transaction sink does.
        self.wants_transaction_lines = kind == TRANSACTIONS and settings.sinks.dynamodb.transactions == "all"

    def build_buffered(self, part: str, resume_state: Optional[list]) -> BufferedSinkPartition:
        from connectors.aws.client import aws_client

        client = aws_client("dynamodb", self.settings)
        table, key_names = self.table, KEYS[self.kind]

        def send(chunk: list[dict[str, Any]]) -> SendResult:
            puts = [{"PutRequest": {"Item": item}} for item in dedupe_last(chunk, key_names)]
            response = client.batch_write_item(RequestItems={table: puts})
            unprocessed = (response.get("UnprocessedItems") or {}).get(table, [])
            return SendResult(retry=[r["PutRequest"]["Item"] for r in unprocessed if "PutRequest" in r])

        def take(pending: Sequence[dict[str, Any]]) -> int:
            return MAX_BATCH

        return self.delivered(
            part,
            send,
            take,
            _converter(self.kind, self.settings),
            resource=f"DynamoDB table {table}",
            setting=f"sinks.dynamodb.{self.kind}_table",
            pending=resume_state,
        )
