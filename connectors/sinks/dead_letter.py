"""Dead-letter outputs: a JSONL file, a Kafka topic or an SQS queue.

Two users, one writer object per process:

- the flow's ``dead_letters`` stream (invalid and late input): for
  ``sinks.dead_letter.type`` kafka or sqs, :class:`DeadLetterSink` wraps the
  writer as a Bytewax sink; for jsonl the JSONL sink (:mod:`connectors.sinks.jsonl`) already
  writes ``dead_letter-N.jsonl`` when ``sinks.jsonl.dir`` is set.
- the AWS sinks, which call :meth:`DeadLetterWriter.write` directly with
  records they could not deliver (permanent error, full buffer, still
  undelivered at close). Calling a writer directly, instead of routing the
  failures back into the dataflow, is the only way a sink can hand records
  on: a Bytewax sink has no output stream.

A sink dead letter has the shape of a parse dead letter (``reason``,
``field``, ``detail``, ``source``, ``position``, ``raw``) plus ``sink``,
``target``, ``error_code`` and ``fix``; ``raw`` is the JSON of the request
unit (metric datum, SNS entry, DynamoDB item in AttributeValue form) so a
replay tool can send it again unchanged. A writer that fails itself logs the
record at ERROR, the last place left, and counts it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional, Protocol

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from config.loader import SettingsError
from config.settings import Settings
from connectors.aws.retry import Backoff, Failure, classify

logger = logging.getLogger(__name__)

_SQS_BATCH = 10
_SQS_MAX_BYTES = 256 * 1024
# A part's base64 slice plus its envelope stays under the limit.
_SQS_PART_BYTES = (_SQS_MAX_BYTES - 4096) * 3 // 4


class DeadLetterWriter(Protocol):
    """Anything that durably accepts dead-letter records; must be thread-safe."""

    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def _default(obj: Any) -> Any:
    form = getattr(obj, "dead_letter_form", None)
    if form is not None:  # a unit that says how to keep it whole (a lake file)
        return form()
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode(errors="replace")
    return repr(obj)


def encode(record: dict[str, Any]) -> bytes:
    """One JSON line; Decimals, bytes and dataclasses survive as text."""
    return orjson.dumps(record, default=_default, option=orjson.OPT_APPEND_NEWLINE)


def sink_dead_letter(sink: str, target: str, reason: str, failure: Optional[Failure], unit: Any) -> dict[str, Any]:
    """The dead-letter record for one request unit a sink could not deliver."""
    return {
        "reason": reason,
        "field": None,
        "detail": failure.message if failure else reason.replace("_", " "),
        "source": f"sink:{sink}",
        "position": None,
        "raw": encode(unit).decode().rstrip("\n"),
        "sink": sink,
        "target": target,
        "error_code": failure.code if failure else None,
        "fix": failure.fix if failure else None,
    }


def _log_lost(records: list[dict[str, Any]], why: str) -> None:
    for record in records:
        logger.error("dead-letter output failed (%s); record: %s", why, encode(record).decode().rstrip())


class JsonlDeadLetterWriter:
    """Appends to one file per process; opened on first use so an idle process creates nothing.

    One ``write`` call per batch on an ``O_APPEND`` descriptor, so workers
    (threads) of the process never interleave half lines.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None
        self._lock = threading.Lock()

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = b"".join(encode(r) for r in records)
        try:
            with self._lock:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
        except OSError as exc:
            _log_lost(records, f"{self.path}: {exc.strerror}")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None


