"""Region windows: exact minutes, incident lifecycle, watermark across partitions, silence."""

from collections import Counter

from config import load_settings
from operators.region_windows import ALERT, METRICS, RegionSummary, RegionWindows
from tests.support.events import T0

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
        "partial": True,  # the flow's first event came 5 s into the minute
    }
    [[last]] = kinds(w.flush(), METRICS)
    assert (last["window_start"], last["count"], last["review_required"]) == ("2025-07-09T19:01:00Z", 4, 1)
    assert last["partial"] is True  # the input ended 1 s into the minute


def test_only_the_minutes_the_flow_saw_in_part_are_marked_partial():
    w = windows()
    counts = {("EU", T0 + s): [1, 0, 0, 0] for s in range(0, 180, 5)}
    out = w.add([summary(counts, T0 + 180)], now=0)
    minutes = [m for [m] in kinds(out, METRICS)]
    assert [(m["window_start"], m["partial"]) for m in minutes] == [
        ("2025-07-09T19:00:00Z", False),
        ("2025-07-09T19:01:00Z", False),
        ("2025-07-09T19:02:00Z", False),
    ]


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


# -- evidence, hysteresis, end of input ---------------------------------------------------


def alerts_of(out, alert_type="FAILURE_RATE"):
    return [(a["state"], a["event_time"]) for a in kinds(out, ALERT) if a["type"] == alert_type]


def test_small_region_opens_on_a_large_rate_and_not_on_chance_failures():
    # 1 event/s: 3 failures in 60 s (5 %) is chance at 99.9 %; 30 % failing is an incident.
    w = windows()
    quiet = {("SA", T0 + i): [1, 1 if i in (5, 20, 40) else 0, 0, 0] for i in range(120)}
    out = w.add([summary(quiet, T0 + 130)], now=0)
    assert alerts_of(out) == []
    failing = {("SA", T0 + 120 + i): [1, 1 if i % 10 < 3 else 0, 0, 0] for i in range(120)}
    out = w.add([summary(failing, T0 + 250)], now=0)
    assert [s for s, _ in alerts_of(out)] == ["OPEN"]


