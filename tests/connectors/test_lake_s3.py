"""The lake against moto_server's S3 and Glue: provisioning, a replay, SIGKILL and resume, an outage."""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.provision import Provisioner
from config import load_settings
from connectors.sinks.outputs import build_outputs
from tests.flow.test_lake_flow import lake_events
from tests.support.config import QUIET_STDOUT, write_config
from tests.support.events import write_jsonl
from tests.support.flow import finish, run_in_process, start_flow
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _s3(endpoint: str):
    return boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)


def _lake_config(endpoint: str, tmp_path: Path, source: str, **lake) -> dict:
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    return {
        "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
        "source": {"type": "file", "path": source, "batch_size": 200},
        "sinks": {
            "stdout": QUIET_STDOUT,
            "jsonl": {"dir": str(tmp_path / "out")},
            "retry": {"base_seconds": 0.02, "max_seconds": 0.3, "block_seconds": 60, "close_timeout_seconds": 60},
            "lake": {"enabled": True, "uri": f"s3://{bucket}/pw", "glue_database": f"db_{bucket[5:]}", **lake},
            "dead_letter": {"type": "jsonl", "path": str(tmp_path / "sink_dead_letter.jsonl")},
        },
    }


def _zone(endpoint: str, bucket: str, zone: str) -> tuple[pa.Table, list[str]]:
    """Every object of a zone, read with pyarrow, and their keys."""
    s3 = _s3(endpoint)
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"pw/{zone}/")
        for obj in page.get("Contents", [])
    ]
    tables = [pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys]
    return (pa.concat_tables(tables) if tables else pa.table({})), keys


def _transaction_ids(out: Path) -> list[str]:
    return sorted(
        orjson.loads(line)["transaction_id"]
        for f in sorted(out.glob("transactions-*.jsonl"))
        for line in f.read_bytes().splitlines()
    )


def test_provision_creates_an_encrypted_private_bucket_and_projected_glue_tables(moto, tmp_path):
    config = _lake_config(moto.url, tmp_path, "x.jsonl", encryption="SSE-KMS", kms_key_id="alias/lake")
    settings = load_settings(environ={}, overrides=config)
    bucket = settings.sinks.lake.uri[5:].split("/")[0]
    first = Provisioner(settings, wait_seconds=10).up()
    assert Provisioner(settings, wait_seconds=10).up()["lake"] == first["lake"]  # idempotent
    s3 = _s3(moto.url)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/lake"}
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    raw_rule = rules["paywatch-raw-infrequent-access"]
    assert raw_rule["Filter"]["Prefix"] == "pw/raw/"
    assert raw_rule["Transitions"][0] == {"Days": 30, "StorageClass": "STANDARD_IA"}
    glue = boto3.client("glue", region_name="us-east-1", endpoint_url=moto.url)
    database = settings.sinks.lake.glue_database
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=database)["TableList"]}
    assert set(tables) == {"raw", "enriched", "alerts", "metrics"}
    enriched = tables["enriched"]
    assert enriched["Parameters"]["projection.enabled"] == "true"
    assert enriched["Parameters"]["storage.location.template"] == (
        f"s3://{bucket}/pw/enriched/date=${{date}}/hour=${{hour}}"
    )
    columns = {c["Name"]: c["Type"] for c in enriched["StorageDescriptor"]["Columns"]}
    assert columns["amount"] == "decimal(38,9)" and columns["event_time"] == "timestamp"
    assert [k["Name"] for k in enriched["PartitionKeys"]] == ["date", "hour"]

    s3.put_object(Bucket=bucket, Key="pw/raw/x.parquet", Body=b"data")
    down = Provisioner(settings, wait_seconds=10).down()["lake"]
    assert down["bucket_kept"] == bucket  # a lake with data is never deleted by `down`
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_database(Name=database)


