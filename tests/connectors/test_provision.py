"""``python -m cli.provision up|down`` against moto_server: idempotent, and creates what docs/sinks.md says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from cli.provision import main
from config import load_settings
from connectors.sinks.cloudwatch import minute_datums

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, moto_url: str, sinks: dict, simulator: dict | None = None) -> tuple[Path, str]:
    """A PAYWATCH_CONFIG file with fresh resource names; returns its path and the name tag."""
    tag = uuid.uuid4().hex[:8]
    data = {
        "aws": {"endpoint_url": moto_url, "region": "us-east-1"},
        "source": {"kinesis": {"stream_name": f"payments-{tag}"}},
        "sinks": {
            "dynamodb": {
                "transactions_table": f"txn-{tag}",
                "alerts_table": f"alerts-{tag}",
                "aggregates_table": f"aggs-{tag}",
            },
        },
    }
    for section, values in sinks.items():
        data["sinks"].setdefault(section, {}).update(
            {k: (v.format(tag=tag) if isinstance(v, str) else v) for k, v in values.items()}
        )
    if simulator:
        data["simulator"] = simulator
    path = tmp_path / f"paywatch-{tag}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, tag


def _clients(moto_url: str) -> dict:
    return {
        name: boto3.client(name, region_name="us-east-1", endpoint_url=moto_url)
        for name in ("cloudwatch", "dynamodb", "sns", "sqs", "kinesis")
    }


def _change_sinks(config: Path, **sections: dict) -> None:
    """Edit the ``sinks`` sections of a config file between two provisioning runs."""
    data = yaml.safe_load(config.read_text())
    for section, values in sections.items():
        data["sinks"].setdefault(section, {}).update(values)
    config.write_text(yaml.safe_dump(data))


def _run_cli(config: Path, action: str) -> dict:
    """The real entry point, as an operator runs it: ``python -m cli.provision ACTION``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH")}
    env["PAYWATCH_CONFIG"] = str(config)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.provision", action], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _run_main(config: Path, action: str, monkeypatch, capsys) -> dict:
    """``main([ACTION])`` in process, reading the settings from the environment like the CLI."""
    for name in [k for k in os.environ if k.startswith("PAYWATCH")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PAYWATCH_CONFIG", str(config))
    capsys.readouterr()
    assert main([action]) == 0
    return json.loads(capsys.readouterr().out)


def _alarms(cw, namespace: str) -> dict:
    """Alarms on this test's namespace, by name (the shared moto_server holds other tests' alarms)."""
    found = {}
    for page in cw.get_paginator("describe_alarms").paginate():
        for alarm in page["MetricAlarms"]:
            if alarm["Namespace"] == namespace:
                found[alarm["AlarmName"]] = alarm
    return found


def _dims(dimensions: list) -> frozenset:
    return frozenset((d["Name"], d["Value"]) for d in dimensions)


def _gone(call, code_fragment: str, **kwargs) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        return code_fragment in exc.response["Error"]["Code"]
    return False


def _assert_nothing_left(c: dict, settings, topic_arn: str) -> None:
    ddb = settings.sinks.dynamodb
    assert _alarms(c["cloudwatch"], settings.sinks.cloudwatch.namespace) == {}
    tables = c["dynamodb"].list_tables()["TableNames"]
    assert not {ddb.alerts_table, ddb.aggregates_table, ddb.transactions_table} & set(tables)
    assert topic_arn not in {t["TopicArn"] for t in c["sns"].list_topics()["Topics"]}
    assert not [s for s in c["sns"].list_subscriptions()["Subscriptions"] if s["TopicArn"] == topic_arn]
    assert _gone(c["sqs"].get_queue_url, "NonExistentQueue", QueueName=settings.sinks.sns.sqs_subscription)
    assert settings.source.kinesis.stream_name not in c["kinesis"].list_streams()["StreamNames"]
    assert _gone(
        c["kinesis"].describe_stream_summary, "ResourceNotFound", StreamName=settings.source.kinesis.stream_name
    )


def test_up_twice_creates_everything_once_and_down_twice_removes_it(moto, tmp_path, monkeypatch, capsys):
    regions = ["US-EAST", "EU-WEST", "AP-SOUTH"]
    config, tag = _config(
        tmp_path,
        moto.url,
        {
            "cloudwatch": {"namespace": "Paywatch-{tag}"},  # alarm_regions null: one alarm per simulator region
            "sns": {
                "topic_name": "alerts-{tag}",
                "sqs_subscription": "alerts-q-{tag}",
                "email_subscription": "oncall-{tag}@example.com",
            },
            "dynamodb": {"ttl_days": 7, "ttl_attribute": "purge_at"},
        },
        simulator={"regions": regions},
    )
    settings = load_settings(config, environ={})
    c = _clients(moto.url)

    first = _run_cli(config, "up")
    second = _run_main(config, "up", monkeypatch, capsys)
    topic_arn = first["topic_arn"]
    assert topic_arn.endswith(f":alerts-{tag}") and second["topic_arn"] == topic_arn
    assert (
        first["alarms"]
        == second["alarms"]
        == ["HighPaymentFailureRate"] + [f"HighPaymentFailureRate-{r}" for r in regions]
    )

    # Alarms: the all-regions one without dimension, one per configured region; the product brief's rule.
    alarms = _alarms(c["cloudwatch"], settings.sinks.cloudwatch.namespace)
    assert set(alarms) == set(first["alarms"])
    assert alarms["HighPaymentFailureRate"]["Dimensions"] == []
    for region in regions:
        assert alarms[f"HighPaymentFailureRate-{region}"]["Dimensions"] == [{"Name": "Region", "Value": region}]
    for alarm in alarms.values():
        assert alarm["MetricName"] == "PaymentFailureRate"
        assert alarm["Statistic"] == "Average"
        assert alarm["Threshold"] == 2.0
        assert alarm["Period"] == 60
        assert alarm["EvaluationPeriods"] == 1
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == [topic_arn]
        assert alarm["OKActions"] == [topic_arn]

    # DynamoDB: on-demand, encrypted, TTL on the configured attribute, the keys the sinks write.
    ddb = settings.sinks.dynamodb
    keys = {
        ddb.alerts_table: [("alert_id", "HASH")],
        ddb.aggregates_table: [("region", "HASH"), ("window_start", "RANGE")],
        ddb.transactions_table: [("transaction_id", "HASH")],
    }
    assert sorted(first["tables"]) == sorted(keys)
    for name, schema in keys.items():
        table = c["dynamodb"].describe_table(TableName=name)["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["SSEDescription"]["Status"] == "ENABLED"
        assert table["SSEDescription"]["SSEType"] == "KMS"
        assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == schema
        ttl = c["dynamodb"].describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "purge_at"}

    # SNS: a standard topic, each subscription once after two runs, and the queue really receives.
    attributes = c["sns"].get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    assert attributes.get("FifoTopic", "false") == "false"
    subs = c["sns"].list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    queue_url = c["sqs"].get_queue_url(QueueName=f"alerts-q-{tag}")["QueueUrl"]
    queue = c["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert sorted((s["Protocol"], s["Endpoint"]) for s in subs) == [
        ("email", f"oncall-{tag}@example.com"),
        ("sqs", queue["QueueArn"]),
    ]
    statement = json.loads(queue["Policy"])["Statement"]
    assert [
        (s["Effect"], s["Action"], s["Resource"], s["Condition"]["ArnEquals"]["aws:SourceArn"]) for s in statement
    ] == [("Allow", "sqs:SendMessage", queue["QueueArn"], topic_arn)]
    c["sns"].publish(TopicArn=topic_arn, Message="hello")
    got = c["sqs"].receive_message(QueueUrl=queue_url, WaitTimeSeconds=2).get("Messages", [])
    assert [json.loads(m["Body"])["Message"] for m in got] == ["hello"]

    # Kinesis: the source stream, on-demand, encrypted (it holds the producers' card numbers).
    stream = c["kinesis"].describe_stream_summary(StreamName=f"payments-{tag}")["StreamDescriptionSummary"]
    assert stream["StreamStatus"] == "ACTIVE"
    assert stream["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert (stream["EncryptionType"], stream["KeyId"]) == ("KMS", "alias/aws/kinesis")

    gone = _run_main(config, "down", monkeypatch, capsys)
    assert gone["topic_arn"] == topic_arn and sorted(gone["tables"]) == sorted(keys)
    _assert_nothing_left(c, settings, topic_arn)
    again = _run_cli(config, "down")  # nothing left to delete: still exit 0
    assert again["topic_arn"] is None and again["tables"] == [] and again["stream"] is None
    _assert_nothing_left(c, settings, topic_arn)


def test_fifo_topic_custom_alarm_and_no_ttl(moto, tmp_path, monkeypatch, capsys):
    config, tag = _config(
        tmp_path,
        moto.url,
        {
            "cloudwatch": {
                "namespace": "Paywatch-{tag}",
                "alarm_name": "PaywatchFailures-{tag}",
                "alarm_threshold": 3.5,
                "alarm_period_seconds": 300,
                "alarm_evaluation_periods": 3,
                "alarm_regions": ["US-WEST"],
                "region_dimension": "Zone",
                "dimensions": {"Environment": "staging"},
            },
            "sns": {"topic_name": "alerts-{tag}.fifo", "sqs_subscription": "alerts-q-{tag}.fifo"},
            "dynamodb": {"ttl_days": None},
        },
    )
    settings = load_settings(config, environ={})
    c = _clients(moto.url)
    for _ in range(2):
        out = _run_main(config, "up", monkeypatch, capsys)
    topic_arn = out["topic_arn"]

    attributes = c["sns"].get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    assert attributes["FifoTopic"] == "true"
    assert attributes["ContentBasedDeduplication"] == "false"  # the sink sends alert_id as the deduplication id
    queue_url = c["sqs"].get_queue_url(QueueName=f"alerts-q-{tag}.fifo")["QueueUrl"]
    queue = c["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert queue["FifoQueue"] == "true"
    subs = c["sns"].list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("sqs", queue["QueueArn"])]

    # The alarms follow the settings, and watch exactly the series the CloudWatch sink writes.
    alarms = _alarms(c["cloudwatch"], settings.sinks.cloudwatch.namespace)
    assert set(alarms) == {f"PaywatchFailures-{tag}", f"PaywatchFailures-{tag}-US-WEST"}
    for alarm in alarms.values():
        assert (alarm["Threshold"], alarm["Period"], alarm["EvaluationPeriods"]) == (3.5, 300, 3)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [topic_arn]
    record = {
        "region": "US-WEST",
        "window_start": "2026-01-01T10:00:00Z",
        "count": 10,
        "failures": 1,
        "fraud_suspected": 0,
        "review_required": 0,
    }
    written = {
        _dims(d["Dimensions"])
        for d in minute_datums([record], "Zone", {"Environment": "staging"})
        if d["MetricName"] == "PaymentFailureRate"
    }
    assert (
        {_dims(a["Dimensions"]) for a in alarms.values()}
        == written
        == {frozenset({("Environment", "staging")}), frozenset({("Environment", "staging"), ("Zone", "US-WEST")})}
    )

    for name in settings.sinks.dynamodb.alerts_table, settings.sinks.dynamodb.aggregates_table:
        ttl = c["dynamodb"].describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "DISABLED"

    for _ in range(2):
        _run_main(config, "down", monkeypatch, capsys)
    _assert_nothing_left(c, settings, topic_arn)


def test_bad_settings_exit_2_naming_the_problem(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAYWATCH_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["up"]) == 2
    assert "absent.yaml" in capsys.readouterr().err


@pytest.mark.integration
def test_up_encrypts_a_stream_created_unencrypted(moto, tmp_path, monkeypatch, capsys):
    config, tag = _config(tmp_path, moto.url, {})
    kinesis = _clients(moto.url)["kinesis"]
    kinesis.create_stream(StreamName=f"payments-{tag}", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    _run_main(config, "up", monkeypatch, capsys)
    stream = kinesis.describe_stream_summary(StreamName=f"payments-{tag}")["StreamDescriptionSummary"]
    assert (stream["EncryptionType"], stream["KeyId"]) == ("KMS", "alias/aws/kinesis")
    _run_main(config, "down", monkeypatch, capsys)


def test_up_turns_ttl_off_when_the_settings_drop_it(moto, tmp_path, monkeypatch, capsys):
    config, tag = _config(tmp_path, moto.url, {"dynamodb": {"ttl_days": 7, "ttl_attribute": "purge_at"}})
    _run_main(config, "up", monkeypatch, capsys)
    c = _clients(moto.url)
    table = f"alerts-{tag}"
    assert (
        c["dynamodb"].describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    )
    _change_sinks(config, dynamodb={"ttl_days": None})
    _run_main(config, "up", monkeypatch, capsys)
    assert (
        c["dynamodb"].describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"
    )
    _run_main(config, "down", monkeypatch, capsys)


def test_up_converges_on_changed_regions_and_ttl_attribute_and_down_removes_every_region(
    moto, tmp_path, monkeypatch, capsys
):
    config, tag = _config(
        tmp_path,
        moto.url,
        {
            "cloudwatch": {"namespace": "Paywatch-{tag}", "alarm_regions": ["US-EAST", "EU-WEST"]},
            "dynamodb": {"ttl_days": 7, "ttl_attribute": "purge_at"},
        },
    )
    namespace = f"Paywatch-{tag}"
    c = _clients(moto.url)
    # Someone else's alarm sharing the name prefix, on another namespace: never ours to delete.
    c["cloudwatch"].put_metric_alarm(
        AlarmName=f"HighPaymentFailureRate-Other-{tag}",
        Namespace=f"Other-{tag}",
        MetricName="PaymentFailureRate",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    _run_main(config, "up", monkeypatch, capsys)

    _change_sinks(
        config, cloudwatch={"alarm_regions": ["US-EAST", "AP-SOUTH"]}, dynamodb={"ttl_attribute": "expires_at"}
    )
    out = _run_main(config, "up", monkeypatch, capsys)
    assert out["alarms_removed"] == ["HighPaymentFailureRate-EU-WEST"]
    assert set(_alarms(c["cloudwatch"], namespace)) == {
        "HighPaymentFailureRate",
        "HighPaymentFailureRate-US-EAST",
        "HighPaymentFailureRate-AP-SOUTH",
    }
    # TTL follows the renamed attribute (moto allows both halves of the change at once; AWS's
    # one-change-per-hour answer is the unit test's); nothing is left pending.
    for name in (f"alerts-{tag}", f"aggs-{tag}", f"txn-{tag}"):
        ttl = c["dynamodb"].describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    assert "pending" not in out

    # `down` with settings that no longer list AP-SOUTH still removes its alarm.
    _change_sinks(config, cloudwatch={"alarm_regions": ["US-EAST"]})
    gone = _run_main(config, "down", monkeypatch, capsys)
    assert gone["alarms"] == sorted(
        ["HighPaymentFailureRate", "HighPaymentFailureRate-AP-SOUTH", "HighPaymentFailureRate-US-EAST"]
    )
    assert _alarms(c["cloudwatch"], namespace) == {}
    assert set(_alarms(c["cloudwatch"], f"Other-{tag}")) == {f"HighPaymentFailureRate-Other-{tag}"}


def test_up_waits_out_a_deleting_table_and_reports_a_ttl_change_aws_defers(monkeypatch, caplog):
    """What moto cannot show: AWS deletes tables asynchronously (``up`` right after ``down`` finds
    DELETING) and allows one TTL change per table per hour. Recorded answers, in order."""
    from botocore.stub import Stubber

    from cli.provision import Provisioner

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(
        overrides={"sinks": {"dynamodb": {"ttl_days": 7, "ttl_attribute": "expires_at"}}}, environ={}
    )
    provisioner = Provisioner(settings, wait_seconds=5, poll_seconds=0)
    table = {"TableName": "txn", "TableStatus": "DELETING"}
    with Stubber(provisioner.dynamodb) as stub:
        stub.add_response("describe_table", {"Table": table}, {"TableName": "txn"})
        stub.add_client_error("describe_table", "ResourceNotFoundException", expected_params={"TableName": "txn"})
        stub.add_response("create_table", {"TableDescription": {**table, "TableStatus": "CREATING"}})
        stub.add_response("describe_table", {"Table": {**table, "TableStatus": "ACTIVE"}}, {"TableName": "txn"})
        stub.add_response(
            "describe_time_to_live",
            {"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": "purge_at"}},
        )
        stub.add_response(
            "update_time_to_live",
            {"TimeToLiveSpecification": {"Enabled": False, "AttributeName": "purge_at"}},
            {"TableName": "txn", "TimeToLiveSpecification": {"Enabled": False, "AttributeName": "purge_at"}},
        )
        stub.add_client_error(
            "update_time_to_live",
            "ValidationException",
            "Time to live has been modified multiple times within a fixed interval",
            expected_params={
                "TableName": "txn",
                "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expires_at"},
            },
        )
        assert provisioner._table_up("alerts", "txn") == "txn"
        stub.assert_no_pending_responses()
    [pending] = provisioner.pending
    assert "table txn" in pending and "expires_at" in pending and "modified multiple times" in pending
    assert "run `up` again" in pending
