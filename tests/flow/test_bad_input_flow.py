"""The whole flow with poison in the middle of a file: future dates, a skewed clock, huge fields."""

from __future__ import annotations

import time

import orjson

from tests.flow.test_flow import expected_minutes, minute_counts, read, run_files, traffic
from tests.support.events import T0, event, line, write_jsonl


def test_future_skewed_and_oversized_events_leave_the_rest_exact_and_the_output_bounded(tmp_path):
    events = traffic(3000, 300, seed=5)
    skewed = event("skewed", T0 + 3 * 3600, region="US")  # a producer 3 hours ahead, still in the past
    poison = [
        (500, event("2099", 4070908800, region="EU")),  # 2099-01-01: future, and no window up to 2099
        (900, event("ahead", time.time() + 3600, region="US")),  # an hour ahead of the wall clock
        (1200, skewed),
        (1500, {**event("huge", T0 + 150), "merchant_name": "m" * 5_000_000}),
        (1800, {**event("long", T0 + 180), "merchant_name": "m" * 257}),
        (2100, event("big", T0 + 210, amount=1e300)),
    ]
    lines = [line(e) for e in events]
    lines.insert(2400, line(event("hugeint", T0 + 240)).replace(b'"amount":50.0', b'"amount":' + b"9" * 40))
    for offset, (position, ev) in enumerate(poison):
        lines.insert(position + offset, line(ev))
    write_jsonl(tmp_path / "in.jsonl", lines)
    run_files(str(tmp_path / "in.jsonl"), tmp_path / "out")

    metrics = read(tmp_path / "out", "metrics")
    # exact minutes for the rest, and the skewed event counted in its own minute, nothing late
    assert minute_counts(metrics) == expected_minutes(events + [skewed])
    dead = read(tmp_path / "out", "dead_letter")
    assert [(d["reason"], d["field"], orjson.loads(d["raw"])["transaction_id"]) for d in dead if "raw" in d] == [
        ("future", "timestamp", "2099"),
        ("future", "timestamp", "ahead"),
        ("too_large", None, "huge"),
        ("invalid_field", "merchant_name", "long"),
        ("invalid_field", "amount", "big"),
        ("invalid_field", "amount", "hugeint"),
    ]
    # bounded: minutes with events (and a few around them), never every empty minute to 2099 or 3 h ahead
    assert len(metrics) < 40, len(metrics)
    assert max(r["window_start"] for r in metrics) < "2025-07-09T22:05"
    txns = read(tmp_path / "out", "transactions")
    assert len(txns) == len(events) + 1
