"""Crash/resume of the whole flow reading Kafka and Kinesis.

Produce N events (plus a few undecodable ones), run the real flow
(``python -m bytewax.run dataflow``) once uninterrupted, then again with a
recovery directory, SIGKILL it after a snapshot and before its end, restart
it with the same command, and compare: every per-minute metrics line and
every dead letter must equal the uninterrupted run's (nothing lost, nothing
counted twice), and the output written before the kill must still be there.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import yaml
from kafka.admin import KafkaAdminClient, NewTopic

from cli.producer import publish_kafka, publish_kinesis
from config.loader import load_settings
from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings
from connectors.simulator.source import iter_events

ROOT = Path(__file__).resolve().parent.parent
KAFKA_EVENTS = 60_000
KINESIS_EVENTS = 12_000  # moto serves about 4,000 records/s
# Undecodable or invalid payloads, dead-lettered with their source position.
BAD = [(f"bad-{i}", [b"{not json %d", b"[%d]", b'{"transaction_id": %d}'][i % 3] % i) for i in range(40)]


def _events(n: int) -> list[tuple[str, bytes]]:
    """``n`` simulated events over 10 minutes of event time, with BAD spread through."""
    sim = load_settings(
        overrides={
            "simulator": {
                "events": n,
                "rate": 0,
                "users": 50_000,
                "start": "2025-07-09T19:00:00Z",
                "event_rate": n / 600,
            }
        }
    ).simulator
    events = list(iter_events(sim))
    step = len(events) // len(BAD)
    for i, bad in enumerate(BAD):  # spread through the stream, so some precede the kill
        events.insert(i * step + i, bad)
    return events


def _config(tmp: Path, name: str, source: dict) -> Path:
    out = tmp / name
    cfg = {
        "source": {"batch_size": 500, **source},
        "sinks": {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}, "jsonl": {"dir": str(out)}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _flow(config: Path, recovery: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "bytewax.run", "dataflow"]
    if recovery is not None:
        args += ["-r", str(recovery), "-s", "1", "-b", "0"]
    env = {**os.environ, "PAYWATCH_CONFIG": str(config)}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 90) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-2000:]


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


def _lines(out: Path, kind: str) -> list[bytes]:
    return sorted(line for f in sorted(out.glob(f"{kind}-*.jsonl")) for line in f.read_bytes().splitlines())


def _crash_and_compare(tmp: Path, source: dict, prefix: str, n_events: int) -> None:
    reference = _config(tmp, "reference", source)
    _finish(_flow(reference))
    expected_metrics = _lines(tmp / "reference", "metrics")
    expected_dead = _lines(tmp / "reference", "dead_letter")
    assert len(expected_metrics) >= 40  # ~10 minutes x 4 regions
    assert len(expected_dead) == len(BAD)

    recovery = tmp / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    crashed = _config(tmp, "crashed", source)
    proc = _flow(crashed, recovery)
    deadline = time.monotonic() + 60
    while not _source_snapshotted(recovery, prefix):
        assert proc.poll() is None, "the flow ended before its first snapshot; produce more events"
        assert time.monotonic() < deadline, "no snapshot within 60 s"
        time.sleep(0.05)
    assert proc.poll() is None, "the flow ended before the kill; produce more events"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before_kill = _lines(tmp / "crashed", "metrics") + _lines(tmp / "crashed", "dead_letter")
    assert len(_lines(tmp / "crashed", "transactions")) < n_events  # really killed part-way

    _finish(_flow(crashed, recovery))
    metrics = _lines(tmp / "crashed", "metrics")
    dead = _lines(tmp / "crashed", "dead_letter")
    assert metrics == expected_metrics  # every minute, nothing lost, nothing twice
    assert dead == expected_dead  # no dead letter lost or doubled
    assert set(before_kill) <= set(metrics + dead)  # output from before the kill kept
    assert len(_lines(tmp / "crashed", "transactions")) == n_events


def test_kafka_flow_resumes_exactly_after_sigkill(kafka_broker, tmp_path):
    topic = f"r-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.address)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    kafka = {"brokers": [kafka_broker.address], "topic": topic, "bounded": True, "fetch_max_wait_ms": 50}
    publish_kafka(KafkaSourceSettings(**kafka), _events(KAFKA_EVENTS), linger_ms=5)
    _crash_and_compare(tmp_path, {"type": "kafka", "kafka": kafka}, "kafka:", KAFKA_EVENTS)


def test_kinesis_flow_resumes_exactly_after_sigkill(moto, tmp_path, monkeypatch):
    stream = f"r-{uuid.uuid4().hex[:10]}"
    client = boto3.client("kinesis", endpoint_url=moto.url, region_name="us-east-1")
    client.create_stream(StreamName=stream, ShardCount=3)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    kinesis = {
        "stream_name": stream,
        "bounded": True,
        "min_poll_interval_seconds": 0.0,
        "idle_poll_interval_seconds": 0.05,
    }
    publish_kinesis(
        KinesisSourceSettings(**kinesis), AwsSettings(endpoint_url=moto.url), _events(KINESIS_EVENTS), client=client
    )
    monkeypatch.setenv("PAYWATCH__AWS__ENDPOINT_URL", moto.url)
    _crash_and_compare(tmp_path, {"type": "kinesis", "kinesis": kinesis}, "kinesis:", KINESIS_EVENTS)
