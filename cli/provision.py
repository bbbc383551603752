"""``python -m cli.provision up|down``: the AWS resources Paywatch writes to.

Reads the same settings as the flow (``config.load_settings()``: defaults,
``PAYWATCH_CONFIG``, ``PAYWATCH__...`` overrides; ``aws.endpoint_url`` for
moto_server or LocalStack) and, idempotently:

- the Kinesis stream ``source.kinesis.stream_name`` (the product brief's
  ``payment-events-stream``), on-demand, encrypted with the AWS-managed
  ``aws/kinesis`` KMS key (it holds events as producers wrote them);
- the SNS topic ``sinks.sns.topic_name`` (FIFO if the name ends in
  ``.fifo``), plus an e-mail subscription and/or an SQS queue subscribed
  with a queue policy, when configured;
- the DynamoDB tables of ``sinks.dynamodb`` (on-demand, server-side
  encryption, TTL on ``ttl_attribute`` when ``ttl_days`` is set);
- the merchant table when ``reference.merchants.path`` is
  ``dynamodb://<table>`` (key ``merchant_id``, on-demand, encrypted; fill it
  with ``python -m cli.merchants load FILE``); ``down`` keeps it;
- the CloudWatch alarm ``HighPaymentFailureRate`` on the all-regions
  ``PaymentFailureRate`` (Average > 2 over 60 s, actions to the topic), and
  ``HighPaymentFailureRate-<REGION>`` for each region of
  ``sinks.cloudwatch.alarm_regions`` (default: ``simulator.regions``);
- when ``sinks.lake.uri`` is on S3: the lake's bucket (default encryption,
  public access blocked, lifecycle) and Glue tables
  (:mod:`connectors.lake.provision`; ``down`` keeps a bucket that holds data).

``up`` converges: it also deletes the regional alarms of regions no longer
configured, moves TTL to a renamed ``ttl_attribute`` (AWS allows one TTL
change per table per hour; when it refuses the second half, ``up`` says so
under ``pending`` and the next ``up`` finishes it), and waits out a table
or stream still being deleted by an earlier ``down``.

``down`` deletes the same resources, every Paywatch alarm on the namespace
(whatever regions the settings list today); a resource already gone is
fine. Every resource is created whatever sink is enabled: provisioning is
for the deployment, the ``enabled`` flags are for the flow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Optional

from botocore.exceptions import ClientError

from cli.tool_settings import load_tool_settings
from config.settings import Settings
from connectors.aws.client import aws_client
from connectors.aws.retry import NOT_FOUND_CODES, error_code
from connectors.lake.provision import LakeProvisioner
from connectors.reference.merchants import DYNAMODB_SCHEME, MERCHANT_KEYS
from connectors.sinks.dynamodb import AGGREGATES, ALERTS, KEYS, TRANSACTIONS, table_name

logger = logging.getLogger(__name__)

MERCHANTS = "merchants"  # the merchant reference table's kind (not a sink table)
# The AWS-managed key: usable by every principal the stream's IAM policy admits, no key policy to keep.
KINESIS_KMS_KEY = "alias/aws/kinesis"


class Provisioner:
    """Creates (``up``) or deletes (``down``) Paywatch's AWS resources."""

    def __init__(self, settings: Settings, wait_seconds: float = 60.0, poll_seconds: float = 1.0) -> None:
        self.settings = settings
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.pending: list[str] = []
        self.kinesis = aws_client("kinesis", settings, sink=False)
        self.sns = aws_client("sns", settings, sink=False)
        self.sqs = aws_client("sqs", settings, sink=False)
        self.dynamodb = aws_client("dynamodb", settings, sink=False)
        self.cloudwatch = aws_client("cloudwatch", settings, sink=False)
        self.lake = LakeProvisioner(
            settings, aws_client("s3", settings, sink=False), aws_client("glue", settings, sink=False)
        )

    # -- names --------------------------------------------------------------------

    @property
    def stream_name(self) -> str:
        return self.settings.source.kinesis.stream_name

    @property
    def alarm_regions(self) -> list[str]:
        cw = self.settings.sinks.cloudwatch
        return list(cw.alarm_regions if cw.alarm_regions is not None else self.settings.simulator.regions)

    def tables(self) -> dict[str, str]:
        return {kind: table_name(self.settings, kind) for kind in (ALERTS, AGGREGATES, TRANSACTIONS)}

    # -- up -----------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Create everything that is missing; returns names and ARNs."""
        out: dict[str, Any] = {"stream": self._stream_up()}
        topic_arn = self._topic_up()
        out["topic_arn"] = topic_arn
        out["subscriptions"] = self._subscriptions_up(topic_arn)
        out["tables"] = [self._table_up(kind, name) for kind, name in self.tables().items()]
        merchants = self.merchant_table
        if merchants is not None:
            out["tables"].append(self._table_up(MERCHANTS, merchants))
        out["alarms"] = self._alarms_up(topic_arn)
        out["alarms_removed"] = self._delete_alarms(keep=set(out["alarms"]))
        out["lake"] = self.lake.up()
        if self.pending:
            out["pending"] = self.pending
        return out

    def _stream_up(self) -> str:
        def status() -> str:
            return self.kinesis.describe_stream_summary(StreamName=self.stream_name)["StreamDescriptionSummary"][
                "StreamStatus"
            ]

        what = f"stream {self.stream_name}"
        self._wait_gone_if_deleting(status, what)
        try:
            self.kinesis.create_stream(StreamName=self.stream_name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
            logger.info("created Kinesis stream %s", self.stream_name)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        self._wait(lambda: status() == "ACTIVE", what)
        self._stream_encrypted(status)
        return self.stream_name

    def _stream_encrypted(self, status: Any) -> None:
        """Server-side encryption on the stream: the one store holding events as producers
        wrote them, card numbers included (Paywatch redacts only what it writes itself)."""
        summary = self.kinesis.describe_stream_summary(StreamName=self.stream_name)["StreamDescriptionSummary"]
        if summary.get("EncryptionType") == "KMS":
            return
        self.kinesis.start_stream_encryption(StreamName=self.stream_name, EncryptionType="KMS", KeyId=KINESIS_KMS_KEY)
        logger.info("stream %s: server-side encryption with %s", self.stream_name, KINESIS_KMS_KEY)
        self._wait(lambda: status() == "ACTIVE", f"stream {self.stream_name} encryption")

    def _topic_up(self) -> str:
        name = self.settings.sinks.sns.topic_name
        attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if name.endswith(".fifo") else {}
        # CreateTopic is idempotent: it returns the ARN of an existing topic of that name.
        return self.sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]

    def _subscriptions_up(self, topic_arn: str) -> list[str]:
        sns = self.settings.sinks.sns
        existing = self._subscriptions(topic_arn)
        made = []
        if sns.email_subscription:
            if ("email", sns.email_subscription) not in existing:
                self.sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=sns.email_subscription)
            made.append(f"email:{sns.email_subscription}")
        if sns.sqs_subscription:
            queue_arn = self._queue_up(sns.sqs_subscription, topic_arn)
            if ("sqs", queue_arn) not in existing:
                self.sns.subscribe(
                    TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"}
                )
            made.append(f"sqs:{queue_arn}")
        return made

    def _subscriptions(self, topic_arn: str) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for page in self.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
            found.update((s["Protocol"], s["Endpoint"]) for s in page["Subscriptions"])
        return found

    def _queue_up(self, name: str, topic_arn: str) -> str:
        fifo = name.endswith(".fifo")
        attributes = {"FifoQueue": "true"} if fifo else {}
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PaywatchAlertsFromSns",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        return arn

    @property
    def merchant_table(self) -> Optional[str]:
        """The merchant reference table when ``reference.merchants.path`` is ``dynamodb://<table>``.

        ``down`` leaves it alone: it holds the business's merchant data, which
        Paywatch reads but does not own.
        """
        path = self.settings.reference.merchants.path
        return path[len(DYNAMODB_SCHEME) :] if path and path.startswith(DYNAMODB_SCHEME) else None

    def _table_up(self, kind: str, name: str) -> str:
        keys = MERCHANT_KEYS if kind == MERCHANTS else KEYS[kind]
        schema = [{"AttributeName": keys[0], "KeyType": "HASH"}]
        if len(keys) > 1:
            schema.append({"AttributeName": keys[1], "KeyType": "RANGE"})

        def status() -> str:
            return self.dynamodb.describe_table(TableName=name)["Table"]["TableStatus"]

        self._wait_gone_if_deleting(status, f"table {name}")
        try:
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=schema,
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
                BillingMode="PAY_PER_REQUEST",
                SSESpecification={"Enabled": True, "SSEType": "KMS"},
                Tags=[{"Key": "app", "Value": "paywatch"}],
            )
            logger.info("created DynamoDB table %s", name)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        self._wait(lambda: status() == "ACTIVE", f"table {name}")
        if kind != MERCHANTS:  # reference data: no TTL
            self._ttl_up(name)
        return name

    def _ttl_up(self, name: str) -> None:
        """TTL as the settings say: on ``ttl_attribute`` when ``ttl_days`` is set, else off.

        A renamed attribute needs TTL off, then on again; until then items
        written with the new attribute would never expire, so ``up`` never
        leaves it silently on the old one.
        """
        ddb = self.settings.sinks.dynamodb
        ttl = self.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        status = ttl.get("TimeToLiveStatus")
        on = status in ("ENABLED", "ENABLING")
        if on and (not ddb.ttl_days or ttl.get("AttributeName") != ddb.ttl_attribute):
            # Settings say no TTL (old items would keep expiring) or another attribute.
            self.dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": False, "AttributeName": ttl["AttributeName"]}
            )
            logger.info("table %s: TTL on %s turned off", name, ttl["AttributeName"])
            on = False
        if ddb.ttl_days and not on:
            try:
                self.dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ddb.ttl_attribute}
                )
            except ClientError as exc:
                if error_code(exc) != "ValidationException":
                    raise
                # AWS: one TTL change per table per hour (and none while DISABLING).
                message = (
                    f"table {name}: TTL on {ddb.ttl_attribute} not enabled yet "
                    f"({exc.response['Error'].get('Message')}); "
                    "run `up` again once AWS allows the change (within an hour)"
                )
                logger.warning(message)
                self.pending.append(message)

    def _alarms_up(self, topic_arn: str) -> list[str]:
        cw = self.settings.sinks.cloudwatch
        names = []
        for name, region in [(cw.alarm_name, None)] + [(f"{cw.alarm_name}-{r}", r) for r in self.alarm_regions]:
            dimensions = [{"Name": cw.region_dimension, "Value": region}] if region else []
            dimensions += [{"Name": k, "Value": v} for k, v in sorted(cw.dimensions.items())]
            where = f"in {region}" if region else "across all regions"
            # PutMetricAlarm creates or replaces: running `up` twice leaves one alarm.
            self.cloudwatch.put_metric_alarm(
                AlarmName=name,
                AlarmDescription=f"Paywatch: payment failure rate {where} above {cw.alarm_threshold:g}% "
                f"over {cw.alarm_period_seconds}s",
                Namespace=cw.namespace,
                MetricName="PaymentFailureRate",
                Dimensions=dimensions,
                Statistic="Average",
                Period=cw.alarm_period_seconds,
                EvaluationPeriods=cw.alarm_evaluation_periods,
                Threshold=cw.alarm_threshold,
                ComparisonOperator="GreaterThanThreshold",
                TreatMissingData="notBreaching",
                AlarmActions=[topic_arn],
                OKActions=[topic_arn],
                Unit="Percent",
            )
            names.append(name)
        return names

    # -- down ---------------------------------------------------------------------

    def down(self) -> dict[str, Any]:
        """Delete everything ``up`` creates; missing resources are skipped."""
        out: dict[str, Any] = {"alarms": self._delete_alarms(keep=set())}
        out["lake"] = self.lake.down()
        out["tables"] = [
            n for n in self.tables().values() if self._ignore_gone(self.dynamodb.delete_table, TableName=n)
        ]
        topic_arn = self._find_topic()
        if topic_arn:
            for page in self.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
                for sub in page["Subscriptions"]:
                    if sub["SubscriptionArn"].startswith("arn:"):
                        self._ignore_gone(self.sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
            self.sns.delete_topic(TopicArn=topic_arn)
        out["topic_arn"] = topic_arn
        queue = self.settings.sinks.sns.sqs_subscription
        if queue:
            try:
                url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                self.sqs.delete_queue(QueueUrl=url)
            except ClientError as exc:
                if error_code(exc) not in NOT_FOUND_CODES:
                    raise
        out["stream"] = (
            self.stream_name
            if self._ignore_gone(self.kinesis.delete_stream, StreamName=self.stream_name, EnforceConsumerDeletion=True)
            else None
        )
        return out

    def _our_alarms(self) -> list[str]:
        """Names of the alarms ``up`` made, for any region: the base name or
        ``<base>-<region>``, on our namespace and metric (not someone else's
        alarm that happens to share the prefix)."""
        cw = self.settings.sinks.cloudwatch
        names = []
        for page in self.cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=cw.alarm_name):
            for alarm in page["MetricAlarms"]:
                name = alarm["AlarmName"]
                if (
                    (name == cw.alarm_name or name.startswith(f"{cw.alarm_name}-"))
                    and alarm.get("Namespace") == cw.namespace
                    and alarm.get("MetricName") == "PaymentFailureRate"
                ):
                    names.append(name)
        return names

    def _delete_alarms(self, keep: set[str]) -> list[str]:
        """Delete our alarms not in ``keep``; returns their names."""
        doomed = sorted(set(self._our_alarms()) - keep)
        for start in range(0, len(doomed), 100):  # DeleteAlarms takes at most 100 names
            self.cloudwatch.delete_alarms(AlarmNames=doomed[start : start + 100])
        if doomed:
            logger.info("deleted alarms %s", ", ".join(doomed))
        return doomed

    def _find_topic(self) -> Optional[str]:
        name = self.settings.sinks.sns.topic_name
        for page in self.sns.get_paginator("list_topics").paginate():
            for topic in page["Topics"]:
                if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                    return topic["TopicArn"]
        return None

    @staticmethod
    def _ignore_gone(call: Any, **kwargs: Any) -> bool:
        try:
            call(**kwargs)
            return True
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return False
            raise

    def _wait(self, ready: Any, what: str, state: str = "ACTIVE") -> None:
        deadline = time.monotonic() + self.wait_seconds
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not {state} after {self.wait_seconds:.0f}s")
            time.sleep(self.poll_seconds)

    def _wait_gone_if_deleting(self, status: Any, what: str) -> None:
        """After ``down``, AWS deletes tables and streams asynchronously; creating
        one of the same name meanwhile fails (or finds it and then loses it)."""

        def not_deleting() -> bool:
            try:
                return status() != "DELETING"
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND_CODES:
                    return True
                raise

        if not not_deleting():
            logger.info("%s is being deleted; waiting", what)
            self._wait(not_deleting, what, state="deleted")


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; prints what was created or deleted as JSON."""
    parser = argparse.ArgumentParser(prog="python -m cli.provision", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    settings = load_tool_settings()
    if settings is None:
        return 2
    provisioner = Provisioner(settings)
    result = provisioner.up() if args.action == "up" else provisioner.down()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
