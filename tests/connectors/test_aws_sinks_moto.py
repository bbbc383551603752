"""AWS sinks against a real moto_server: fed through a tiny Bytewax flow, read back with boto3."""

from __future__ import annotations

import base64
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from config import load_settings
from connectors.sinks.cloudwatch import CloudWatchSink
from connectors.sinks.dead_letter import JsonlDeadLetterWriter, SqsDeadLetterWriter
from connectors.sinks.delivery import BufferedAwsSink, SinkError
from connectors.sinks.dynamodb import ALERTS, DynamoDbSink
from connectors.sinks.outputs import build_outputs
from connectors.sinks.sns import SnsSink
from connectors.sinks.stdout import StdoutSink
from operators.alerts import FAILURE_RATE, FRAUD_SUSPECTED, OPEN, RESOLVED, make_alert
from operators.records import TransactionBatch
from tests.support.aws_helpers import (
    aws_settings,
    client,
    delivery_stat,
    iso,
    metric_values,
    provision,
    recent_minute,
    scan,
    sqs_messages,
    wait_until,
)
from tests.support.tcp_proxy import TcpProxy

REGIONS = ("US-EAST", "US-WEST", "EU-WEST")


def minute_records(start, spike_region=None):
    out = []
    for region in REGIONS:
        failures = 12 if region == spike_region else 2
        out.append(
            {
                "region": region,
                "window_start": iso(start),
                "window_end": iso(start + timedelta(minutes=1)),
                "count": 200,
                "failures": failures,
                "failure_rate": failures / 2,
                "fraud_suspected": 1,
                "review_required": 2,
            }
        )
    return out


def failure_alerts(start, region="US-WEST"):
    incident = f"FAILURE_RATE:{region}:{iso(start)}"
    t0 = start.timestamp() + 60
    return [
        make_alert(
            FAILURE_RATE,
            OPEN,
            region,
            incident,
            t0,
            6.0,
            2.0,
            "failure rate 6.0%",
            region=region,
            details={"count": 200, "failures": 12},
        ),
        make_alert(
            FAILURE_RATE,
            RESOLVED,
            region,
            incident,
            t0 + 60,
            1.0,
            2.0,
            "failure rate back to 1.0%",
            region=region,
            details={"count": 200, "failures": 2},
        ),
    ]


def fraud_alert(i, start):
    return make_alert(
        FRAUD_SUSPECTED,
        OPEN,
        f"t{i}",
        f"FRAUD_SUSPECTED:t{i}",
        start.timestamp() + i,
        70.0,
        50.0,
        f"transaction t{i} scored 70",
        region="EU-WEST",
        user_id=f"u{i}",
        transaction_id=f"t{i}",
    )


def run(flow_items, sinks):
    flow = Dataflow("aws_sinks_test")
    for name, (items, sink_list) in flow_items.items():
        stream = op.input(f"in_{name}", flow, TestingSource(items))
        for i, sink in enumerate(sink_list):
            op.output(f"out_{name}_{i}", stream, sink)
    run_main(flow)


def dead_letters(settings):
    path = settings.sinks.dead_letter.path
    try:
        with open(path, "rb") as fh:
            return [orjson.loads(line) for line in fh]
    except FileNotFoundError:
        return []


@pytest.fixture
def settings(moto, tmp_path):
    s = aws_settings(moto.url, tmp_path)
    provision(s)
    return s


