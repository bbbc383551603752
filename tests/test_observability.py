"""The dashboard and the alert rules only query series the endpoint exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from connectors import metrics, sink_metrics  # noqa: F401 (sink_metrics registers paywatch_sink_buffered)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "grafana-paywatch.json"
RULES = ROOT / "k8s" / "prometheus-rules.yaml"
#: Series that are not Paywatch's: Prometheus's own scrape health.
FOREIGN = {"up"}
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "unknown": ("",)}


def exported_series() -> set[str]:
    """Every sample name the endpoint can serve, labelled or not yet observed."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:  # label_values(<series>, <label>): keep the series
        exprs += re.findall(r"label_values\(\s*([^,]+),", var.get("definition", ""))
    return exprs


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers followed by a selector, range or space."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_labels = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", without_labels)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s*[<>=!*/+-]|\s+(?:unless|or|and|offset))",
                           without_labels))
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "le", "time"}
    return {n for n in names if n not in keywords and not n.startswith("$")}


def test_every_paywatch_series_queried_is_exported():
    exported = exported_series()
    queried = set()
    for expr in dashboard_queries() + rule_queries():
        queried |= series_in(expr)
        for name in re.findall(r"\bpaywatch_[a-z0-9_]+", expr):
            assert name in exported, f"{name!r} in {expr!r} is not exported by connectors/metrics.py"
    assert queried - exported <= FOREIGN, queried - exported


def test_dashboard_covers_the_operator_questions():
    text = " ".join(dashboard_queries())
    for name in ("paywatch_events_total", "paywatch_region_failure_ratio", "paywatch_alerts_total",
                 "paywatch_dead_letters_total", "paywatch_event_time_lag_seconds", "paywatch_kafka_lag_records",
                 "paywatch_kinesis_millis_behind_latest", "paywatch_sink_errors_total",
                 "paywatch_sink_request_seconds_bucket"):
        assert name in text, name
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_rules_cover_lagging_sink_failing_and_process_down():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {"PaywatchProcessDown", "PaywatchEventTimeLagging", "PaywatchKafkaLagging",
            "PaywatchKinesisLagging", "PaywatchSinkFailing"} <= set(rules)
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
