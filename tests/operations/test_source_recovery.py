"""Crash/resume of the whole flow reading Kafka and Kinesis.

Produce N events (plus a few undecodable ones), run the real flow
(``python -m bytewax.run dataflow``) once uninterrupted, then again with a
recovery directory, SIGKILL it after a snapshot and before its end, restart
it with the same command, and compare: every per-minute metrics line and
every dead letter must equal the uninterrupted run's (nothing lost, nothing
counted twice), and the output written before the kill must still be there.
"""

from __future__ import annotations

import pickle
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import boto3
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from cli.producer import publish_kafka, publish_kinesis
from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings
from connectors.sources.parsing import SOURCE_FORMAT
from tests.support.config import write_config
from tests.support.events import simulated
from tests.support.flow import finish, start_flow, stderr_of
from tests.support.output import jsonl_lines

ROOT = Path(__file__).resolve().parents[2]
KAFKA_EVENTS = 60_000
SINK_SET_EVENTS = 30_000
KINESIS_EVENTS = 12_000  # moto serves about 4,000 records/s
# Undecodable or invalid payloads, dead-lettered with their source position.
BAD = [(f"bad-{i}", [b"{not json %d", b"[%d]", b'{"transaction_id": %d}'][i % 3] % i) for i in range(40)]


def _events(n: int) -> list[tuple[str, bytes]]:
    """``n`` simulated events over 10 minutes of event time, with BAD spread through."""
    events = simulated(n, 600)
    step = len(events) // len(BAD)
    for i, bad in enumerate(BAD):  # spread through the stream, so some precede the kill
        events.insert(i * step + i, bad)
    return events


def _config(tmp: Path, name: str, source: dict, stdout: Optional[dict] = None) -> Path:
    sinks = {"stdout": stdout} if stdout else {}
    return write_config(tmp / f"{name}.yaml", tmp / name, source={"batch_size": 500, **source}, sinks=sinks)


def _source_snapshotted(recovery: Path, prefix: str) -> bool:
    """A committed snapshot holds a source position past the start."""
    try:
        with sqlite3.connect(recovery / "part-0.sqlite3") as db:
            committed = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0]
            snaps = db.execute(
                "SELECT COUNT(*) FROM snaps WHERE state_key LIKE ? AND snap_epoch <= ?", (prefix + "%", committed or 0)
            ).fetchone()[0]
        return bool(committed) and snaps > 0
    except sqlite3.Error:
        return False


def _kafka_topic(broker) -> dict:
    topic = f"r-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.address)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    # Partitions silent for a while between phases must not close windows by
    # wall-clock idleness: the reference run never pauses.
    return {"brokers": [broker.address], "topic": topic, "fetch_max_wait_ms": 50}


def _committed_kafka_records(recovery: Path) -> int:
    """Records before the committed Kafka positions, over every partition (0 before the first commit)."""
    try:
        with sqlite3.connect(recovery / "part-0.sqlite3") as db:
            committed = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0] or 0
            rows = db.execute(
                "SELECT state_key, ser_change FROM snaps WHERE step_id = 'paywatch.source' AND snap_epoch <= ? "
                "ORDER BY snap_epoch",
                (committed,),
            ).fetchall()
    except sqlite3.Error:
        return 0
    latest = {key: blob for key, blob in rows}  # the newest committed snapshot per partition
    return sum(SOURCE_FORMAT.load(pickle.loads(blob))[0] or 0 for blob in latest.values() if blob is not None)


def _kafka_covers(recovery: Path, records: int) -> Callable[[], bool]:
    """Whether a committed snapshot covers ``records`` Kafka records."""
    return lambda: _committed_kafka_records(recovery) >= records


