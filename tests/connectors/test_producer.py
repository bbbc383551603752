"""Producer: batching, per-user keying and retry of failed Kinesis records."""

from __future__ import annotations

import uuid

import boto3
from kafka.admin import KafkaAdminClient, NewTopic

from cli.producer import paced, publish_kafka, publish_kinesis
from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings
from connectors.kafka.source import KafkaSource
from connectors.kinesis.source import KinesisSource
from tests.support.source_helpers import drain


def _events(n: int, users: int = 17) -> list[tuple[str, bytes]]:
    return [(f"u{i % users}", b'{"user_id":"u%d","n":%d}' % (i % users, i)) for i in range(n)]


def test_kafka_keeps_each_user_in_one_partition(kafka_broker):
    topic = f"p-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.address)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    settings = KafkaSourceSettings(brokers=[kafka_broker.address], topic=topic, bounded=True, fetch_max_wait_ms=50)
    events = _events(3000)
    assert publish_kafka(settings, events, linger_ms=5) == 3000

    source = KafkaSource(settings, 500, 30)
    users_by_part, got = {}, []
    for name in source.list_parts():
        part = source.build_part("in", name, None)
        lines = [line for c in drain(part) for line in c.lines]
        part.close()
        got.extend(lines)
        users_by_part[name] = {line.split(b'"')[3] for line in lines}
        for user in users_by_part[name]:  # a user's events in the order sent
            ns = [int(line.rsplit(b":", 1)[1][:-1]) for line in lines if line.split(b'"')[3] == user]
            assert ns == sorted(ns)
    assert sorted(got) == sorted(p for _, p in events)
    seen = [u for users in users_by_part.values() for u in users]
    assert len(seen) == len(set(seen)) == 17  # no user in two partitions


class _FlakyKinesis:
    """Fails every third record of the first PutRecords call, as a throttled shard does."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.stored: list[bytes] = []

    def put_records(self, StreamName, Records):
        self.calls.append(len(Records))
        results, failed = [], 0
        for i, rec in enumerate(Records):
            if len(self.calls) == 1 and i % 3 == 0:
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"})
                failed += 1
            else:
                self.stored.append(rec["Data"])
                results.append({"SequenceNumber": "1", "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": failed, "Records": results}


def test_kinesis_batches_of_500_and_resends_only_failed_records():
    client = _FlakyKinesis()
    events = _events(1200)
    assert publish_kinesis(KinesisSourceSettings(stream_name="s"), AwsSettings(), events, client=client) == 1200
    assert client.calls[0] == 500 and client.calls[1] == 167  # 167 failed of the first 500
    assert max(client.calls) <= 500
    assert sorted(client.stored) == sorted(p for _, p in events)


def test_kinesis_against_moto_round_trip(moto):
    stream = f"p-{uuid.uuid4().hex[:10]}"
    kinesis = boto3.client("kinesis", endpoint_url=moto.url, region_name="us-east-1")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    settings = KinesisSourceSettings(
        stream_name=stream, bounded=True, min_poll_interval_seconds=0, idle_poll_interval_seconds=0.02
    )
    aws = AwsSettings(endpoint_url=moto.url)
    events = _events(1100)
    assert publish_kinesis(settings, aws, events) == 1100
    source = KinesisSource(settings, aws, 1000, 30)
    got = [line for name in source.list_parts() for c in drain(source.build_part("in", name, None)) for line in c.lines]
    assert sorted(got) == sorted(p for _, p in events)


def test_paced_limits_the_rate_without_dropping():
    items = list(paced(iter(range(5)), rate=0))
    assert items == [0, 1, 2, 3, 4]
