"""The whole dataflow: in-memory runs (run_main) and real multi-worker/process runs."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.support.config import settings_for, write_config
from tests.support.events import T0, event, iso, write_jsonl
from tests.support.flow import finish, run_in_process, start_flow
from tests.support.output import jsonl_records as read
from tests.support.servers import free_port


def run_files(pattern: str, out_dir: Path, **overrides) -> None:
    """The whole flow in-process on JSONL files, writing JSONL to ``out_dir``."""
    source = {"type": "file", "path": pattern, "batch_size": overrides.pop("batch_size", 100)}
    run_in_process(settings_for(out_dir, source=source, **overrides))


def minute_counts(records: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["region"], r["window_start"]): (r["count"], r["failures"]) for r in records if r["count"]}


def expected_minutes(events: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    counts: Counter = Counter()
    fails: Counter = Counter()
    for ev in events:
        minute = iso(int(orjson_ts(ev)) // 60 * 60).replace(".000", "")
        counts[(ev["region"], minute)] += 1
        fails[(ev["region"], minute)] += ev["payment_status"] == "FAIL"
    return {k: (v, fails[k]) for k, v in counts.items()}


def orjson_ts(ev: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()


def traffic(
    n: int, seconds: float, seed: int, regions=("EU", "US"), fail_rate=0.01, users=500, prefix="t"
) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = rng.randrange(users)
        out.append(
            event(
                f"{prefix}{i}",
                T0 + i * seconds / n,
                region=regions[user % len(regions)],
                user=f"{prefix}u{user}",
                status="FAIL" if rng.random() < fail_rate else "SUCCESS",
                amount=round(rng.uniform(5, 60), 2),
            )
        )
    return out


def test_out_of_order_and_late_events_end_to_end(tmp_path):
    events = traffic(3000, 180, seed=1)
    shuffled = events[:]
    rng = random.Random(2)
    for i in range(0, len(shuffled) - 20, 20):  # local disorder of up to ~1 s
        block = shuffled[i : i + 20]
        rng.shuffle(block)
        shuffled[i : i + 20] = block
    late = event("late-1", T0 + 100, region="EU")  # 80 s behind when it arrives
    write_jsonl(tmp_path / "in.jsonl", shuffled + [late])
    run_files(str(tmp_path / "in.jsonl"), tmp_path / "out")

    assert minute_counts(read(tmp_path / "out", "metrics")) == expected_minutes(events)
    dead = read(tmp_path / "out", "dead_letter")
    assert [(d["reason"], orjson.loads(d["raw"])["transaction_id"], d["position"]) for d in dead] == [
        ("late", "late-1", 3001)
    ]
    txns = read(tmp_path / "out", "transactions")
    assert sorted(t["transaction_id"] for t in txns) == sorted(e["transaction_id"] for e in events)


def test_two_partitions_at_full_speed_lose_nothing_to_lateness(tmp_path):
    """One file is 20x denser: read round-robin, its event time lags minutes behind."""
    dense = traffic(20000, 600, seed=3, prefix="d")
    sparse = traffic(1000, 600, seed=4, prefix="s")
    write_jsonl(tmp_path / "a.jsonl", dense)
    write_jsonl(tmp_path / "b.jsonl", sparse)
    run_files(str(tmp_path / "*.jsonl"), tmp_path / "out")
    assert read(tmp_path / "out", "dead_letter") == []
    assert minute_counts(read(tmp_path / "out", "metrics")) == expected_minutes(dense + sparse)


def test_failure_spike_raises_one_open_and_one_resolved(tmp_path):
    events = traffic(12000, 600, seed=5)
    for ev in events:
        t = orjson_ts(ev) - T0
        if 200 <= t < 260 and ev["region"] == "EU":
            ev["payment_status"] = "FAIL" if int(ev["transaction_id"][1:]) % 10 == 0 else "SUCCESS"
    write_jsonl(tmp_path / "in.jsonl", events)
    run_files(str(tmp_path / "in.jsonl"), tmp_path / "out")
    region_alerts = [
        (a["type"], a["state"], a["key"]) for a in read(tmp_path / "out", "alerts") if a["type"] == "FAILURE_RATE"
    ]
    assert region_alerts == [("FAILURE_RATE", "OPEN", "EU"), ("FAILURE_RATE", "RESOLVED", "EU")]


def test_user_and_fraud_alerts_end_to_end(tmp_path):
    events = traffic(2000, 120, seed=6)
    events.append(event("fraud-1", T0 + 50, user="x1", amount=7000.0, merchant="Fake Store"))
    events += [event(f"burst-{i}", T0 + 60 + i, user="x2", amount=10.0) for i in range(12)]
    events += [event("hop-1", T0 + 70, user="x3", region="EU"), event("hop-2", T0 + 75, user="x3", region="US")]
    events.sort(key=orjson_ts)
    write_jsonl(tmp_path / "in.jsonl", events)
    run_files(str(tmp_path / "in.jsonl"), tmp_path / "out")
    alerts = {(a["type"], a["key"]) for a in read(tmp_path / "out", "alerts")}
    assert {("FRAUD_SUSPECTED", "fraud-1"), ("VELOCITY", "x2"), ("IMPOSSIBLE_TRAVEL", "x3")} <= alerts
    assert len([a for a in alerts if a[1] == "x2"]) == 1


def _outputs(out_dir: Path) -> tuple:
    metrics = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read(out_dir, "metrics"))
    alerts = sorted(a["alert_id"] for a in read(out_dir, "alerts"))
    txns = len(read(out_dir, "transactions"))
    dead = sorted(d["raw"] for d in read(out_dir, "dead_letter"))
    return metrics, alerts, txns, dead


@pytest.fixture(scope="module")
def two_file_input(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    events = traffic(30000, 900, seed=7, regions=("EU", "US", "AP"))
    for ev in events[::1000]:
        ev["merchant_name"] = "test merchant"
        ev["amount"] = 9000.0
    # Users keyed to files, as a keyed producer would partition them.
    write_jsonl(base / "p0.jsonl", [e for e in events if int(e["user_id"][2:]) % 2 == 0] + [b"{broken"])
    write_jsonl(base / "p1.jsonl", [e for e in events if int(e["user_id"][2:]) % 2 == 1])
    return base


def _config(base: Path, out: Path) -> Path:
    source = {"type": "file", "path": f"{base}/p*.jsonl", "batch_size": 200}
    return write_config(out.with_suffix(".yaml"), out, source=source, sinks={"jsonl": {"files": 2}})


@pytest.mark.integration
def test_two_workers_and_two_processes_equal_one_worker(two_file_input, tmp_path):
    runs = {}
    for name, args_list in {
        "one": [[]],
        "threads": [["-w", "2"]],
        "processes": None,
    }.items():
        out = tmp_path / name
        config = _config(two_file_input, out)
        if args_list is None:
            addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
            args_list = [["-i", "0", "-a", addresses], ["-i", "1", "-a", addresses]]
        logs = [out.with_name(f"{name}-{i}.log") for i in range(len(args_list))]
        procs = [start_flow(config, *args, log=log) for args, log in zip(args_list, logs, strict=True)]
        for proc, log in zip(procs, logs, strict=True):
            finish(proc, config, log=log)
        runs[name] = _outputs(out)
    metrics, alerts, txns, dead = runs["one"]
    assert txns == 30000 and len(dead) == 1 and len(metrics) == 45 and alerts
    assert runs["threads"] == runs["one"]
    assert runs["processes"] == runs["one"]
