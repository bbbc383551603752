"""Detection quality: the matching rules, and the real dataflow on small labelled mixes."""

from __future__ import annotations

import json

import pytest

from evaluation.__main__ import evaluate, main
from evaluation.matching import match
from evaluation.report import check_bar, markdown_table, table


def _label(alert_type, key, start, end, expected=True):
    return {"type": alert_type, "key": key, "start": start, "end": end, "expected": expected, "scenario": "t"}


def _alert(alert_type, key, event_time, state="OPEN", incident=None):
    incident = incident or f"{alert_type}:{key}:{event_time}"
    return {
        "alert_id": f"{incident}:{state}",
        "incident_id": incident,
        "type": alert_type,
        "state": state,
        "key": key,
        "event_time": event_time,
        "value": 1.0,
    }


# -- matching, on synthetic alerts ---------------------------------------------------


def test_region_incident_open_and_resolve_delays():
    labels = [_label("FAILURE_RATE", "US-WEST", "2025-07-09T19:10:00.000Z", "2025-07-09T19:15:00.000Z")]
    alerts = [
        _alert("FAILURE_RATE", "US-WEST", "2025-07-09T19:10:30Z", incident="i1"),
        _alert("FAILURE_RATE", "US-WEST", "2025-07-09T19:15:40Z", "RESOLVED", incident="i1"),
    ]
    report = match(labels, alerts, n_events=1_000_000)["FAILURE_RATE"]
    assert (report.precision, report.recall, report.false_alerts) == (1.0, 1.0, 0)
    assert report.open_delays == [30.0] and report.resolve_delays == [40.0]


def test_alerts_outside_a_label_or_on_a_near_miss_are_false():
    labels = [
        _label("FAILURE_RATE", "US-WEST", "2025-07-09T19:10:00.000Z", "2025-07-09T19:15:00.000Z"),
        _label("VELOCITY", "u1", "2025-07-09T19:20:00.000Z", "2025-07-09T19:20:40.000Z", expected=False),
    ]
    alerts = [
        _alert("FAILURE_RATE", "US-WEST", "2025-07-09T19:09:40Z"),  # before start - hop
        _alert("FAILURE_RATE", "US-WEST", "2025-07-09T19:16:10Z"),  # after end + window
        _alert("FAILURE_RATE", "EU-WEST", "2025-07-09T19:11:00Z"),  # other region
        _alert("VELOCITY", "u1", "2025-07-09T19:20:30Z"),  # near miss
    ]
    reports = match(labels, alerts, n_events=500_000)
    assert reports["FAILURE_RATE"].false_alerts == 3 and reports["FAILURE_RATE"].recall == 0.0
    assert reports["FAILURE_RATE"].false_per_million == 6.0
    assert reports["VELOCITY"].near_miss_alerts == 1 and reports["VELOCITY"].precision == 0.0
    assert reports["VELOCITY"].recall is None
    bar = check_bar(reports, 60.0)
    assert not bar["passed"] and any("FAILURE_RATE recall" in f for f in bar["failures"])


def test_second_open_for_one_incident_is_a_duplicate_not_a_false_alert():
    labels = [_label("IMPOSSIBLE_TRAVEL", "u7", "2025-07-09T19:00:00.000Z", "2025-07-09T19:30:00.000Z")]
    alerts = [
        _alert("IMPOSSIBLE_TRAVEL", "u7", "2025-07-09T19:00:00.000Z"),
        _alert("IMPOSSIBLE_TRAVEL", "u7", "2025-07-09T19:01:00.000Z"),
    ]
    report = match(labels, alerts, n_events=1000)["IMPOSSIBLE_TRAVEL"]
    assert (report.detected, report.duplicates, report.false_alerts, report.precision) == (1, 1, 0, 1.0)


def test_tables_list_every_type():
    reports = match([], [], n_events=10)
    assert "FRAUD_SUSPECTED" in table(reports) and markdown_table(reports).count("\n") == 7


