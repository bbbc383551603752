"""Helpers for tests against moto_server: settings with fresh names, read-back of what sinks wrote."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Optional

import boto3

from cli.provision import Provisioner
from config import load_settings
from config.loader import deep_merge
from config.settings import Settings
from connectors.sinks.delivery import BufferedAwsSink
from tests.support.config import QUIET_STDOUT


def aws_settings(endpoint_url: str, tmp_path, overrides: Optional[dict[str, Any]] = None) -> Settings:
    """Settings with every AWS sink on, unique resource names, and moto's endpoint."""
    tag = uuid.uuid4().hex[:8]
    base = {
        "aws": {"endpoint_url": endpoint_url, "region": "us-east-1"},
        "source": {"kinesis": {"stream_name": f"payments-{tag}"}},
        "sinks": {
            "stdout": QUIET_STDOUT,
            "retry": {"base_seconds": 0.02, "max_seconds": 0.2, "close_timeout_seconds": 20},
            "cloudwatch": {"enabled": True, "namespace": f"Paywatch-{tag}", "alarm_regions": ["US-WEST"]},
            "sns": {"enabled": True, "topic_name": f"alerts-{tag}", "sqs_subscription": f"alerts-q-{tag}"},
            "dynamodb": {
                "enabled": True,
                "transactions_table": f"txn-{tag}",
                "alerts_table": f"alerts-{tag}",
                "aggregates_table": f"aggs-{tag}",
                "ttl_days": 30,
            },
            "dead_letter": {"type": "jsonl", "path": str(tmp_path / "sink_dead_letter.jsonl")},
        },
    }
    return load_settings(environ={}, overrides=deep_merge(base, overrides or {}))


def provision(settings: Settings) -> dict[str, Any]:
    return Provisioner(settings, wait_seconds=10).up()


def client(service: str, settings: Settings) -> Any:
    return boto3.client(service, region_name=settings.aws.region, endpoint_url=settings.aws.endpoint_url)


def recent_minute(minutes_ago: int = 30) -> datetime:
    """A whole UTC minute inside CloudWatch's two-week window."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes_ago)


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def metric_values(
    settings: Settings, metric: str, region: Optional[str], start: datetime, end: datetime, stat: str = "Average"
) -> dict[datetime, float]:
    """Datapoints per minute of one metric (``region`` None = the all-regions series)."""
    cw = client("cloudwatch", settings)
    dims = [{"Name": "Region", "Value": region}] if region else []
    response = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": settings.sinks.cloudwatch.namespace,
                        "MetricName": metric,
                        "Dimensions": dims,
                    },
                    "Period": 60,
                    "Stat": stat,
                },
            }
        ],
        StartTime=start,
        EndTime=end,
    )
    result = response["MetricDataResults"][0]
    return dict(zip(result["Timestamps"], result["Values"], strict=False))


def sqs_messages(settings: Settings, expect: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """SNS envelopes received by the subscribed queue: reads until ``expect`` arrived and the queue is drained."""
    sqs = client("sqs", settings)
    url = sqs.get_queue_url(QueueName=settings.sinks.sns.sqs_subscription)["QueueUrl"]
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        for message in batch:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if not batch:
            if len(out) >= expect:
                break
            time.sleep(0.1)
    return out


def scan(settings: Settings, table: str) -> list[dict[str, Any]]:
    """All items of a table through the resource API (numbers as Decimal)."""
    resource = boto3.resource("dynamodb", region_name=settings.aws.region, endpoint_url=settings.aws.endpoint_url)
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = resource.Table(table).scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def delivery_stat(sink: BufferedAwsSink, name: str) -> int:
    """One :class:`DeliveryStats` counter summed over the sink's partitions in this process."""
    return sum(getattr(delivery.stats, name) for delivery in sink.deliveries)