def test_all_sinks_write_what_the_flow_gives_them(settings):
    start = recent_minute(30)
    minutes = [minute_records(start), minute_records(start + timedelta(minutes=1), spike_region="US-WEST")]
    alerts = failure_alerts(start + timedelta(minutes=1)) + [fraud_alert(i, start) for i in range(3)]
    flagged = [
        {
            "transaction_id": "t1",
            "amount": 9000.5,
            "currency": "JPY",
            "fraud_score": 60,
            "fraud_status": "FRAUD_SUSPECTED",
            "region": "EU-WEST",
            "merchant_name": "Test shop",
        }
    ]
    batch = TransactionBatch(orjson.dumps(flagged[0]) + b"\n", 1, flagged)
    outputs = build_outputs(settings)
    assert [type(s).__name__ for s in outputs.metrics] == ["CloudWatchSink", "DynamoDbSink"]
    assert [type(s).__name__ for s in outputs.alerts] == ["SnsSink", "DynamoDbSink"]
    run(
        {
            "metrics": ([(m[0]["window_start"], m) for m in minutes], outputs.metrics),
            "alerts": ([(a["key"], a) for a in alerts], outputs.alerts),
            "transactions": ([("part-0", batch)], outputs.transactions),
        },
        [],
    )

    # CloudWatch: the spiking region's minute above 2 %, the others below; all-regions series without dimension.
    window = (start - timedelta(minutes=1), start + timedelta(minutes=3))
    west = metric_values(settings, "PaymentFailureRate", "US-WEST", *window)
    east = metric_values(settings, "PaymentFailureRate", "US-EAST", *window)
    total = metric_values(settings, "PaymentFailureRate", None, *window)
    spike_ts = start + timedelta(minutes=1)
    assert {ts.replace(tzinfo=None): v for ts, v in west.items()} == {
        start.replace(tzinfo=None): pytest.approx(1.0),
        spike_ts.replace(tzinfo=None): pytest.approx(6.0),
    }
    assert all(v < 2 for v in east.values()) and len(east) == 2
    # moto answers a query without dimensions with every series of the metric (real CloudWatch matches the
    # exact, empty, dimension set), so the all-regions series is checked through list_metrics and sums.
    listed = client("cloudwatch", settings).list_metrics(
        Namespace=settings.sinks.cloudwatch.namespace, MetricName="PaymentFailureRate"
    )["Metrics"]
    assert {str(m["Dimensions"]) for m in listed} == {"[]"} | {str([{"Name": "Region", "Value": r}]) for r in REGIONS}
    everything = metric_values(settings, "TransactionCount", None, *window, stat="Sum")
    assert sorted(everything.values()) == [600 + 600, 600 + 600]  # three regions + the all-regions series
    assert len(total) == 2

    # SNS -> SQS: one message per alert, attributes for filtering, JSON body.
    envelopes = sqs_messages(settings, expect=len(alerts))
    assert len(envelopes) == len(alerts)
    by_id = {e["MessageAttributes"]["alert_id"]["Value"]: e for e in envelopes}
    assert set(by_id) == {a["alert_id"] for a in alerts}
    opened = by_id[alerts[0]["alert_id"]]
    assert {k: v["Value"] for k, v in opened["MessageAttributes"].items()} == {
        "alert_type": "FAILURE_RATE",
        "severity": "CRITICAL",
        "region": "US-WEST",
        "state": "OPEN",
        "alert_id": alerts[0]["alert_id"],
    }
    assert opened["Subject"] == "Paywatch failure rate 6.0%"  # a FAILURE_RATE subject is its message, in words
    assert orjson.loads(opened["Message"]) == alerts[0]

    # DynamoDB: items under deterministic keys with numbers as Decimal, TTL set.
    ddb = settings.sinks.dynamodb
    stored = {i["alert_id"]: i for i in scan(settings, ddb.alerts_table)}
    assert set(stored) == {a["alert_id"] for a in alerts}
    item = stored[alerts[0]["alert_id"]]
    assert item["value"] == Decimal("6") and isinstance(item["value"], Decimal)
    assert item["details"] == {"count": Decimal(200), "failures": Decimal(12)}
    assert item["user_id"] is None and item["state"] == "OPEN"
    assert int(item["expires_at"]) > time.time() + 29 * 86400
    aggs = scan(settings, ddb.aggregates_table)
    assert len(aggs) == 6
    west_spike = [a for a in aggs if a["region"] == "US-WEST" and a["window_start"] == iso(spike_ts)]
    assert west_spike[0]["failure_rate"] == Decimal("6.0") and west_spike[0]["count"] == 200
    txns = scan(settings, ddb.transactions_table)
    assert txns == [
        dict(flagged[0], amount=Decimal("9000.5"), fraud_score=Decimal(60), expires_at=txns[0]["expires_at"])
    ]
    assert dead_letters(settings) == []