def dead_letter_producer_config(settings: Settings, environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """KafkaProducer arguments of the dead-letter topic.

    The one Kafka client configuration (``source.kafka``: TLS, SASL, client
    id) with the dead-letter brokers, so dead letters travel as securely as
    the payments they came from; durable (``acks=all``) since a dead letter
    is often the only copy of a rejected payload.

    :raises SettingsError: a password variable named in ``source.kafka`` is unset.
    """
    from connectors.kafka.client_config import producer_config

    try:
        return producer_config(
            settings.source.kafka,
            brokers=settings.sinks.dead_letter.kafka_bootstrap_servers,
            environ=environ,
            acks="all",
            retries=5,
            linger_ms=20,
        )
    except ValueError as exc:
        raise SettingsError(f"{exc} (sinks.dead_letter.type kafka uses the source.kafka client settings)") from None


class KafkaDeadLetterWriter:
    """Produces each record to a Kafka topic (kafka-python), keyed by its source."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        """:arg config: KafkaProducer arguments, from :func:`dead_letter_producer_config`."""
        self.topic = topic
        self.config = config
        self._producer = None
        self._lock = threading.Lock()

    def _get_producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(**self.config)
        return self._producer

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        try:
            with self._lock:
                producer = self._get_producer()
                futures = [
                    producer.send(self.topic, key=str(r.get("source") or "").encode(), value=encode(r).rstrip(b"\n"))
                    for r in records
                ]
                producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)
        except Exception as exc:  # noqa: BLE001 - the log is the last resort
            _log_lost(records, f"kafka topic {self.topic}: {exc!r}")

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(timeout=30)
                self._producer.close(timeout=30)
                self._producer = None


def sqs_bodies(record: dict[str, Any]) -> list[str]:
    """The SQS message bodies of one record: its JSON, or numbered parts when it is too long.

    SQS refuses a message over 256 KiB (the limit of queues created before 2025,
    and still a queue's choice), and a ``too_large`` dead letter carries a
    payload of any size. Cutting the JSON would make it unreadable and lose the
    rest, so a long record is split into parts instead: each a small JSON
    envelope with the record's ``reason``, ``source`` and ``position``, the
    part number, the number of parts, an id shared by the parts, and a base64
    slice of the record's JSON. Concatenating the decoded slices in part order
    gives the record back byte for byte (docs/sinks.md).
    """
    body = encode(record).rstrip(b"\n")
    if len(body) <= _SQS_MAX_BYTES:
        return [body.decode()]
    record_id = hashlib.sha256(body).hexdigest()[:32]
    slices = [body[start : start + _SQS_PART_BYTES] for start in range(0, len(body), _SQS_PART_BYTES)]
    head = {key: record.get(key) for key in ("reason", "source", "position")}
    return [
        orjson.dumps(
            {
                **head,
                "dead_letter_part": number,
                "parts": len(slices),
                "record_id": record_id,
                "data_base64": base64.b64encode(piece).decode(),
            },
            default=_default,
        ).decode()
        for number, piece in enumerate(slices, 1)
    ]


def _sqs_batches(records: list[dict[str, Any]]) -> list[list[tuple[dict[str, Any], str]]]:
    """(record, body) pairs grouped into SendMessageBatch calls: at most 10 entries and 256 KiB in all."""
    batches: list[list[tuple[dict[str, Any], str]]] = []
    batch: list[tuple[dict[str, Any], str]] = []
    size = 0
    for record in records:
        for body in sqs_bodies(record):
            length = len(body.encode())
            if batch and (len(batch) == _SQS_BATCH or size + length > _SQS_MAX_BYTES):
                batches.append(batch)
                batch, size = [], 0
            batch.append((record, body))
            size += length
    if batch:
        batches.append(batch)
    return batches


def _records_of(pairs: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
    """The distinct records behind some entries (a long record's parts count once)."""
    seen: dict[int, dict[str, Any]] = {}
    for record, _ in pairs:
        seen.setdefault(id(record), record)
    return list(seen.values())


class SqsDeadLetterWriter:
    """SendMessageBatch in tens (256 KiB at most per call); retries the entries SQS failed a few times."""

    def __init__(self, client: Any, queue_url: str, attempts: int = 5) -> None:
        self.queue_url = queue_url
        self._client = client
        self._attempts = attempts
        self._lock = threading.Lock()

    def write(self, records: list[dict[str, Any]]) -> None:
        backoff = Backoff(0.1, 2.0)
        with self._lock:
            for batch in _sqs_batches(records):
                entries = [{"Id": str(i), "MessageBody": body} for i, (_, body) in enumerate(batch)]
                for attempt in range(1, self._attempts + 1):
                    try:
                        response = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                    except Exception as exc:  # noqa: BLE001
                        failure = classify(exc)
                        if not failure.transient or attempt == self._attempts:
                            _log_lost(_records_of(batch), f"sqs {self.queue_url}: {failure.describe()}")
                            break
                        time.sleep(backoff.delay(attempt))
                        continue
                    failed = {f["Id"] for f in response.get("Failed", [])}
                    entries = [e for e in entries if e["Id"] in failed]
                    if not entries:
                        break
                    if attempt == self._attempts:
                        lost = [batch[int(e["Id"])] for e in entries]
                        _log_lost(_records_of(lost), f"sqs {self.queue_url}: batch entries failed")
                        break
                    time.sleep(backoff.delay(attempt))

    def close(self) -> None:
        return


def jsonl_path(settings: Settings) -> str:
    """Where sink dead letters go with ``type: jsonl``."""
    dl = settings.sinks.dead_letter
    if dl.path:
        return dl.path
    if settings.sinks.jsonl.dir:
        return str(Path(settings.sinks.jsonl.dir) / "sink_dead_letter.jsonl")
    return "paywatch-sink-dead-letters.jsonl"


def build_dead_letter_writer(settings: Settings) -> DeadLetterWriter:
    """The process's dead-letter writer for ``sinks.dead_letter``."""
    dl = settings.sinks.dead_letter
    if dl.type == "kafka":
        return KafkaDeadLetterWriter(dead_letter_producer_config(settings), dl.kafka_topic)
    if dl.type == "sqs":
        from connectors.aws.client import aws_client

        assert dl.sqs_queue_url, "settings refuse type sqs without sqs_queue_url"
        return SqsDeadLetterWriter(aws_client("sqs", settings), dl.sqs_queue_url)
    return JsonlDeadLetterWriter(jsonl_path(settings))


class _DeadLetterPartition(StatelessSinkPartition[tuple[str, Any]]):
    def __init__(self, writer: DeadLetterWriter) -> None:
        self._writer = writer

    def write_batch(self, items: list[tuple[str, Any]]) -> None:
        self._writer.write([record for _key, record in items])

    def close(self) -> None:
        self._writer.close()


class DeadLetterSink(DynamicSink[tuple[str, Any]]):
    """The flow's dead-letter stream into a Kafka topic or SQS queue.

    At-least-once: a resume replays the dead letters since the last
    snapshot, so a consumer may see a record twice (``source`` +
    ``position`` identify it).
    """

    kind = "dead_letter"
    """Its key under ``sinks`` in the settings: names its flow step (``dataflow.py``)."""

    def __init__(self, writer: DeadLetterWriter) -> None:
        self.writer = writer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.writer)
