"""CloudWatch sink: the per-minute metrics as PutMetricData, batched to the limit.

For each closed minute, per region (dimension ``Region``) and for all regions
together (no dimension: what the HighPaymentFailureRate alarm of the product
brief watches): ``TransactionCount``, ``FailureCount``,
``PaymentFailureRate`` (Percent; omitted for a region without payments,
where it is undefined), ``FraudSuspectedCount``, ``ReviewRequiredCount``.
Timestamp = window start, so a replay or backfill lands on the right minute.

Up to 1,000 datums per call (the API limit): with four regions one minute is
25 datums, so at most one call per minute, whatever the event rate.

Duplicates: PutMetricData is not idempotent. A datum replayed after a resume
adds a second sample at the same timestamp: Average, Minimum and Maximum
(what the alarm uses) are unchanged because the value is the same; Sum and
SampleCount double for that minute. CloudWatch refuses timestamps older than
two weeks (and more than two hours ahead); those datums are dead-lettered
here instead of failing the whole call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional

from config.settings import Settings
from connectors.sinks.dead_letter import DeadLetterWriter, sink_dead_letter
from connectors.sinks.delivery import BufferedAwsSink, BufferedSinkPartition, SendResult

logger = logging.getLogger(__name__)

MAX_DATUMS_PER_CALL = 1000
MAX_FUTURE_SECONDS = 2 * 3600
OUT_OF_RANGE = "cloudwatch_timestamp_out_of_range"

#: (metric name, record field, unit); PaymentFailureRate is computed.
COUNT_METRICS = (
    ("TransactionCount", "count"),
    ("FailureCount", "failures"),
    ("FraudSuspectedCount", "fraud_suspected"),
    ("ReviewRequiredCount", "review_required"),
)
FAILURE_RATE = "PaymentFailureRate"


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _datums(dims: list[dict[str, str]], ts: datetime, counts: dict[str, int], resolution: int) -> list[dict[str, Any]]:
    out = [
        {
            "MetricName": name,
            "Dimensions": dims,
            "Timestamp": ts,
            "Value": float(counts[field]),
            "Unit": "Count",
            "StorageResolution": resolution,
        }
        for name, field in COUNT_METRICS
    ]
    if counts["count"]:
        rate = counts["failures"] * 100.0 / counts["count"]
        out.append(
            {
                "MetricName": FAILURE_RATE,
                "Dimensions": dims,
                "Timestamp": ts,
                "Value": rate,
                "Unit": "Percent",
                "StorageResolution": resolution,
            }
        )
    return out


def minute_datums(
    records: list[dict[str, Any]],
    region_dimension: str = "Region",
    extra_dimensions: Optional[dict[str, str]] = None,
    resolution: int = 60,
) -> list[dict[str, Any]]:
    """MetricDatum dicts for the per-region records of one minute (and of the all-regions total).

    The rate is recomputed from the counts (the record's ``failure_rate`` is
    rounded) and the total is summed per window start, so a list that spans
    two minutes still gives right totals.
    """
    extra = [{"Name": k, "Value": v} for k, v in sorted((extra_dimensions or {}).items())]
    out: list[dict[str, Any]] = []
    totals: dict[str, dict[str, int]] = {}
    for record in records:
        ts = _parse_time(record["window_start"])
        counts = {field: int(record[field]) for _name, field in COUNT_METRICS}
        dims = [{"Name": region_dimension, "Value": str(record["region"])}] + extra
        out.extend(_datums(dims, ts, counts, resolution))
        total = totals.setdefault(record["window_start"], dict.fromkeys(counts, 0))
        for field, n in counts.items():
            total[field] += n
    for start, counts in totals.items():
        out.extend(_datums(list(extra), _parse_time(start), counts, resolution))
    return out


def in_range(datum: dict[str, Any], now: float, max_age_days: float) -> bool:
    """Whether CloudWatch accepts the datum's timestamp (two weeks back, two hours ahead)."""
    ts = datum["Timestamp"].timestamp()
    return now - max_age_days * 86400 <= ts <= now + MAX_FUTURE_SECONDS


class _Converter:
    """Item -> datums; datums CloudWatch would refuse go straight to the dead letters."""

    def __init__(self, name: str, settings: Settings, dead_letters: DeadLetterWriter) -> None:
        cw = settings.sinks.cloudwatch
        self._name = name
        self._cw = cw
        self._dead_letters = dead_letters
        self._warned = False

    def __call__(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cw = self._cw
        datums = minute_datums(records, cw.region_dimension, cw.dimensions, cw.storage_resolution)
        now = time.time()
        kept = [d for d in datums if in_range(d, now, cw.max_age_days)]
        if len(kept) < len(datums):
            stale = [d for d in datums if not in_range(d, now, cw.max_age_days)]
            if not self._warned:
                self._warned = True
                logger.warning(
                    "%s: %d datums (first at %s) are outside CloudWatch's window of %g days back / 2 h ahead "
                    "and go to the dead-letter output; backfills of older data belong in DynamoDB aggregates",
                    self._name,
                    len(stale),
                    stale[0]["Timestamp"].isoformat(),
                    cw.max_age_days,
                )
            self._dead_letters.write([sink_dead_letter(self._name, cw.namespace, OUT_OF_RANGE, None, d) for d in stale])
        return kept


class CloudWatchSink(BufferedAwsSink):
    """Per-minute metrics to CloudWatch; items are lists of per-region minute records."""

    kind = "cloudwatch"
    """Its key under ``sinks`` in the settings: names its flow step (``dataflow.py``)."""

    def __init__(self, settings: Settings, dead_letters: DeadLetterWriter) -> None:
        super().__init__("cloudwatch", settings.sinks.cloudwatch.partitions, settings, dead_letters)

    def build_buffered(self, part: str, resume_state: Optional[list]) -> BufferedSinkPartition:
        from connectors.aws.client import aws_client

        cw = self.settings.sinks.cloudwatch
        client = aws_client("cloudwatch", self.settings)
        limit = min(cw.max_datums_per_call, MAX_DATUMS_PER_CALL)

        def send(chunk: list[dict[str, Any]]) -> SendResult:
            client.put_metric_data(Namespace=cw.namespace, MetricData=chunk)
            return SendResult()

        def take(pending: Sequence[dict[str, Any]]) -> int:
            return limit

        return self.delivered(
            part,
            send,
            take,
            _Converter(part, self.settings, self.dead_letters),
            resource=f"CloudWatch namespace {cw.namespace}",
            setting="sinks.cloudwatch",
            pending=resume_state,
        )