def _kill_after_a_snapshot(
    proc: subprocess.Popen, config: Path, snapshotted: Callable[[], bool], timeout: float = 90
) -> None:
    """SIGKILL an unbounded flow once ``snapshotted()`` sees the committed snapshot it waits for.

    An unbounded flow never ends by itself, so the kill always comes before
    its end, whatever the machine's speed; the events produced after the
    kill make sure the resumed run has work the killed one never saw.
    """
    deadline = time.monotonic() + timeout
    while not snapshotted():
        assert proc.poll() is None, stderr_of(config)
        assert time.monotonic() < deadline, f"no such snapshot within {timeout:g} s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _phases(events: list, n: int) -> list[list]:
    size = -(-len(events) // n)
    return [events[i : i + size] for i in range(0, len(events), size)]


def _kill_publish_and_resume(
    tmp_path: Path,
    source: dict,
    section: str,
    snapshotted: Callable[[Path], bool],
    publish_rest: Callable[[], object],
    n_events: int,
) -> None:
    """Run unbounded until ``snapshotted``, SIGKILL, publish the rest, resume bounded.

    The resumed output must equal a bounded run that never stopped: every
    minute and dead letter once, output from before the kill kept, every
    transaction once.
    """
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    crashed = _config(tmp_path, "crashed", source)
    _kill_after_a_snapshot(start_flow(crashed, recovery=recovery), crashed, lambda: snapshotted(recovery))
    before_kill = jsonl_lines(tmp_path / "crashed", "metrics") + jsonl_lines(tmp_path / "crashed", "dead_letter")
    publish_rest()

    bounded = {**source, section: {**source[section], "bounded": True}}
    reference = _config(tmp_path, "reference", bounded)
    finish(start_flow(reference), reference)
    resumed = _config(tmp_path, "crashed", bounded)
    finish(start_flow(resumed, recovery=recovery), resumed)
    expected_metrics = jsonl_lines(tmp_path / "reference", "metrics")
    assert len(expected_metrics) >= 40  # ~10 minutes x 4 regions
    assert jsonl_lines(tmp_path / "crashed", "metrics") == expected_metrics  # every minute, nothing lost or twice
    dead = jsonl_lines(tmp_path / "crashed", "dead_letter")
    assert dead == jsonl_lines(tmp_path / "reference", "dead_letter") and len(dead) == len(BAD)
    assert set(before_kill) <= set(jsonl_lines(tmp_path / "crashed", "metrics") + dead)  # output before the kill kept
    assert len(jsonl_lines(tmp_path / "crashed", "transactions")) == n_events


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_kafka_flow_resumes_exactly_after_sigkill(kafka_broker, tmp_path, client):
    """Half the events, a run killed after a snapshot, the other half, a bounded resume; with either client."""
    kafka = {**_kafka_topic(kafka_broker), "client": client}
    source = {"type": "kafka", "kafka": kafka, "idle_partition_seconds": 3600}
    first, second = _phases(_events(KAFKA_EVENTS), 2)
    publish_kafka(KafkaSourceSettings(**kafka), first, linger_ms=5)

    _kill_publish_and_resume(
        tmp_path,
        source,
        "kafka",
        lambda recovery: _committed_kafka_records(recovery) >= 1,
        lambda: publish_kafka(KafkaSourceSettings(**kafka), second, linger_ms=5),
        KAFKA_EVENTS,
    )


SINK_SETS = [
    {"alerts": True, "metrics": True, "dead_letters": True},  # stdout sinks on
    {"alerts": True, "metrics": False, "dead_letters": True},  # then metrics off
    {"alerts": False, "metrics": False, "dead_letters": False},  # then all off
]


def test_changing_the_sink_set_between_kills_keeps_every_output(kafka_broker, tmp_path):
    """Killed twice, the stdout sinks changed at every start: the JSONL output equals one uninterrupted run's.

    Sink step ids once came from list positions: turning stdout sinks on or
    off moved the JSONL sinks' state to each other (a file emptied, another
    filled with NUL bytes, windows lost).
    """
    kafka = _kafka_topic(kafka_broker)
    source = {"type": "kafka", "kafka": kafka, "idle_partition_seconds": 3600}
    phases = _phases(_events(SINK_SET_EVENTS), 3)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)

    produced = 0
    kept: list[bytes] = []
    for run, (phase, stdout) in enumerate(zip(phases, SINK_SETS, strict=True)):
        publish_kafka(KafkaSourceSettings(**kafka), phase, linger_ms=5)
        produced += len(phase)
        last = run == len(phases) - 1
        run_source = {**source, "kafka": {**kafka, "bounded": last}}
        config = _config(tmp_path, "changing", run_source, stdout=stdout)
        proc = start_flow(config, recovery=recovery)
        if last:
            finish(proc, config)
        else:
            covered = produced - len(phase) + 1
            _kill_after_a_snapshot(proc, config, _kafka_covers(recovery, covered))
            out = tmp_path / "changing"
            kept = jsonl_lines(out, "metrics") + jsonl_lines(out, "alerts") + jsonl_lines(out, "dead_letter")

    reference = _config(tmp_path, "reference", {**source, "kafka": {**kafka, "bounded": True}})
    finish(start_flow(reference), reference)
    ref, out = tmp_path / "reference", tmp_path / "changing"
    for kind in ("metrics", "alerts", "dead_letter"):
        assert jsonl_lines(out, kind) == jsonl_lines(ref, kind), kind  # every window and alert, nothing twice
        assert b"\0" not in b"".join(jsonl_lines(out, kind))
    assert len(jsonl_lines(ref, "metrics")) >= 40
    assert len(jsonl_lines(out, "dead_letter")) == len(BAD)  # dead letters complete
    ids = [line.split(b",", 1)[0] for line in jsonl_lines(out, "transactions")]
    assert len(ids) == len(set(ids)) == SINK_SET_EVENTS  # no transaction lost or written twice
    assert set(kept) <= set(jsonl_lines(out, "metrics") + jsonl_lines(out, "alerts") + jsonl_lines(out, "dead_letter"))


def test_kinesis_flow_resumes_exactly_after_sigkill(moto, tmp_path, monkeypatch):
    """Half the events, an unbounded run killed after a snapshot, the other half, a bounded resume."""
    stream = f"r-{uuid.uuid4().hex[:10]}"
    client = boto3.client("kinesis", endpoint_url=moto.url, region_name="us-east-1")
    client.create_stream(StreamName=stream, ShardCount=3)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    kinesis = {"stream_name": stream, "min_poll_interval_seconds": 0.0, "idle_poll_interval_seconds": 0.05}
    source = {"type": "kinesis", "kinesis": kinesis, "idle_partition_seconds": 3600}
    first, second = _phases(_events(KINESIS_EVENTS), 2)
    aws = AwsSettings(endpoint_url=moto.url)
    publish_kinesis(KinesisSourceSettings(**kinesis), aws, first, client=client)
    monkeypatch.setenv("PAYWATCH__AWS__ENDPOINT_URL", moto.url)

    _kill_publish_and_resume(
        tmp_path,
        source,
        "kinesis",
        lambda recovery: _source_snapshotted(recovery, "kinesis:"),
        lambda: publish_kinesis(KinesisSourceSettings(**kinesis), aws, second, client=client),
        KINESIS_EVENTS,
    )