def test_file_replay_to_s3_writes_every_line_and_exactly_the_transactions(moto, tmp_path):
    events = lake_events(4000)
    write_jsonl(tmp_path / "in.jsonl", events)
    config = _lake_config(moto.url, tmp_path, str(tmp_path / "in.jsonl"), target_file_mb=0.1)
    settings = load_settings(environ={}, overrides=config)
    Provisioner(settings, wait_seconds=10).up()
    run_in_process(settings)

    bucket = settings.sinks.lake.uri[5:].split("/")[0]
    raw, raw_keys = _zone(moto.url, bucket, "raw")
    assert raw.num_rows == len(events)
    assert sorted(int(p) for p in raw.column("position").to_pylist()) == list(range(1, len(events) + 1))
    assert all("/date=" in k and "/hour=" in k for k in raw_keys)
    assert any("/date=2025-07-09/hour=20/" in k for k in raw_keys)
    enriched, _ = _zone(moto.url, bucket, "enriched")
    assert sorted(enriched.column("transaction_id").to_pylist()) == _transaction_ids(tmp_path / "out")
    assert not (tmp_path / "sink_dead_letter.jsonl").exists()


def _snapshotted(recovery: Path) -> bool:
    try:
        with sqlite3.connect(recovery / "part-0.sqlite3") as db:
            return bool(db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0])
    except sqlite3.Error:
        return False


def test_sigkill_and_resume_leave_every_row_exactly_once(moto, tmp_path):
    events = lake_events(30000)
    write_jsonl(tmp_path / "in.jsonl", events)
    # Small files and one pending upload at a time: the flow runs at S3's pace, so the kill lands mid-run.
    config = _lake_config(
        moto.url, tmp_path, str(tmp_path / "in.jsonl"), target_file_mb=0.02, max_file_seconds=120, max_pending_files=1
    )
    settings = load_settings(environ={}, overrides=config)
    Provisioner(settings, wait_seconds=10).up()
    bucket = settings.sinks.lake.uri[5:].split("/")[0]
    path = write_config(tmp_path / "config.yaml", **config)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)

    proc = start_flow(path, recovery=recovery)
    deadline = time.monotonic() + 90
    while not (_snapshotted(recovery) and len(_zone(moto.url, bucket, "raw")[1]) >= 5):
        assert proc.poll() is None, "the flow ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before, _ = _zone(moto.url, bucket, "raw")
    assert 0 < before.num_rows < len(events)  # really killed part-way

    finish(start_flow(path, recovery=recovery), path, timeout=180)
    raw, _ = _zone(moto.url, bucket, "raw")
    positions = sorted(int(p) for p in raw.column("position").to_pylist())
    assert positions == list(range(1, len(events) + 1))  # every line once: none lost, none twice
    enriched, _ = _zone(moto.url, bucket, "enriched")
    ids = enriched.column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(set(_transaction_ids(tmp_path / "out")))
    metrics, _ = _zone(moto.url, bucket, "metrics")
    keys = list(zip(metrics.column("region").to_pylist(), metrics.column("window_start").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) and sum(metrics.column("count").to_pylist()) == len(ids)


def test_an_s3_outage_loses_nothing(moto, tmp_path):
    proxy = TcpProxy(moto.port).start()
    try:
        events = lake_events(3000)
        write_jsonl(tmp_path / "in.jsonl", events)
        config = _lake_config(proxy.url, tmp_path, str(tmp_path / "in.jsonl"), target_file_mb=0.05)
        settings = load_settings(environ={}, overrides=config)
        Provisioner(settings, wait_seconds=10).up()
        outputs = build_outputs(settings)
        lake = outputs.lake[0]

        def restore_after_errors() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(d.stats.transient_errors >= 3 for d in lake.deliveries):
                    break
                time.sleep(0.05)
            proxy.start()

        proxy.stop()
        restorer = threading.Thread(target=restore_after_errors, daemon=True)
        restorer.start()
        run_in_process(settings, outputs=outputs)
        restorer.join()
        assert sum(d.stats.transient_errors for d in lake.deliveries) >= 3  # the outage was seen
        assert sum(d.stats.dead_lettered for d in lake.deliveries) == 0
        bucket = settings.sinks.lake.uri[5:].split("/")[0]
        raw, _ = _zone(moto.url, bucket, "raw")
        assert sorted(int(p) for p in raw.column("position").to_pylist()) == list(range(1, len(events) + 1))
        enriched, _ = _zone(moto.url, bucket, "enriched")
        assert sorted(enriched.column("transaction_id").to_pylist()) == _transaction_ids(tmp_path / "out")
    finally:
        proxy.stop()