# -- the real dataflow ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_mix(tmp_path_factory):
    """Every incident kind over normal traffic: ~57k events, 1,200 s of event time."""
    return evaluate(
        tmp_path_factory.mktemp("mixed"), scenario="mixed", events=60_000, seed=3, event_rate=50, users=2_000
    )


def test_small_mix_detects_every_incident_without_false_alerts(small_mix):
    for name, report in small_mix.reports.items():
        assert report.labels >= 1, name
        assert (report.precision, report.recall, report.false_alerts, report.duplicates) == (1.0, 1.0, 0, 0), name
    assert small_mix.bar["passed"]
    assert max(small_mix.reports["FAILURE_RATE"].open_delays) <= 60.0
    assert len(small_mix.reports["FAILURE_RATE"].resolve_delays) == small_mix.reports["FAILURE_RATE"].detected
    late = small_mix.late
    assert late["caught"] == late["labels"] > 0 and late["unexpected_late"] == 0


def test_small_mix_writes_report_and_timeline(small_mix):
    out = small_mix.output.out_dir
    document = json.loads((out / "report.json").read_text())
    assert document["bar"]["passed"] and document["run"]["events"] == small_mix.output.n_events
    assert set(document["types"]) == set(small_mix.reports)
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def hard_mix(tmp_path_factory):
    """Near misses and just-over incidents: 3 % spike vs 2 %, 11 vs 10 payments, 10,500 vs 9,500..."""
    return evaluate(
        tmp_path_factory.mktemp("hard"),
        scenario="hard",
        events=90_000,
        seed=3,
        event_rate=100,
        users=4_000,
        timeline=False,
    )


def _by_scenario(evaluation, kind):
    return [lab for lab in evaluation.labels if lab["scenario"] == kind]


def test_hard_mix_just_over_the_limit_alerts(hard_mix):
    for kind in ("failure_edge", "velocity_edge", "velocity_amount_edge", "amount_edge", "fraud_edge", "traffic_edge"):
        assert _by_scenario(hard_mix, kind), kind
    for name, report in hard_mix.reports.items():
        assert report.recall in (None, 1.0), name
    # A 3 % spike against the 2 % threshold needs evidence (the lower 99.9 % bound above
    # 2 %): on the hard mix's 30-50 events/s per region that takes one window to about
    # three minutes (142 s on this run, 199 s at worst on the 2-hour hard mix), inside
    # the incident's 240-480 s.
    assert max(hard_mix.reports["FAILURE_RATE"].open_delays) <= 240.0
    velocity = {a["key"]: a for a in hard_mix.output.alerts if a["type"] == "VELOCITY"}
    for label in _by_scenario(hard_mix, "velocity_edge"):  # fires on the 11th payment
        assert velocity[label["key"]]["details"]["count"] == 11
        assert velocity[label["key"]]["event_time"].startswith(label["end"][:19])
    for label in _by_scenario(hard_mix, "velocity_amount_edge"):  # fires when the sum passes 10,000
        assert velocity[label["key"]]["details"]["limit"] == "amount"


def test_hard_mix_just_under_the_limit_stays_silent(hard_mix):
    for kind in (
        "failure_near_miss",
        "velocity_near_miss",
        "velocity_amount_near_miss",
        "amount_near_miss",
        "fraud_near_miss",
        "traffic_near_miss",
    ):
        assert _by_scenario(hard_mix, kind), kind
    for name, report in hard_mix.reports.items():
        assert report.near_miss_alerts == 0, name
        assert report.false_alerts == 0, name
    alerted = {(a["type"], a["key"]) for a in hard_mix.output.alerts}
    for label in hard_mix.labels:
        if not label["expected"]:
            assert (label["type"], label["key"]) not in alerted, label


def test_command_line_check_passes_on_the_small_mix(tmp_path, capsys):
    code = main(
        [
            "--events",
            "30000",
            "--event-rate",
            "50",
            "--users",
            "2000",
            "--seed",
            "3",
            "--scenario",
            "velocity_attack",
            "--out",
            str(tmp_path),
            "--no-timeline",
            "--check",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "bar (issue 7): PASS" in printed and "VELOCITY" in printed