def test_a_flapping_region_is_one_incident():
    # 3.5 % and 1 % alternating every 45 s for six minutes at 50 events/s, then clean.
    w = windows()
    counts = per_second("EU", T0, 300, 50, 0)
    for i in range(360):
        high = (i // 45) % 2 == 0
        counts[("EU", T0 + 300 + i)] = [50, (7 if i % 4 == 0 else 1) if high else (1 if i % 2 == 0 else 0), 0, 0]
    counts |= per_second("EU", T0 + 660, 300, 50, 0)
    out = w.add([summary(counts, T0 + 960)], now=0)
    states = [s for s, _ in alerts_of(out)]
    assert states in (["OPEN", "RESOLVED"], ["OPEN", "RESOLVED", "OPEN", "RESOLVED"])
    resolved_at = [t for s, t in alerts_of(out) if s == "RESOLVED"][-1]
    assert resolved_at <= "2025-07-09T19:14:00Z"  # within three minutes of the end at 19:11:00


def test_end_of_input_resolves_an_incident_whose_last_window_is_under_the_threshold():
    w = windows()
    counts = per_second("EU", T0, 120, 20, 0) | {("EU", T0 + 120 + i): [20, 4, 0, 0] for i in range(120)}
    counts |= per_second("EU", T0 + 240, 70, 20, 0)  # the input ends 70 s after the incident
    out = w.add([summary(counts, T0 + 300)], now=0)
    out += w.flush()
    found = kinds(out, ALERT)
    assert [a["state"] for a in found] == ["OPEN", "RESOLVED"]
    resolved = found[1]
    assert resolved["details"]["peak_rate_percent"] == 20.0
    assert resolved["details"]["duration_seconds"] > 0
    assert resolved["value"] <= 2.0


def test_end_of_input_keeps_an_incident_open_while_its_last_window_fails():
    w = windows()
    counts = per_second("EU", T0, 120, 20, 0) | {("EU", T0 + 120 + i): [20, 4, 0, 0] for i in range(120)}
    out = w.add([summary(counts, T0 + 200)], now=0)
    out += w.flush()
    assert [a["state"] for a in kinds(out, ALERT)] == ["OPEN"]


# -- contributors ------------------------------------------------------------------------------


def as_counters(flat):
    """``{(region, hop, field, value): [events, failures]}`` as the parse step hands it over."""
    out = {}
    for (region, hop, name, value), (events, failures) in flat.items():
        seen, fails = out.setdefault((region, hop), {}).setdefault(name, (Counter(), Counter()))
        seen[value] += events
        if failures:
            fails[value] += failures
    return out


def dims_for(region, start, seconds, hop, per_hop):
    """Dimension counts per hop: per_hop maps (field, value) -> (events, failures) per hop."""
    out = {}
    for h in range(start, start + seconds, hop):
        for (name, value), pair in per_hop.items():
            out[(region, h, name, value)] = list(pair)
    return out


def open_device_incident(mobile_failures: int, web_failures: int) -> dict:
    """The alert that opens when EU goes from no failures to 2 of 20 events a second, split
    between the devices as given (failures per 10 s hop; mobile is a quarter of the traffic)."""
    w = windows()
    counts = per_second("EU", T0, 120, 20, 0) | per_second("EU", T0 + 120, 120, 20, 2)
    normal = {("device", "mobile"): (50, 0), ("device", "web"): (150, 0)}
    failing = {("device", "mobile"): (50, mobile_failures), ("device", "web"): (150, web_failures)}
    dims = dims_for("EU", T0, 120, 10, normal) | dims_for("EU", T0 + 120, 120, 10, failing)
    return kinds(w.add([RegionSummary("p0", 1, T0 + 240, False, False, counts, as_counters(dims))], now=0), ALERT)[0]


def test_open_names_the_device_that_carries_the_failures():
    opened = open_device_incident(mobile_failures=20, web_failures=0)  # 2 of mobile's 5 events a second fail
    top = opened["details"]["contributors"][0]
    assert (top["dimension"], top["value"]) == ("device", "mobile")
    assert top["failure_share"] == 1.0 and top["traffic_share"] == 0.25 and top["lift"] == 4.0
    assert "of failures on device=mobile, 25 % of traffic" in opened["message"]
    assert opened["message"].startswith("EU failure rate ")


def test_a_broad_incident_names_no_contributor():
    opened = open_device_incident(mobile_failures=5, web_failures=15)  # in proportion to traffic
    assert opened["details"]["contributors"] == []
    assert "no single value stands out" in opened["message"]


def test_heavy_hitters_keep_a_bounded_exact_summary_per_hop():
    w = windows(failure_rate={"explain_max_values": 3})
    counts = per_second("EU", T0, 120, 20, 0) | per_second("EU", T0 + 120, 120, 20, 2)
    dims = {}
    for h in range(T0, T0 + 240, 10):
        incident = h >= T0 + 120
        # 60 merchants a hop: m0 carries 20 % of the traffic and fails in the incident;
        # m1 is small and fails too, but had no failures (and little traffic) before.
        dims[("EU", h, "merchant_id", "m0")] = [40, 18 if incident else 0]
        dims[("EU", h, "merchant_id", "m1")] = [2, 2 if incident else 0]
        for m in range(2, 60):
            dims[("EU", h, "merchant_id", f"m{m}")] = [3 + m % 2, 0]
    out = w.add([RegionSummary("p0", 1, T0 + 240, False, False, counts, as_counters(dims))], now=0)
    sealed = [v for h, v in w.state.dims["EU"].items() if h < T0 + 220]
    assert sealed and all(len(v) <= 6 for v in sealed)  # top 3 by failures + top 3 by events
    opened = kinds(out, ALERT)[0]
    found = opened["details"]["contributors"]
    # Exact: m0 was kept in every hop (most events), with its full counts.
    assert (found[0]["value"], found[0]["events"], found[0]["failures"]) == (
        "m0",
        240,
        sum(18 for h in range(T0 + 60, T0 + 240, 10) if h >= T0 + 120 and h < opened_end(opened)),
    )
    # m1 was cut from the hops before the incident: never reported with a partial count.
    assert [c["value"] for c in found] == ["m0"]


def opened_end(alert):
    from evaluation.matching import epoch

    return int(epoch(alert["event_time"]))


# -- event-time order, bulk closing, jumps ---------------------------------------------------------


def _incident_data():
    """40 minutes: EU silent 19:15-19:25 (a drop inside the data), US failing 19:30-19:33."""
    counts = per_second("US", T0, 2400, 10, 0)
    counts |= {("US", T0 + 1800 + i): [10, 2, 0, 0] for i in range(180)}
    counts |= per_second("EU", T0, 900, 10) | per_second("EU", T0 + 1500, 900, 10)
    return counts


def _alert_keys(out):
    return [(a["type"], a["key"], a["state"], a["event_time"]) for a in kinds(out, ALERT)]


def test_windows_closed_in_bulk_give_the_same_alerts_as_one_by_one():
    counts = _incident_data()
    one_by_one = windows()
    out = []
    for t in range(T0, T0 + 2400, 10):
        chunk = {k: v for k, v in counts.items() if t <= k[1] < t + 10}
        out += one_by_one.add([summary(chunk, t + 10)], now=0)
    out += one_by_one.flush()
    expected = _alert_keys(out)
    assert ("TRAFFIC_DROP", "EU", "OPEN") in {k[:3] for k in expected}
    assert ("FAILURE_RATE", "US", "RESOLVED") in {k[:3] for k in expected}

    bulk = windows()  # a slow partition releases the watermark at once
    assert _alert_keys(bulk.add([summary(counts, T0 + 2400)], now=0) + bulk.flush()) == expected
    at_end = windows()  # the watermark never moved: everything closes at the end of input
    assert _alert_keys(at_end.add([summary(counts, None)], now=0) + at_end.flush()) == expected


def test_a_watermark_jump_to_2099_costs_what_the_data_costs():
    w = windows()
    counts = per_second("EU", T0, 180, 10)
    far = 4_070_908_800  # 2099-01-01
    counts[("EU", far)] = [1, 0, 0, 0]
    out = w.add([summary(counts, far - 10)], now=0)
    minutes = kinds(out, METRICS)
    assert [m[0]["count"] for m in minutes] == [600, 600, 600]
    out = w.flush()
    assert [m[0]["count"] for m in kinds(out, METRICS)] == [1]
    assert sum(len(b) for b in w.state.buckets.values()) <= 1


def test_a_silent_stretch_still_opens_a_traffic_drop_in_constant_time():
    w = windows()
    counts = per_second("EU", T0, 900, 10) | per_second("US", T0, 900, 10)
    counts[("US", T0 + 86_400)] = [10, 0, 0, 0]  # US comes back a day later; EU never does
    out = w.add([summary(counts, T0 + 86_400 - 10)], now=0)
    drops = [(a["key"], a["state"]) for a in kinds(out, ALERT) if a["type"] == "TRAFFIC_DROP"]
    assert drops == [("EU", "OPEN"), ("US", "OPEN")]
    assert len(kinds(out, METRICS)) == 15  # only the minutes that had events


def test_a_version_1_snapshot_is_migrated():
    import pickle

    from operators.region_windows import STATE_VERSION, RegionWindowState

    old = RegionWindowState()
    old.incidents[("FAILURE_RATE", "EU")] = "FAILURE_RATE:EU:20250709T190120Z"
    for name in ("dims", "dims_cut", "version", "pending", "sealed"):
        old.__dict__.pop(name, None)
    w = windows()
    w.state = None  # type: ignore[assignment]
    restored = RegionWindows(S.rules.failure_rate, S.rules.traffic_drop, 30.0, pickle.loads(pickle.dumps(old)))
    assert restored.state.version == STATE_VERSION and restored.state.dims == {}
    counts = per_second("EU", T0, 200, 20, 0)
    out = restored.add([summary(counts, T0 + 200)], now=0)
    [resolved] = kinds(out, ALERT)
    assert (resolved["state"], resolved["incident_id"]) == ("RESOLVED", "FAILURE_RATE:EU:20250709T190120Z")


def test_a_version_3_snapshot_keeps_its_pending_counts():
    from operators.region_windows import STATE_VERSION, RegionWindowState

    old = RegionWindowState()
    old.version = 3
    old.pending = {"device": (Counter({("EU", T0, "mobile"): 5}), Counter({("EU", T0, "mobile"): 2}))}
    restored = RegionWindows(S.rules.failure_rate, S.rules.traffic_drop, 30.0, old)
    assert restored.state.version == STATE_VERSION
    assert restored.state.pending == {("EU", T0): {"device": ({"mobile": 5}, {"mobile": 2})}}


def test_the_snapshot_format_reads_a_pre_issue_16_state():
    import pickle

    from operators.region_windows import STATE_VERSION, RegionWindowState
    from operators.steps import REGION_WINDOWS_FORMAT

    old = RegionWindowState()
    old.incidents[("FAILURE_RATE", "EU")] = "FAILURE_RATE:EU:20250709T190120Z"
    for name in ("dims", "dims_cut", "version", "pending", "sealed"):
        old.__dict__.pop(name, None)
    state = REGION_WINDOWS_FORMAT.load(("paywatch-snapshot", "region_windows", 1, pickle.loads(pickle.dumps(old))))
    assert state.version == STATE_VERSION and state.pending == {}
    assert state.incidents[("FAILURE_RATE", "EU")].incident_id == "FAILURE_RATE:EU:20250709T190120Z"
    assert REGION_WINDOWS_FORMAT.save(state)[2] == 2