def test_replay_overwrites_dynamodb_items(settings):
    start = recent_minute(200)
    alerts = [fraud_alert(i, start) for i in range(30)]
    writer = JsonlDeadLetterWriter(settings.sinks.dead_letter.path)
    for _ in range(2):  # a resume replays the same records
        run({"alerts": ([(a["key"], a) for a in alerts + alerts[:5]], [DynamoDbSink(settings, ALERTS, writer)])}, [])
    assert len(scan(settings, settings.sinks.dynamodb.alerts_table)) == 30


def test_missing_table_is_dead_lettered_not_fatal(settings, caplog):
    start = recent_minute(400)
    alerts = [fraud_alert(i, start) for i in range(4)]
    bad = settings.model_copy(
        update={
            "sinks": settings.sinks.model_copy(
                update={"dynamodb": settings.sinks.dynamodb.model_copy(update={"alerts_table": "no-such-table"})}
            )
        }
    )
    writer = JsonlDeadLetterWriter(settings.sinks.dead_letter.path)
    sink = DynamoDbSink(bad, ALERTS, writer)
    run({"alerts": ([(a["key"], a) for a in alerts], [sink])}, [])
    records = dead_letters(settings)
    assert len(records) == 4
    assert {r["error_code"] for r in records} == {"ResourceNotFoundException"}
    assert {r["target"] for r in records} == {"DynamoDB table no-such-table"}
    replayed = {orjson.loads(r["raw"])["alert_id"]["S"] for r in records}
    assert replayed == {a["alert_id"] for a in alerts}
    assert sum("permanent error" in r.getMessage() for r in caplog.records) == 1


def test_fail_on_error_stops_the_flow(settings):
    bad = settings.model_copy(
        update={
            "sinks": settings.sinks.model_copy(
                update={
                    "retry": settings.sinks.retry.model_copy(update={"fail_on_error": True}),
                    "sns": settings.sinks.sns.model_copy(
                        update={"topic_arn": "arn:aws:sns:us-east-1:123456789012:missing"}
                    ),
                }
            )
        }
    )
    writer = JsonlDeadLetterWriter(settings.sinks.dead_letter.path)
    alerts = failure_alerts(recent_minute(300))
    with pytest.raises(Exception) as info:
        run({"alerts": ([(a["key"], a) for a in alerts], [SnsSink(bad, writer)])}, [])
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, SinkError) and "fail_on_error" in str(e) for e in chain), chain
    assert len(dead_letters(settings)) == 2


def test_stale_datums_go_to_dead_letters(settings):
    old = recent_minute(60 * 24 * 15 + 7)
    writer = JsonlDeadLetterWriter(settings.sinks.dead_letter.path)
    run({"metrics": ([("k", minute_records(old))], [CloudWatchSink(settings, writer)])}, [])
    records = dead_letters(settings)
    assert len(records) == 3 * 5 + 5
    assert {r["reason"] for r in records} == {"cloudwatch_timestamp_out_of_range"}


def test_sqs_dead_letter_writer(settings):
    sqs = client("sqs", settings)
    url = sqs.create_queue(QueueName=f"dl-{settings.sinks.sns.topic_name}")["QueueUrl"]
    writer = SqsDeadLetterWriter(sqs, url)
    writer.write([{"reason": "invalid_json", "raw": "x" * 10, "n": i} for i in range(13)])
    got = []
    for _ in range(5):
        got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(orjson.loads(m["Body"])["n"] for m in got) == list(range(13))


def _reassembled(bodies: list[str]) -> list[dict]:
    """Whole records from SQS bodies: single ones as they are, parts joined by record_id in part order."""
    whole, parts = [], {}
    for body in bodies:
        message = orjson.loads(body)
        if "dead_letter_part" in message:
            parts.setdefault(message["record_id"], []).append(message)
        else:
            whole.append(message)
    for pieces in parts.values():
        pieces.sort(key=lambda p: p["dead_letter_part"])
        assert [p["dead_letter_part"] for p in pieces] == list(range(1, pieces[0]["parts"] + 1))
        whole.append(orjson.loads(b"".join(base64.b64decode(p["data_base64"]) for p in pieces)))
    return whole


