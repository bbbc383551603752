"""Region incidents through the whole dataflow: contributors, layouts, a watermark that jumps."""

from __future__ import annotations

import random
from pathlib import Path

from tests.flow.test_flow import minute_counts, read, run_files
from tests.support.events import T0, event, write_jsonl

DEVICES = ("mobile", "web", "pos", "tablet")


def _traffic(minutes: int, per_second: int = 8, seed: int = 11) -> list[dict]:
    """Two regions; EU is silent 19:12-19:20; US mobile payments fail 19:28-19:31."""
    rng = random.Random(seed)
    out = []
    n = 0
    for second in range(minutes * 60):
        for k in range(per_second):
            region = ("EU", "US")[k % 2]
            if region == "EU" and 720 <= second < 1200:
                continue
            device = DEVICES[rng.randrange(4)]
            failing = region == "US" and device == "mobile" and 1680 <= second < 1860
            status = "FAIL" if rng.random() < (0.4 if failing else 0.004) else "SUCCESS"
            n += 1
            out.append(
                event(
                    f"e{n}",
                    T0 + second + k / per_second,
                    region=region,
                    status=status,
                    user=f"u{rng.randrange(5000)}",
                    device=device,
                    merchant_id=f"m{rng.randrange(40)}",
                )
            )
    return out


def _region_alerts(out_dir: Path) -> list[tuple]:
    return sorted(
        (a["type"], a["key"], a["state"], a["event_time"])
        for a in read(out_dir, "alerts")
        if a["type"] in ("FAILURE_RATE", "TRAFFIC_DROP")
    )


def test_contiguous_time_ranges_give_the_alerts_of_one_file(tmp_path):
    events = _traffic(40)
    for sub in ("one", "ranges"):
        (tmp_path / sub).mkdir()
    write_jsonl(tmp_path / "one" / "all.jsonl", events)
    half = T0 + 1200
    write_jsonl(tmp_path / "ranges" / "a.jsonl", [e for e in events if e["timestamp"] < _iso(half)])
    write_jsonl(tmp_path / "ranges" / "b.jsonl", [e for e in events if e["timestamp"] >= _iso(half)])
    run_files(str(tmp_path / "one" / "all.jsonl"), tmp_path / "out1", batch_size=500)
    run_files(str(tmp_path / "ranges" / "*.jsonl"), tmp_path / "out2", batch_size=500)

    expected = _region_alerts(tmp_path / "out1")
    assert [(t, k, s) for t, k, s, _ in expected] == [
        ("FAILURE_RATE", "US", "OPEN"),
        ("FAILURE_RATE", "US", "RESOLVED"),
        ("TRAFFIC_DROP", "EU", "OPEN"),
        ("TRAFFIC_DROP", "EU", "RESOLVED"),
    ]
    assert _region_alerts(tmp_path / "out2") == expected
    assert minute_counts(read(tmp_path / "out2", "metrics")) == minute_counts(read(tmp_path / "out1", "metrics"))

    alerts = read(tmp_path / "out1", "alerts")
    opened = next(a for a in alerts if a["type"] == "FAILURE_RATE" and a["state"] == "OPEN")
    top = opened["details"]["contributors"][0]
    assert (top["dimension"], top["value"]) == ("device", "mobile")
    assert top["failure_share"] > 0.8 and 0.15 < top["traffic_share"] < 0.35
    assert "of failures on device=mobile" in opened["message"]
    resolved = next(a for a in alerts if a["type"] == "FAILURE_RATE" and a["state"] == "RESOLVED")
    assert resolved["details"]["contributors"] == opened["details"]["contributors"]
    assert resolved["details"]["peak_rate_percent"] >= opened["value"]
    assert resolved["details"]["duration_seconds"] > 0


def test_one_event_dated_2099_writes_only_the_minutes_that_had_events(tmp_path):
    events = _traffic(3)
    events.append(event("far", 4_070_908_800.5, region="EU", user="u1"))  # 2099-01-01, inside max_year
    write_jsonl(tmp_path / "in.jsonl", events)
    # Future-dated events are dead-lettered by default (validation.max_future_seconds); a
    # watermark can still jump by hours on a replay or a skewed partition: let this one in.
    run_files(str(tmp_path / "in.jsonl"), tmp_path / "out", validation={"max_future_seconds": 4e9})
    metrics = read(tmp_path / "out", "metrics")
    starts = sorted({m["window_start"] for m in metrics})
    assert starts == ["2025-07-09T19:00:00Z", "2025-07-09T19:01:00Z", "2025-07-09T19:02:00Z", "2099-01-01T00:00:00Z"]
    assert sum(m["count"] for m in metrics) == len(events)
    assert [a for a in read(tmp_path / "out", "alerts") if a["type"] == "TRAFFIC_DROP"] == []


def _iso(seconds: float) -> str:
    from tests.support.events import iso

    return iso(seconds)
