"""Matching alerts to ground-truth labels, and the figures per alert type.

Pure functions over plain records (alerts as the JSONL sink writes them,
labels as :func:`connectors.simulator.source.scenario_labels` returns them), so the
scoring is tested without running a dataflow.

An OPEN alert is *correct* when a label with ``expected=True`` of the same
type and key covers its event time:

- region incidents (FAILURE_RATE, TRAFFIC_DROP): from one hop before the
  incident's start (out-of-order events may move a few seconds earlier) to
  one window length after its end (the window still holds incident events);
- user and transaction incidents: the label's span, give or take a second.

Everything else is a false alert, including an alert on a near miss
(``expected=False``): those are built to stay under a limit and must not
page anyone. A second OPEN for an incident already detected is counted
apart (``duplicates``): not a false alarm about a healthy key, but a second
page for one problem; ``opens_per_label`` keeps the count per incident kind
(a flapping region may take two).

FAILURE_RATE incidents are also scored on their cause: the first OPEN's top
contributor (``details.contributors[0]``) must be the label's injected cause
(a device, a merchant), and an incident without a cause (broad) must name no
contributor with half or more of the failures.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Optional

REGION_TYPES = ("FAILURE_RATE", "TRAFFIC_DROP")
ALERT_TYPES = ("FAILURE_RATE", "TRAFFIC_DROP", "VELOCITY", "AMOUNT_SPIKE", "IMPOSSIBLE_TRAVEL", "FRAUD_SUSPECTED")
USER_SLACK_SECONDS = 1.0


def epoch(iso: str) -> float:
    """Epoch seconds of an ISO-8601 UTC time (``...Z``)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class TypeReport:
    """Detection quality of one alert type."""

    alert_type: str
    labels: int = 0  # incidents expected to alert
    near_misses: int = 0  # incidents built not to alert
    alerts: int = 0  # OPEN alerts raised
    detected: int = 0
    correct: int = 0  # OPEN alerts matching an expected incident (duplicates included)
    duplicates: int = 0
    false_alerts: int = 0
    near_miss_alerts: int = 0  # false alerts that hit a near miss
    precision: Optional[float] = None
    recall: Optional[float] = None
    false_per_million: float = 0.0
    open_delays: list = field(default_factory=list)  # seconds, incident start -> OPEN
    resolve_delays: list = field(default_factory=list)  # seconds, incident end -> RESOLVED
    unresolved: int = 0  # detected region incidents with no RESOLVED
    open_delays_by_kind: dict = field(default_factory=dict)  # scenario kind -> [seconds]
    opens_per_label: dict = field(default_factory=dict)  # scenario kind -> [OPEN count per detected label]
    cause_checked: int = 0  # detected FAILURE_RATE labels whose contributors were scored
    cause_correct: int = 0
    cause_precision: Optional[float] = None
    cause_misses: list = field(default_factory=list)  # (first few) labels with the wrong cause
    missed: list = field(default_factory=list)  # labels not detected (first few)
    false: list = field(default_factory=list)  # false alerts (first few)
    false_ids: set = field(default_factory=set)  # alert_id of every false alert

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (delays summarised, examples kept short)."""
        record = asdict(self)
        record["open_delay"] = _delay_stats(self.open_delays)
        record["resolve_delay"] = _delay_stats(self.resolve_delays)
        record["open_delay_by_kind"] = {k: _delay_stats(v) for k, v in sorted(self.open_delays_by_kind.items())}
        record["incidents_per_label"] = {
            k: {"labels": len(v), "mean": round(statistics.mean(v), 3), "max": max(v)}
            for k, v in sorted(self.opens_per_label.items())
        }
        del record["open_delays"], record["resolve_delays"], record["false_ids"]
        del record["open_delays_by_kind"], record["opens_per_label"]
        return record


def _delay_stats(values: list[float]) -> Optional[dict[str, float]]:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "worst": round(max(values), 3),
        "best": round(min(values), 3),
    }


@dataclass
class _Label:
    record: dict
    start: float
    end: float
    lo: float
    hi: float
    expected: bool
    open_id: Optional[str] = None
    incident_ids: list = field(default_factory=list)


def match(
    labels: Iterable[dict],
    alerts: Iterable[dict],
    n_events: int,
    window_seconds: float = 60.0,
    hop_seconds: float = 10.0,
    keep_examples: int = 10,
) -> dict[str, TypeReport]:
    """Score ``alerts`` against ``labels``; one :class:`TypeReport` per alert type.

    :arg n_events: events in the run (denominator of false alerts per million).
    :arg window_seconds: sliding-window length of the region rules.
    :arg hop_seconds: hop of the region rules.
    """
    reports = {t: TypeReport(t) for t in ALERT_TYPES}
    by_key: dict[tuple[str, str], list[_Label]] = {}
    for record in labels:
        alert_type = record["type"]
        if alert_type not in reports:
            continue
        start, end = epoch(record["start"]), epoch(record["end"])
        if alert_type in REGION_TYPES:
            lo, hi = start - hop_seconds, end + window_seconds
        else:
            lo, hi = start - USER_SLACK_SECONDS, end + USER_SLACK_SECONDS
        label = _Label(record, start, end, lo, hi, bool(record.get("expected", True)))
        by_key.setdefault((alert_type, record["key"]), []).append(label)
        report = reports[alert_type]
        if label.expected:
            report.labels += 1
        else:
            report.near_misses += 1

    resolved: dict[str, float] = {}
    opens = []
    for alert in alerts:
        if alert.get("type") not in reports:
            continue
        if alert.get("state") == "RESOLVED":
            resolved[alert["incident_id"]] = epoch(alert["event_time"])
        else:
            opens.append(alert)
    opens.sort(key=lambda a: a["event_time"])

    for alert in opens:
        report = reports[alert["type"]]
        report.alerts += 1
        t = epoch(alert["event_time"])
        candidates = [lab for lab in by_key.get((alert["type"], alert["key"]), ()) if lab.lo <= t <= lab.hi]
        hit = next((lab for lab in candidates if lab.expected and lab.open_id is None), None)
        if hit is None:
            hit = next((lab for lab in candidates if lab.expected), None)
            if hit is not None:
                report.correct += 1
                report.duplicates += 1
                hit.incident_ids.append(alert.get("incident_id", alert.get("alert_id")))
                continue
            report.false_alerts += 1
            report.false_ids.add(alert.get("alert_id"))
            if candidates:
                report.near_miss_alerts += 1
            if len(report.false) < keep_examples:
                report.false.append(
                    {
                        "key": alert["key"],
                        "event_time": alert["event_time"],
                        "value": alert.get("value"),
                        "near_miss": bool(candidates),
                    }
                )
            continue
        hit.open_id = alert.get("incident_id", alert.get("alert_id"))
        hit.incident_ids.append(hit.open_id)
        report.correct += 1
        report.detected += 1
        report.open_delays.append(round(t - hit.start, 3))
        kind = hit.record.get("scenario", "")
        report.open_delays_by_kind.setdefault(kind, []).append(round(t - hit.start, 3))
        if alert["type"] == "FAILURE_RATE":
            _score_cause(report, hit, alert, keep_examples)

    for group in by_key.values():
        for lab in group:
            if lab.open_id is None or lab.record["type"] not in REGION_TYPES:
                if lab.open_id is not None:
                    reports[lab.record["type"]].opens_per_label.setdefault(lab.record.get("scenario", ""), []).append(
                        len(lab.incident_ids)
                    )
                continue
            report = reports[lab.record["type"]]
            report.opens_per_label.setdefault(lab.record.get("scenario", ""), []).append(len(lab.incident_ids))
            closes = [resolved.get(incident) for incident in lab.incident_ids]
            if any(closed is None for closed in closes):
                report.unresolved += 1
            else:
                report.resolve_delays.append(round(max(c for c in closes if c is not None) - lab.end, 3))

    for group in by_key.values():
        for lab in group:
            if lab.expected and lab.open_id is None:
                report = reports[lab.record["type"]]
                if len(report.missed) < keep_examples:
                    report.missed.append({k: lab.record[k] for k in ("key", "start", "end", "scenario")})

    for report in reports.values():
        if report.cause_checked:
            report.cause_precision = round(report.cause_correct / report.cause_checked, 4)
        report.precision = round(report.correct / report.alerts, 4) if report.alerts else None
        report.recall = round(report.detected / report.labels, 4) if report.labels else None
        report.false_per_million = round(report.false_alerts * 1e6 / n_events, 3) if n_events else 0.0
    return reports


def _score_cause(report: TypeReport, label: _Label, alert: dict, keep_examples: int) -> None:
    """Did the first OPEN name the injected cause (or, for a broad incident, no dominant value)?"""
    cause = (label.record.get("details") or {}).get("cause")
    found = (alert.get("details") or {}).get("contributors") or []
    report.cause_checked += 1
    if cause is None:
        correct = not any(c.get("failure_share", 0.0) >= 0.5 for c in found)
    else:
        top = found[0] if found else {}
        correct = (top.get("dimension"), top.get("value")) == (cause["dimension"], cause["value"])
    if correct:
        report.cause_correct += 1
    elif len(report.cause_misses) < keep_examples:
        report.cause_misses.append(
            {
                "key": label.record["key"],
                "start": label.record["start"],
                "scenario": label.record.get("scenario"),
                "cause": cause,
                "named": [(c.get("dimension"), c.get("value"), c.get("failure_share")) for c in found[:3]],
            }
        )


def late_routing(labels: Iterable[dict], dead_letters: Iterable[dict]) -> dict[str, Any]:
    """How the deliberately late events were routed: all to dead letters with reason ``late``?"""
    import orjson

    expected = {lab["key"] for lab in labels if lab["type"] == "LATE"}
    routed = set()
    other = 0
    for record in dead_letters:
        if record.get("reason") != "late":
            other += 1
            continue
        try:
            routed.add(orjson.loads(record["raw"])["transaction_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return {
        "labels": len(expected),
        "routed_late": len(routed),
        "caught": len(expected & routed),
        "unexpected_late": len(routed - expected),
        "other_dead_letters": other,
    }
