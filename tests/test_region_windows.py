"""Region windows: exact minutes, incident lifecycle, watermark across partitions, silence."""

from config import load_settings
from operators.region_windows import ALERT, METRICS, RegionSummary, RegionWindows
from tests.events import T0

S = load_settings(environ={})


def windows(**rule_overrides):
    s = load_settings(environ={}, overrides={"rules": rule_overrides}) if rule_overrides else S
    return RegionWindows(s.rules.failure_rate, s.rules.traffic_drop, 30.0)


def summary(counts, watermark, part="p0", n_parts=1, done=False, idle=False):
    return RegionSummary(part, n_parts, watermark, done, idle, counts)


def per_second(region, start, seconds, per_sec, failures_per_sec=0):
    return {(region, start + i): [per_sec, failures_per_sec, 0, 0] for i in range(seconds)}


def kinds(out, kind):
    return [item for k, item in out if k == kind]


def test_minutes_are_exact_and_aligned_to_utc():
    w = windows()
    counts = {("EU", T0 + 5): [3, 1, 0, 0], ("EU", T0 + 59): [2, 0, 1, 0], ("EU", T0 + 60): [4, 0, 0, 1]}
    out = w.add([summary(counts, T0 + 50)], now=0)
    assert kinds(out, METRICS) == []  # the minute is not closed yet
    out = w.add([summary({}, T0 + 60)], now=0)
    [[minute]] = kinds(out, METRICS)
    assert minute == {
        "region": "EU",
        "window_start": "2025-07-09T19:00:00Z",
        "window_end": "2025-07-09T19:01:00Z",
        "count": 5,
        "failures": 1,
        "failure_rate": 20.0,
        "fraud_suspected": 1,
        "review_required": 0,
    }
    [[last]] = kinds(w.flush(), METRICS)
    assert (last["window_start"], last["count"], last["review_required"]) == ("2025-07-09T19:01:00Z", 4, 1)


def test_out_of_order_counts_land_in_their_own_window():
    w = windows()
    w.add([summary({("EU", T0 + 61): [1, 0, 0, 0]}, T0 + 51)], now=0)
    w.add([summary({("EU", T0 + 58): [1, 1, 0, 0]}, T0 + 51)], now=0)  # older, still within lateness
    out = w.add([summary({}, T0 + 125)], now=0)
    minutes = [m[0] for m in kinds(out, METRICS)]
    assert [(m["window_start"], m["count"], m["failures"]) for m in minutes] == [
        ("2025-07-09T19:00:00Z", 1, 1),
        ("2025-07-09T19:01:00Z", 1, 0),
    ]


def test_silent_region_still_closes_and_reports_zero():
    w = windows()
    counts = per_second("EU", T0, 60, 5) | per_second("US", T0, 180, 5)
    out = w.add([summary(counts, T0 + 180)], now=0)
    eu = [r for m in kinds(out, METRICS) for r in m if r["region"] == "EU"]
    assert [r["count"] for r in eu] == [300, 0, 0]


def test_one_open_and_one_resolved_per_incident():
    w = windows()
    counts = per_second("EU", T0, 60, 10, 0)
    counts |= {("EU", T0 + 60 + i): [10, 1, 0, 0] for i in range(60)}  # 10 % for a minute
    counts |= per_second("EU", T0 + 120, 120, 10, 0)
    out = w.add([summary(counts, T0 + 240)], now=0)
    found = [(a["type"], a["state"], a["event_time"]) for a in kinds(out, ALERT)]
    assert found == [
        # 20 of 600 (3.3 %) is not yet evidence at 99.9 % (Wilson bound 1.8 %); 30 of 600 is.
        ("FAILURE_RATE", "OPEN", "2025-07-09T19:01:30Z"),
        # First window at or under 2 % ends 19:02:50; the sixth in a row resolves.
        ("FAILURE_RATE", "RESOLVED", "2025-07-09T19:03:40Z"),
    ]
    opened, resolved = kinds(out, ALERT)
    assert opened["incident_id"] == resolved["incident_id"] == "FAILURE_RATE:EU:20250709T190130Z"
    assert opened["alert_id"].endswith(":OPEN") and resolved["alert_id"].endswith(":RESOLVED")
    assert opened["value"] > 2.0 and resolved["value"] <= 2.0 and opened["threshold"] == 2.0


