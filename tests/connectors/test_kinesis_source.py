"""Kinesis source against moto_server, and shard lineage against a recorded ListShards answer."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from config.settings import AwsSettings, KinesisSourceSettings
from connectors.kinesis.shards import lineage, lineage_roots
from connectors.kinesis.source import DONE, KinesisSource
from observability.source_lag import lags
from tests.support.source_helpers import count_lines, drain, lines_of, read_all, step

DATA = Path(__file__).resolve().parents[1] / "data"
RECORDED = json.loads((DATA / "kinesis_list_shards_split_merge.json").read_text())
FAST = dict(min_poll_interval_seconds=0.0, idle_poll_interval_seconds=0.02)


# -- against moto_server ---------------------------------------------------------


@pytest.fixture
def kinesis(moto):
    return boto3.client("kinesis", endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def stream(kinesis) -> str:
    name = f"s-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    return name


def _put(kinesis, stream: str, start: int, n: int) -> list[bytes]:
    values = [b'{"n":%d}' % i for i in range(start, start + n)]
    for offset in range(0, n, 500):
        batch = values[offset : offset + 500]
        kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": v, "PartitionKey": f"user-{start + offset + i}"} for i, v in enumerate(batch)],
        )
    return values


def _source(moto, stream: str, batch_size: int = 1000, max_batch_size=None, **extra) -> KinesisSource:
    settings = KinesisSourceSettings(stream_name=stream, **{**FAST, **extra})
    aws = AwsSettings(endpoint_url=moto.url)
    return KinesisSource(settings, aws, batch_size, idle_seconds=30, max_batch_size=max_batch_size)


def test_bounded_reads_every_record_once_and_ends_with_done(moto, kinesis, stream):
    sent = _put(kinesis, stream, 0, 1500)
    source = _source(moto, stream, batch_size=200, bounded=True)
    parts = source.list_parts()
    assert len(parts) == 3 and parts[0] == f"kinesis:{stream}/shardId-000000000000"
    chunks, snaps = read_all(source)
    got = [line for cs in chunks.values() for line in lines_of(cs)]
    assert sorted(got) == sorted(sent)
    for name, cs in chunks.items():
        assert cs[-1].done and sum(c.done for c in cs) == 1
        assert all(c.n_parts == 3 and c.part == name for c in cs)
        shard = name.rpartition("/")[2]
        assert snaps[name][shard].startswith("AFTER:")
    assert all(lines_of(cs) for cs in chunks.values())  # every shard had data
    part = source.build_part("in", parts[1], snaps[parts[1]])
    assert lines_of(drain(part)) == []  # resumed after the end: nothing again
    assert lags()[("kinesis", "shardId-000000000001")] == 0  # MillisBehindLatest reported
    part.close()


def test_resume_from_snapshot_continues_exactly_after(moto, kinesis, stream):
    sent = _put(kinesis, stream, 0, 900)
    source = _source(moto, stream, batch_size=40, bounded=True)
    first, states = [], {}
    for name in source.list_parts():
        part = source.build_part("in", name, None)
        first.extend(lines_of(drain(part, until=count_lines(80))))
        states[name] = part.snapshot()
        part.close()
    assert 0 < len(first) < len(sent)
    more = _put(kinesis, stream, 900, 300)
    resumed, _ = read_all(_source(moto, stream, batch_size=40, bounded=True), states)
    rest = [line for cs in resumed.values() for line in lines_of(cs)]
    assert len(first) + len(rest) == len(sent) + len(more)
    assert sorted(first + rest) == sorted(sent + more)


def test_reads_grow_while_behind_and_shrink_once_caught_up(moto, kinesis):
    stream = f"s-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    sent = _put(kinesis, stream, 0, 2000)
    [name] = _source(moto, stream).list_parts()
    part = _source(moto, stream, batch_size=50, max_batch_size=400).build_part("in", name, None)
    backlog = drain(part, until=count_lines(len(sent)))
    assert lines_of(backlog) == sent
    sizes = [len(c.lines) for c in backlog if c.lines]
    assert sizes[:4] == [50, 100, 200, 400] and max(sizes) == 400  # full pages: Limit doubles, no further
    for _ in range(3):  # reads that find the shard caught up
        assert lines_of(step(part) or []) == []
    more = _put(kinesis, stream, 2000, 300)
    after = [c for c in drain(part, until=count_lines(len(more))) if c.lines]
    assert [len(c.lines) for c in after][:3] == [50, 100, 150]  # back to batch_size, then growing again
    part.close()


def test_latest_skips_what_was_there(moto, kinesis, stream):
    _put(kinesis, stream, 0, 200)
    source = _source(moto, stream, starting_position="LATEST")
    parts = [source.build_part("in", name, None) for name in source.list_parts()]
    new = _put(kinesis, stream, 200, 120)
    got: list[bytes] = []
    for _ in range(200):
        for part in parts:
            got.extend(lines_of(step(part) or []))
        if len(got) >= len(new):
            break
    assert sorted(got) == sorted(new)


def test_split_while_reading_loses_nothing(moto, kinesis, stream):
    """A real SplitShard on moto mid-read. moto keeps writing to the closed
    parent and never ends its iterator (unlike AWS), so this checks that the
    split itself loses nothing; parent->child hand-over is tested below."""
    sent = _put(kinesis, stream, 0, 300)
    source = _source(moto, stream, batch_size=50, bounded=True)
    name = source.list_parts()[0]
    part = source.build_part("in", name, None)
    first = lines_of(drain(part, until=count_lines(20)))
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low, high = (int(shard["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    kinesis.split_shard(StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2))
    more = _put(kinesis, stream, 300, 300)
    rest = lines_of(drain(part))
    part.close()
    others, _ = read_all(source)  # the other lineages, and the first one again
    assert len(source.list_parts()) == 3  # the split kept the roots
    expected = set(sent + more)
    mine = first + rest
    assert len(mine) == len(set(mine))
    assert set(mine) | {line for n, cs in others.items() if n != name for line in lines_of(cs)} == expected


# -- shard lineage against the recorded ListShards answer ---------------------------


def test_lineages_from_recorded_split_and_merge():
    shards = RECORDED["Shards"]
    assert lineage_roots(shards) == ["shardId-000000000000", "shardId-000000000001"]
    assert sorted(lineage("shardId-000000000000", shards)) == [
        "shardId-000000000000",
        "shardId-000000000002",
        "shardId-000000000003",
        "shardId-000000000004",
    ]
    assert sorted(lineage("shardId-000000000001", shards)) == ["shardId-000000000001"]


class _ReplayKinesis:
    """Answers ListShards from the recording and serves each shard's records
    between its sequence range, ending closed shards with ChildShards as
    AWS does. ``throttle`` GetRecords calls fail first."""

    def __init__(
        self, throttle: int = 0, error: tuple[str, int] = ("ProvisionedThroughputExceededException", 400)
    ) -> None:
        self.shards = RECORDED["Shards"]
        self.records: dict[str, list[str]] = {}
        for s in self.shards:
            start = int(s["SequenceNumberRange"]["StartingSequenceNumber"])
            end = int(s["SequenceNumberRange"].get("EndingSequenceNumber", start + 3))
            self.records[s["ShardId"]] = [str(n) for n in range(start, end + 1)]
        self.throttle = throttle
        self.error = error
        self.calls = 0

    def list_shards(self, StreamName=None, NextToken=None):
        if NextToken is None:
            return {"Shards": self.shards[:3], "NextToken": "page2"}
        return {"Shards": self.shards[3:]}

    def get_shard_iterator(self, StreamName, ShardId, ShardIteratorType, StartingSequenceNumber=None, Timestamp=None):
        seqs = self.records[ShardId]
        index = 0
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            index = seqs.index(StartingSequenceNumber) + 1
        elif ShardIteratorType == "LATEST":
            index = len(seqs)
        return {"ShardIterator": f"{ShardId}|{index}"}

    def get_records(self, ShardIterator, Limit):
        self.calls += 1
        if self.throttle:
            self.throttle -= 1
            code, status = self.error
            raise ClientError(
                {"Error": {"Code": code, "Message": "slow"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "GetRecords",
            )
        sid, index = ShardIterator.split("|")
        index = int(index)
        seqs = self.records[sid]
        batch = seqs[index : index + min(Limit, 2)]
        end = index + len(batch)
        shard = next(s for s in self.shards if s["ShardId"] == sid)
        closed = "EndingSequenceNumber" in shard["SequenceNumberRange"]
        response = {
            "Records": [{"SequenceNumber": q, "Data": f"{sid[-1]}:{q[-2:]}".encode()} for q in batch],
            "MillisBehindLatest": 0 if end >= len(seqs) else 1000,
            "NextShardIterator": f"{sid}|{end}",
        }
        if closed and end >= len(seqs) and not batch:
            response["NextShardIterator"] = None
            response["ChildShards"] = [
                {"ShardId": s["ShardId"], "ParentShards": [sid], "HashKeyRange": s["HashKeyRange"]}
                for s in self.shards
                if sid in (s.get("ParentShardId"), s.get("AdjacentParentShardId"))
            ]
        return response


def _replay_source(client: _ReplayKinesis, **extra) -> KinesisSource:
    settings = KinesisSourceSettings(stream_name="payments", **{**FAST, **extra})
    return KinesisSource(settings, AwsSettings(), 100, idle_seconds=30, clients=lambda: (client, client))


def test_lineage_reads_parent_before_children_then_merge_child():
    client = _ReplayKinesis()
    source = _replay_source(client, bounded=True)
    assert source.list_parts() == ["kinesis:payments/shardId-000000000000", "kinesis:payments/shardId-000000000001"]
    part = source.build_part("in", "kinesis:payments/shardId-000000000000", None)
    chunks = drain(part)
    order = [c.origin for c in chunks if c.lines]
    last_parent = max(i for i, o in enumerate(order) if o.endswith("0"))
    first_child = min(i for i, o in enumerate(order) if o.endswith(("2", "3")))
    last_child = max(i for i, o in enumerate(order) if o.endswith(("2", "3")))
    first_merged = min(i for i, o in enumerate(order) if o.endswith("4"))
    assert last_parent < first_child and last_child < first_merged
    expected = {sid: len(seqs) for sid, seqs in client.records.items() if sid[-1] in "0234"}
    got = {sid: sum(len(c.lines) for c in chunks if c.origin == sid) for sid in expected}
    assert got == expected
    snap = part.snapshot()
    assert snap["shardId-000000000000"] == DONE and snap["shardId-000000000003"] == DONE
    assert snap["shardId-000000000004"] == "AFTER:" + client.records["shardId-000000000004"][-1]
    assert chunks[-1].done

    other = source.build_part("in", "kinesis:payments/shardId-000000000001", None)
    other_chunks = drain(other)
    assert sum(len(c.lines) for c in other_chunks) == len(client.records["shardId-000000000001"])
    assert other.snapshot() == {"shardId-000000000001": DONE}  # the merge child belongs to lineage 0


def test_lineage_resumes_inside_a_child_exactly():
    client = _ReplayKinesis()
    source = _replay_source(client, bounded=True)
    name = "kinesis:payments/shardId-000000000000"
    part = source.build_part("in", name, None)
    first = drain(part, until=lambda cs: any(c.origin.endswith("2") for c in cs))
    state = part.snapshot()
    assert state["shardId-000000000000"] == DONE
    rest = drain(source.build_part("in", name, state))
    seen = [(c.origin, c.position(i)) for c in first + rest for i in range(len(c.lines))]
    assert len(seen) == len(set(seen))
    assert len(seen) == sum(len(client.records[s]) for s in lineage("shardId-000000000000", client.shards))


def test_throttling_backs_off_through_next_awake_and_loses_nothing():
    client = _ReplayKinesis(throttle=2)
    source = _replay_source(client, bounded=True, max_backoff_seconds=0.05)
    part = source.build_part("in", "kinesis:payments/shardId-000000000001", None)
    assert part.next_batch() == []
    assert part.next_awake() is not None  # paced, not slept
    chunks = drain(part)
    assert sum(len(c.lines) for c in chunks) == len(client.records["shardId-000000000001"])
    assert client.calls >= 3


@pytest.mark.parametrize("error", [("LimitExceededException", 400), ("InternalFailure", 500), ("NewCode", 503)])
def test_transient_errors_of_the_shared_list_back_off_too(error):
    client = _ReplayKinesis(throttle=1, error=error)
    source = _replay_source(client, bounded=True, max_backoff_seconds=0.05)
    part = source.build_part("in", "kinesis:payments/shardId-000000000001", None)
    assert part.next_batch() == []
    chunks = drain(part)
    assert sum(len(c.lines) for c in chunks) == len(client.records["shardId-000000000001"])


def test_a_permanent_error_stops_the_source():
    client = _ReplayKinesis(throttle=1, error=("AccessDeniedException", 400))
    source = _replay_source(client, bounded=True, max_backoff_seconds=0.05)
    part = source.build_part("in", "kinesis:payments/shardId-000000000001", None)
    with pytest.raises(ClientError, match="AccessDeniedException"):
        part.next_batch()


def test_at_timestamp_needs_a_zoned_timestamp():
    with pytest.raises(ValueError, match="starting_timestamp"):
        KinesisSourceSettings(starting_position="AT_TIMESTAMP")