def test_sqs_dead_letters_over_the_message_limit_arrive_whole_in_parts(settings):
    """A too_large payload is kept whole: split into parts under 256 KiB, never cut."""
    sqs = client("sqs", settings)
    url = sqs.create_queue(QueueName=f"dl-big-{settings.sinks.sns.topic_name}")["QueueUrl"]
    huge = {"reason": "too_large", "source": "f.jsonl", "position": 7, "raw": '{"x":"' + 'é"\\' * 240_000 + '"}'}
    mid = [{"reason": "invalid_json", "source": "f.jsonl", "position": i, "raw": "y" * 100_000} for i in range(5)]
    SqsDeadLetterWriter(sqs, url).write([huge, *mid])
    bodies = []
    for _ in range(20):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        bodies += [m["Body"] for m in batch]
        if not batch and bodies:
            break
    assert max(len(b.encode()) for b in bodies) <= 256 * 1024
    got = sorted(_reassembled(bodies), key=lambda r: r["position"])
    assert got == sorted([huge, *mid], key=lambda r: r["position"])


def test_outage_through_proxy_delivers_everything_once_by_key(moto, tmp_path):
    proxy = TcpProxy(moto.port).start()
    try:
        settings = aws_settings(proxy.url, tmp_path)
        provision(settings)
        outputs = build_outputs(settings)
        start = recent_minute(90)
        minutes = [
            minute_records(start + timedelta(minutes=i), spike_region="US-WEST" if i == 3 else None) for i in range(10)
        ]
        alerts = [a for i in range(5) for a in failure_alerts(start + timedelta(minutes=2 * i), REGIONS[i % 3])]
        sinks = outputs.metrics + outputs.alerts

        def cut_and_restore(item):
            key, value = item
            if key == "cut":
                proxy.stop()
            if key == "restore":
                # Restore only once every sink has seen the outage, so the test proves a recovery.
                try:
                    wait_until(
                        "every sink saw the outage", lambda: all(delivery_stat(s, "transient_errors") for s in sinks)
                    )
                finally:
                    proxy.start()
            return item

        flow = Dataflow("outage")
        control = [("cut", None)] + [(m[0]["window_start"], m) for m in minutes] + [("restore", None)]
        stream = op.map("outage", op.input("in", flow, TestingSource(control, batch_size=1)), cut_and_restore)
        metrics = op.filter("metrics_only", stream, lambda kv: kv[1] is not None)
        for i, sink in enumerate(outputs.metrics):
            op.output(f"m{i}", metrics, sink)
        alert_items = op.input("alerts", flow, TestingSource([(a["key"], a) for a in alerts], batch_size=1))
        for i, sink in enumerate(outputs.alerts):
            op.output(f"a{i}", alert_items, sink)
        run_main(flow)

        for sink in sinks:
            assert delivery_stat(sink, "transient_errors") > 0, sink.name
            assert delivery_stat(sink, "dead_lettered") == 0, sink.name
        ddb = settings.sinks.dynamodb
        assert len(scan(settings, ddb.aggregates_table)) == 30
        assert {i["alert_id"] for i in scan(settings, ddb.alerts_table)} == {a["alert_id"] for a in alerts}
        assert len(scan(settings, ddb.alerts_table)) == len(alerts)
        envelopes = sqs_messages(settings, expect=len(alerts))
        received = {e["MessageAttributes"]["alert_id"]["Value"] for e in envelopes}
        assert received == {a["alert_id"] for a in alerts}
        west = metric_values(settings, "PaymentFailureRate", "US-WEST", start, start + timedelta(minutes=11))
        assert len(west) == 10 and max(west.values()) == pytest.approx(6.0)
        assert dead_letters(settings) == []
    finally:
        proxy.stop()


