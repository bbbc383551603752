"""SNS sink: one message per alert state change (OPEN, RESOLVED, one-shot).

Body: the alert record as JSON. Subject: short and readable in a mail
client or a pager (``Paywatch [CRITICAL] FAILURE_RATE OPEN US-WEST: 3.5 >
2``; SNS allows 100 ASCII characters). Message attributes ``alert_type``,
``severity``, ``region``, ``state`` and ``alert_id`` let subscribers filter
(an SQS queue that only wants CRITICAL, a Lambda per region). Alerts go out
with PublishBatch, up to 10 entries and 256 KB per call.

FIFO topics (ARN or name ending in ``.fifo``): MessageGroupId = the alert
key (region or user) so one incident's OPEN precedes its RESOLVED, and
MessageDeduplicationId = ``alert_id``, so a replay within SNS's five-minute
deduplication interval is dropped by SNS. A standard topic can deliver a
replayed alert twice: subscribers de-duplicate by the ``alert_id``
attribute.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any, Optional

import orjson

from config.settings import Settings
from connectors.aws.retry import record_failure
from connectors.sinks.dead_letter import DeadLetterWriter
from connectors.sinks.delivery import BufferedAwsSink, BufferedSinkPartition, SendResult

logger = logging.getLogger(__name__)

MAX_BATCH = 10
MAX_BATCH_BYTES = 256 * 1024
MAX_SUBJECT = 100
_NOT_SUBJECT = re.compile(r"[^\x20-\x7e]+")
_NOT_FIFO_ID = re.compile(r"[^A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]")


def subject(alert: dict[str, Any], prefix: str = "Paywatch") -> str:
    """A one-line ASCII subject of at most 100 characters.

    A FAILURE_RATE alert's message says what fails and why in words ("US-EAST
    failure rate 8.1 % over 60 s (threshold 2 %): 88 % of failures on
    device=mobile, 34 % of traffic"): the subject is that sentence, with the
    prefix and then the window length left out when it does not fit.
    """
    if alert.get("type") == "FAILURE_RATE" and alert.get("message"):
        message = _NOT_SUBJECT.sub(" ", str(alert["message"])).strip()
        window = (alert.get("details") or {}).get("window_seconds")
        shorter = message.replace(f" over {window} s", "", 1) if window else message
        for text in (f"{prefix} {message}".strip(), message, shorter):
            if len(text) <= MAX_SUBJECT:
                return text
        return shorter[: MAX_SUBJECT - 3] + "..."
    where = alert.get("region") or alert.get("key") or ""
    if alert.get("user_id") and alert.get("type") not in ("FAILURE_RATE", "TRAFFIC_DROP"):
        where = f"user {alert['user_id']}"
    text = f"{prefix} [{alert.get('severity')}] {alert.get('type')} {alert.get('state')} {where}".strip()
    value, threshold = alert.get("value"), alert.get("threshold")
    if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
        text += f": {value:.4g} vs {threshold:.4g}"
    text = _NOT_SUBJECT.sub(" ", text).strip()
    return text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 3] + "..."


def fifo_id(value: str) -> str:
    """A FIFO group or deduplication id: 1-128 allowed characters; longer ids become a sha256."""
    clean = _NOT_FIFO_ID.sub("_", value) or "_"
    return clean if len(clean) <= 128 else hashlib.sha256(value.encode()).hexdigest()


def _attr(value: Any) -> dict[str, str]:
    return {"DataType": "String", "StringValue": str(value)}


def alert_entry(alert: dict[str, Any], fifo: bool, prefix: str = "Paywatch") -> dict[str, Any]:
    """A PublishBatch entry (without ``Id``, which is set per call)."""
    attributes = {
        "alert_type": _attr(alert["type"]),
        "severity": _attr(alert["severity"]),
        "state": _attr(alert["state"]),
        "alert_id": _attr(alert["alert_id"]),
    }
    if alert.get("region"):
        attributes["region"] = _attr(alert["region"])
    entry: dict[str, Any] = {
        "Message": orjson.dumps(alert, default=str).decode(),
        "Subject": subject(alert, prefix),
        "MessageAttributes": attributes,
    }
    if fifo:
        entry["MessageGroupId"] = fifo_id(str(alert.get("key") or alert["type"]))
        entry["MessageDeduplicationId"] = fifo_id(alert["alert_id"])
    return entry


def entry_size(entry: dict[str, Any]) -> int:
    """Bytes an entry counts against the 256 KB batch limit (body, subject, attributes)."""
    size = len(entry["Message"].encode()) + len(entry["Subject"])
    for name, attr in entry["MessageAttributes"].items():
        size += len(name) + len(attr["DataType"]) + len(attr["StringValue"].encode())
    return size


def batch_count(pending: Sequence[dict[str, Any]]) -> int:
    """How many leading entries fit in one PublishBatch (10 entries, 256 KB)."""
    total = 0
    for i, entry in enumerate(pending):
        if i == MAX_BATCH:
            return i
        total += entry_size(entry)
        if total > MAX_BATCH_BYTES:
            return max(1, i)
    return len(pending)


class SnsSink(BufferedAwsSink):
    """Alerts to an SNS topic; items are alert records."""

    kind = "sns"
    """Its key under ``sinks`` in the settings: names its flow step (``dataflow.py``)."""

    def __init__(self, settings: Settings, dead_letters: DeadLetterWriter) -> None:
        super().__init__("sns", settings.sinks.sns.partitions, settings, dead_letters)
        sns = settings.sinks.sns
        self.fifo = (sns.topic_arn or sns.topic_name).endswith(".fifo")

    def build_buffered(self, part: str, resume_state: Optional[list]) -> BufferedSinkPartition:
        from connectors.aws.client import aws_client

        sns = self.settings.sinks.sns
        client = aws_client("sns", self.settings)
        topic: dict[str, str] = {}

        def topic_arn() -> str:
            # Resolved on first send, in the sender thread, so an unreachable STS is retried, not fatal.
            if "arn" not in topic:
                if sns.topic_arn:
                    topic["arn"] = sns.topic_arn
                else:
                    sts = aws_client("sts", self.settings)
                    account = sts.get_caller_identity()["Account"]
                    partition = "aws-cn" if self.settings.aws.region.startswith("cn-") else "aws"
                    topic["arn"] = f"arn:{partition}:sns:{self.settings.aws.region}:{account}:{sns.topic_name}"
            return topic["arn"]

        def send(chunk: list[dict[str, Any]]) -> SendResult:
            entries = [dict(entry, Id=str(i)) for i, entry in enumerate(chunk)]
            response = client.publish_batch(TopicArn=topic_arn(), PublishBatchRequestEntries=entries)
            result: SendResult[dict[str, Any]] = SendResult()
            for failed in response.get("Failed", []):
                unit = chunk[int(failed["Id"])]
                failure = record_failure(
                    failed.get("Code", "Unknown"), failed.get("Message", ""), failed.get("SenderFault")
                )
                if failure.transient:
                    result.retry.append(unit)
                else:
                    result.failed.append((unit, failure))
            return result

        fifo, prefix = self.fifo, sns.subject_prefix
        return self.delivered(
            part,
            send,
            batch_count,
            lambda alert: [alert_entry(alert, fifo, prefix)],
            resource=f"SNS topic {sns.topic_arn or sns.topic_name}",
            setting="sinks.sns.topic_arn",
            pending=resume_state,
        )
