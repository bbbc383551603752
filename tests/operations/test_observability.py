"""The dashboard and the alert rules only query series that are served.

``paywatch_*`` series come from observability/registry.py; ``bytewax_*`` series
from Bytewax's own dataflow API server, which a tiny flow run here with
``BYTEWAX_DATAFLOW_API_ENABLED`` serves for real (the same server the chart
turns on in every pod).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from observability.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "grafana-paywatch.json"
RULES = ROOT / "k8s" / "prometheus-rules.yaml"
#: Series that are not Paywatch's: Prometheus's own scrape health.
FOREIGN = {"up"}
#: Labels Prometheus adds to every series of a target (not served by the process).
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}
#: A flow with a stateful source, a stateful step and a sink: every kind of
#: step whose snapshot() Bytewax times. The input runs until STOP exists.
PROBE_FLOW = """
import os
import time
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource

STOP = Path(os.environ["PROBE_STOP"])


def items():
    deadline = time.monotonic() + 60
    i = 0
    while not STOP.exists() and time.monotonic() < deadline:
        yield (f"k{i % 4}", i)
        i += 1
        time.sleep(0.005)


def count(state, _value):
    state = (state or 0) + 1
    return state, state


flow = Dataflow("probe")
counts = op.stateful_map("count", op.input("inp", flow, TestingSource(items())), count)
op.output("out", counts, TestingSink([]))
"""


def exported_series() -> set[str]:
    """Every sample name the endpoint can serve, labelled or not yet observed."""
    names: set[str] = set()
    for family in REGISTRY.collect():
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


def served_by(text: str) -> dict[str, set[str]]:
    """``{sample name: label names}`` of an exposition."""
    served: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
    return served


@pytest.fixture(scope="module")
def bytewax_served(tmp_path_factory) -> dict[str, set[str]]:
    """What Bytewax's dataflow API server serves, scraped from a running flow.

    ``python -m bytewax.run`` (the image's entrypoint; the server starts only
    there) with 1-second epochs, on a free port; scraped until every
    ``bytewax_*`` series the dashboard queries is there (a histogram appears
    at its first observation, snapshots at the first epoch end), a few
    seconds at most.
    """
    work = tmp_path_factory.mktemp("bytewax-api")
    (work / "probe_flow.py").write_text(PROBE_FLOW)
    stop = work / "stop"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BYTEWAX_", "PAYWATCH"))}
    env.update(
        BYTEWAX_DATAFLOW_API_ENABLED="true",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        BYTEWAX_DATAFLOW_API_CACHE_PATH=str(work),
        PROBE_STOP=str(stop),
    )
    wanted = {n for e in dashboard_queries() for n in series_in(e) if n.startswith("bytewax_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "probe_flow", "-s", "1"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served: dict[str, set[str]] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            served = served_by(_scrape_text(port))
            if served and wanted <= set(served):
                break
            time.sleep(0.2)
    finally:
        stop.touch()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert served, f"nothing served on :{port}/metrics\n{out}"
    return served


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers followed by a selector, range or space."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_labels = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", without_labels)
    names = set(
        re.findall(
            r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s*[<>=!*/+-]|\s+(?:unless|or|and|offset))", without_labels
        )
    )
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "le", "time"}
    return {n for n in names if n not in keywords and not n.startswith("$")}


def test_every_series_queried_is_served(bytewax_served):
    exported = exported_series()
    bytewax = {n for n in bytewax_served if n.startswith("bytewax_")}
    assert "bytewax_snapshot_duration_seconds_bucket" in bytewax, sorted(bytewax)
    queried = set()
    for expr in dashboard_queries() + rule_queries():
        queried |= series_in(expr)
        for name in re.findall(r"\bpaywatch_[a-z0-9_]+", expr):
            assert name in exported, f"{name!r} in {expr!r} is not exported by observability/registry.py"
        for name in re.findall(r"\bbytewax_[a-z0-9_]+", expr):
            assert name in bytewax, f"{name!r} in {expr!r} is not served by Bytewax: {sorted(bytewax)}"
    assert queried - exported - bytewax <= FOREIGN, queried - exported - bytewax


def test_bytewax_labels_queried_are_served(bytewax_served):
    """Labels a bytewax_ query groups by or selects on are ones Bytewax puts on the series."""
    checked = 0
    for expr in dashboard_queries() + rule_queries():
        names = {n for n in series_in(expr) if n.startswith("bytewax_")}
        if not names:
            continue
        served = set().union(*(bytewax_served.get(n, set()) for n in names))
        used = set()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            used |= {label.strip() for label in group.split(",") if label.strip()}
        for selector in re.findall(r"\{([^}]*)\}", expr):
            used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
        assert used - TARGET_LABELS <= served, (expr, used - TARGET_LABELS - served)
        checked += 1
    assert checked, "the dashboard queries no bytewax_ series"


def test_bytewax_panels_legends_use_served_labels(bytewax_served):
    served = set().union(*(labels for name, labels in bytewax_served.items() if name.startswith("bytewax_")))
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            if "bytewax_" in target["expr"]:
                legend = set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", target.get("legendFormat", "")))
                assert legend <= served - {"le"}, (panel["title"], legend - served)


def test_dashboard_covers_the_operator_questions():
    text = " ".join(dashboard_queries())
    for name in (
        "paywatch_events_total",
        "paywatch_region_failure_ratio",
        "paywatch_alerts_total",
        "paywatch_dead_letters_total",
        "paywatch_event_time_lag_seconds",
        "paywatch_kafka_lag_records",
        "paywatch_kinesis_millis_behind_latest",
        "paywatch_sink_errors_total",
        "paywatch_sink_request_seconds_bucket",
        "bytewax_snapshot_duration_seconds_bucket",
    ):
        assert name in text, name
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_rules_cover_lagging_sink_failing_and_process_down():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {
        "PaywatchProcessDown",
        "PaywatchEventTimeLagging",
        "PaywatchKafkaLagging",
        "PaywatchKinesisLagging",
        "PaywatchSinkFailing",
    } <= set(rules)
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