def test_threshold_is_strict_and_resolution_is_at_or_under():
    w = windows()
    # 2 failures per 100 events is exactly 2 %: not above the threshold.
    counts = {("EU", T0 + i): [100, 2, 0, 0] for i in range(60)}
    out = w.add([summary(counts, T0 + 60)], now=0)
    assert kinds(out, ALERT) == []


def test_no_alert_under_min_events():
    w = windows(failure_rate={"min_events": 100})
    counts = {("EU", T0 + i): [1, 1, 0, 0] for i in range(99)}  # 99 events, all failed
    out = w.add([summary(counts, T0 + 300)], now=0)
    assert [a for a in kinds(out, ALERT) if a["type"] == "FAILURE_RATE"] == []


def test_watermark_is_the_minimum_over_partitions():
    w = windows()
    out = w.add([summary({("EU", T0 + 1): [1, 0, 0, 0]}, T0 + 500, part="fast", n_parts=2)], now=0)
    assert kinds(out, METRICS) == []  # the other partition has not reported yet
    out = w.add([summary({("EU", T0 + 2): [1, 0, 0, 0]}, T0 + 30, part="slow", n_parts=2)], now=0)
    assert kinds(out, METRICS) == []  # slow partition still at +30
    w.add([summary({("EU", T0 + 40): [1, 0, 0, 0]}, T0 + 61, part="slow", n_parts=2)], now=0)
    assert w.state.watermark == T0 + 61


def test_done_partitions_stop_holding_the_watermark():
    w = windows()
    w.add([summary({("EU", T0): [1, 0, 0, 0]}, T0 + 10, part="a", n_parts=2, done=True)], now=0)
    out = w.add([summary({("EU", T0 + 100): [1, 0, 0, 0]}, T0 + 120, part="b", n_parts=2)], now=0)
    assert len(kinds(out, METRICS)) == 2


def test_idle_partitions_let_event_time_follow_the_wall_clock():
    w = windows()
    w.add([summary({("EU", T0): [1, 0, 0, 0]}, T0 + 10, idle=True)], now=1000.0)
    out = w.advance(now=1000.0 + 120)
    # Both minutes closed; the second had no event anywhere, so it writes no record.
    assert [m[0]["window_start"] for m in kinds(out, METRICS)] == ["2025-07-09T19:00:00Z"]
    assert w.state.minute_end == T0 + 180  # the next minute to close


def test_traffic_drop_opens_on_silence_and_resolves_on_return():
    w = windows()
    steady = per_second("EU", T0, 600, 10) | per_second("US", T0, 1200, 10)
    back = per_second("EU", T0 + 900, 300, 10)
    out = w.add([summary(steady | back, T0 + 1200)], now=0)
    drops = [(a["state"], a["event_time"]) for a in kinds(out, ALERT) if a["type"] == "TRAFFIC_DROP"]
    assert [s for s, _ in drops] == ["OPEN", "RESOLVED"]
    assert drops[0][1] <= "2025-07-09T19:11:00Z"  # within a window of the silence starting at 19:10:00


def test_end_of_input_is_not_silence():
    w = windows()
    out = w.add([summary(per_second("EU", T0, 1200, 10), T0 + 1190)], now=0)
    out += w.flush()
    assert [a for a in kinds(out, ALERT) if a["type"] == "TRAFFIC_DROP"] == []
    minutes = kinds(out, METRICS)
    assert sum(m[0]["count"] for m in minutes) == 12000 and len(minutes) == 20
