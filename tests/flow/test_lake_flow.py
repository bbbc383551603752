"""The lake in the whole flow, written to a local directory (the embedded form)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.dataset as ds

from config import load_settings
from tests.support.config import QUIET_STDOUT
from tests.support.events import T0, event, write_jsonl
from tests.support.flow import run_in_process

BROKEN = [b"{broken", b"\xff\xfe not utf-8", b'{"transaction_id":"x1","timestamp":"2025-07-09T19:30:00Z"}']


def lake_events(n: int) -> list:
    """``n`` events over two hours of event time, with broken lines in between."""
    events: list = [
        event(f"t{i}", T0 + i * 7200 / n, user=f"u{i % 97}", amount=round(5 + (i % 500) * 1.37, 2)) for i in range(n)
    ]
    for i, bad in enumerate(BROKEN):
        events.insert(100 + i * 700, bad)
    events[50]["merchant_name"] = "test shop"  # flagged: takes the dict path
    events[51]["amount"] = 9000.0
    for i in (60, 61, 900):  # FRAUD_SUSPECTED: alerts in the lake too
        events[i].update(merchant_name="Fake store", amount=9000.0)
    return events


def read_zone(root: str, zone: str):
    return ds.dataset(f"{root}/{zone}", format="parquet", partitioning="hive").to_table()


def test_file_replay_writes_every_line_to_raw_and_every_transaction_to_enriched(tmp_path: Path):
    events = lake_events(3000)
    write_jsonl(tmp_path / "in.jsonl", events)
    lake = tmp_path / "lake"
    out = tmp_path / "out"
    settings = load_settings(
        environ={},
        overrides={
            "source": {"type": "file", "path": str(tmp_path / "in.jsonl"), "batch_size": 256},
            "sinks": {
                "stdout": QUIET_STDOUT,
                "jsonl": {"dir": str(out)},
                "lake": {"enabled": True, "uri": str(lake), "max_file_seconds": 600, "target_file_mb": 0.05},
            },
        },
    )
    run_in_process(settings)

    raw = read_zone(str(lake), "raw")
    assert raw.num_rows == len(events)
    assert sorted(int(p) for p in raw.column("position").to_pylist()) == list(range(1, len(events) + 1))  # line numbers
    assert b"\xff\xfe not utf-8" in raw.column("line_bytes").to_pylist()
    assert "{broken" in raw.column("line").to_pylist()
    # Every valid event's hour (19, 20) plus the receive hour of the two unreadable lines.
    hours = {(d, h) for d, h in zip(raw.column("date").to_pylist(), raw.column("hour").to_pylist(), strict=True)}
    assert {("2025-07-09", 19), ("2025-07-09", 20)} <= hours and len(hours) <= 4

    transactions = [orjson.loads(line) for line in (out / "transactions-0.jsonl").read_bytes().splitlines()]
    enriched = read_zone(str(lake), "enriched")
    assert sorted(enriched.column("transaction_id").to_pylist()) == sorted(t["transaction_id"] for t in transactions)
    by_id = {t["transaction_id"]: t for t in transactions}
    row = enriched.filter(ds.field("transaction_id") == "t51").to_pylist()[0]
    assert str(row["amount"]) == "9000.000000000" and row["fraud_status"] == by_id["t51"]["fraud_status"]
    assert row["event_time"].timestamp() == T0 + 51 * 7200 / 3000
    assert len(list((lake / "raw").rglob("*.parquet"))) > 2  # the size roll cut several files
    metrics = read_zone(str(lake), "metrics")
    assert sum(metrics.column("count").to_pylist()) == len(transactions)
    alerts = [orjson.loads(line) for line in (out / "alerts-0.jsonl").read_bytes().splitlines()]
    lake_alerts = read_zone(str(lake), "alerts")
    assert len(alerts) >= 3
    assert sorted(lake_alerts.column("alert_id").to_pylist()) == sorted(a["alert_id"] for a in alerts)
    assert not list(lake.rglob(".writing-*"))
    assert not (out / "sink_dead_letter.jsonl").exists()


def test_s3_down_spills_whole_files_to_dead_letters_and_loses_no_line(tmp_path: Path):
    """Nothing listens at the endpoint: the sink retries, blocks, then dead-letters whole files (rows kept)."""
    import base64
    import io

    import pyarrow.parquet as pq

    from tests.support.servers import free_port

    events = lake_events(1500)
    write_jsonl(tmp_path / "in.jsonl", events)
    letters = tmp_path / "sink_dead_letter.jsonl"
    settings = load_settings(
        environ={},
        overrides={
            "aws": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
            "source": {"type": "file", "path": str(tmp_path / "in.jsonl"), "batch_size": 250},
            "sinks": {
                "stdout": QUIET_STDOUT,
                "retry": {
                    "base_seconds": 0.01,
                    "max_seconds": 0.02,
                    "block_seconds": 0.05,
                    "close_timeout_seconds": 0.5,
                },
                "dead_letter": {"type": "jsonl", "path": str(letters)},
                "lake": {"enabled": True, "uri": "s3://down-bucket/x", "target_file_mb": 0.2, "max_pending_files": 1},
            },
        },
    )
    run_in_process(settings)

    records = [orjson.loads(line) for line in letters.read_bytes().splitlines()]
    assert records and {r["reason"] for r in records} <= {"sink_buffer_full", "sink_undelivered_at_close"}
    files = [orjson.loads(r["raw"]) for r in records]
    raw_rows = sum(
        pq.read_table(io.BytesIO(base64.b64decode(f["parquet_base64"]))).num_rows for f in files if f["zone"] == "raw"
    )
    assert raw_rows == len(events)  # every line is in a dead-lettered file
    assert all(f["key"].startswith(("raw/", "enriched/", "alerts/", "metrics/")) for f in files)