def test_kafka_dead_letter_writer(kafka_broker):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    from connectors.sinks.dead_letter import KafkaDeadLetterWriter

    topic = "dead-letters-test"
    admin = KafkaAdminClient(bootstrap_servers=[kafka_broker.address])
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    writer = KafkaDeadLetterWriter({"bootstrap_servers": [kafka_broker.address]}, topic)
    writer.write([{"reason": "sink_permanent_error", "source": "sink:sns", "n": i} for i in range(3)])
    writer.close()
    consumer = KafkaConsumer(bootstrap_servers=[kafka_broker.address], group_id=None, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 3 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(orjson.loads(r.value) for r in records)
    consumer.close()
    assert [r["n"] for r in got] == [0, 1, 2]
    assert {r["source"] for r in got} == {"sink:sns"}


def test_fifo_topic_orders_by_key_and_deduplicates_by_alert_id(moto, tmp_path):
    tag = uuid.uuid4().hex[:8]
    settings = aws_settings(
        moto.url,
        tmp_path,
        {"sinks": {"sns": {"topic_name": f"alerts-{tag}.fifo", "sqs_subscription": f"alerts-q-{tag}.fifo"}}},
    )
    provision(settings)
    start = recent_minute(500)
    alerts = [a for i, region in enumerate(REGIONS) for a in failure_alerts(start + timedelta(minutes=i), region)] + [
        fraud_alert(i, start) for i in range(3)
    ]
    writer = JsonlDeadLetterWriter(settings.sinks.dead_letter.path)
    sinks = [SnsSink(settings, writer) for _ in range(2)]
    assert all(sink.fifo for sink in sinks)
    for sink in sinks:  # the second run is a replay of the same alerts (a resume after a crash)
        run({"alerts": ([(a["key"], a) for a in alerts], [sink])}, [])
        assert delivery_stat(sink, "delivered") == len(alerts)

    sqs = client("sqs", settings)
    url = sqs.get_queue_url(QueueName=settings.sinks.sns.sqs_subscription)["QueueUrl"]
    received = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        for message in batch:
            received.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    # One message per alert although every alert was published twice: deduplicated by alert_id.
    by_id = {a["alert_id"]: a for a in alerts}
    bodies = [orjson.loads(orjson.loads(m["Body"])["Message"]) for m in received]
    assert sorted(b["alert_id"] for b in bodies) == sorted(by_id)
    for message, body in zip(received, bodies, strict=False):
        assert message["Attributes"]["MessageDeduplicationId"] == body["alert_id"]
        assert message["Attributes"]["MessageGroupId"] == by_id[body["alert_id"]]["key"]
        assert body == by_id[body["alert_id"]]
    # Within a group (a region's incidents, a transaction's alert) in publishing order: OPEN before RESOLVED.
    groups = defaultdict(list)
    for body in bodies:
        groups[body["key"]].append(body["state"])
    assert {k: v for k, v in groups.items() if k in REGIONS} == {r: ["OPEN", "RESOLVED"] for r in REGIONS}
    assert dead_letters(settings) == []


def test_default_settings_build_no_aws_sink(monkeypatch):
    import boto3

    def no_aws(*_args, **_kwargs):
        raise AssertionError("an AWS client was created")

    monkeypatch.setattr(boto3, "client", no_aws)
    monkeypatch.setattr(boto3.session.Session, "client", no_aws)
    outputs = build_outputs(load_settings(environ={}))  # config/defaults.yaml alone
    assert [type(s) for s in outputs.alerts] == [StdoutSink]
    assert [type(s) for s in outputs.metrics] == [StdoutSink]
    assert [type(s) for s in outputs.dead_letters] == [StdoutSink]
    assert outputs.transactions == []

    # The same inspection does see AWS sinks when one is switched on.
    for name, kind in (("CLOUDWATCH", "CloudWatchSink"), ("SNS", "SnsSink"), ("DYNAMODB", "DynamoDbSink")):
        on = build_outputs(load_settings(environ={f"PAYWATCH__SINKS__{name}__ENABLED": "true"}))
        aws = [s for s in on.alerts + on.metrics + on.transactions + on.dead_letters if isinstance(s, BufferedAwsSink)]
        assert aws and {type(s).__name__ for s in aws} == {kind}
