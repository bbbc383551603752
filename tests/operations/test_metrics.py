"""The metrics endpoint: names, values, health, and several threads at once."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observability import metrics, readiness, registry, source_lag
from observability import server as metrics_server
from observability.sink_metrics import SinkSeries


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``{(sample_name, sorted label items): value}`` from one scrape."""
    status, text = _get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server():
    metrics_server.stop_server()
    port = metrics_server.start_server(0, host="127.0.0.1")
    yield port
    metrics_server.stop_server()


def test_off_when_port_is_null():
    assert metrics_server.start_server(None) is None


def test_second_start_reuses_the_running_server(server):
    assert metrics_server.start_server(0, host="127.0.0.1") == server


def test_health_and_readiness(server):
    readiness.reset()
    assert _get(server, "/healthz")[0] == 200
    assert _get(server, "/readyz")[0] == 503
    assert value(scrape(server), "paywatch_ready") == 0
    readiness.ReadinessSink().build("ready", 0, 1)
    assert _get(server, "/readyz")[0] == 200
    assert value(scrape(server), "paywatch_ready") == 1
    assert _get(server, "/nope")[0] == 404


def test_chunks_dead_letters_alerts_and_minutes(server):
    before = scrape(server)
    chunk = SimpleNamespace(
        part="file:/data/a.jsonl",
        n_transactions=7,
        n_late=2,
        watermark=time.time() - 70,
        dead_letters=[{"reason": "late"}, {"reason": "late"}, {"reason": "invalid_json"}],
    )
    metrics.record_parsed_chunk(chunk, lateness_seconds=10)
    metrics.record_alerts([{"type": "FAILURE_RATE", "state": "OPEN"}, {"type": "VELOCITY", "state": "FIRED"}])
    metrics.record_minutes(
        [
            {"region": "US-WEST", "count": 200, "failures": 10, "window_end": "2025-07-09T19:01:00Z"},
            {"region": "EU-WEST", "count": 0, "failures": 0, "window_end": "2025-07-09T19:01:00Z"},
        ]
    )
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("paywatch_events_total", source="file", outcome="valid") == 7
    assert delta("paywatch_events_total", source="file", outcome="invalid") == 1
    assert delta("paywatch_events_total", source="file", outcome="late") == 2
    assert delta("paywatch_dead_letters_total", reason="late") == 2
    assert delta("paywatch_dead_letters_total", reason="invalid_json") == 1
    assert delta("paywatch_alerts_total", type="FAILURE_RATE", state="OPEN") == 1
    assert delta("paywatch_window_results_total") == 2
    assert value(after, "paywatch_region_failure_ratio", region="US-WEST") == pytest.approx(0.05)
    assert value(after, "paywatch_region_failure_ratio", region="EU-WEST") == 0
    assert value(after, "paywatch_region_minute_events", region="US-WEST") == 200
    assert value(after, "paywatch_last_window_end_timestamp_seconds") == 1752087660
    # newest event = watermark + lateness = now - 60: the lag is about a minute.
    assert 59 <= value(after, "paywatch_event_time_lag_seconds", source="file") < 70


def test_source_lag_is_read_at_scrape_time(server):
    source_lag.set_lag("kafka", "payments/3", 42)
    source_lag.set_lag("kinesis", "shardId-000000000001", 1500)
    try:
        samples = scrape(server)
        assert value(samples, "paywatch_kafka_lag_records", partition="payments/3") == 42
        assert value(samples, "paywatch_kinesis_millis_behind_latest", shard="shardId-000000000001") == 1500
    finally:
        source_lag.clear_lag("kafka", "payments/3")
        source_lag.clear_lag("kinesis", "shardId-000000000001")


def test_sink_requests_errors_and_latency(server):
    before = scrape(server)
    series = SinkSeries("dynamodb", "dynamodb-0")
    series.request(0.002, delivered=25)
    series.request(0.5, delivered=0)
    series.error(transient=True)
    series.error(transient=False)
    series.buffered.set(7)
    series.dead_letters("dynamodb_rejected", 2)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("paywatch_sink_requests_total", sink="dynamodb") == 2
    assert delta("paywatch_sink_records_total", sink="dynamodb") == 25
    assert delta("paywatch_sink_retries_total", sink="dynamodb") == 1
    assert delta("paywatch_sink_errors_total", sink="dynamodb", kind="transient") == 1
    assert delta("paywatch_sink_errors_total", sink="dynamodb", kind="permanent") == 1
    assert delta("paywatch_sink_request_seconds_count", sink="dynamodb") == 2
    assert delta("paywatch_sink_request_seconds_sum", sink="dynamodb") == pytest.approx(0.502)
    assert delta("paywatch_sink_request_seconds_bucket", sink="dynamodb", le="0.005") == 1
    assert value(after, "paywatch_sink_buffered", partition="dynamodb-0") == 7
    assert delta("paywatch_dead_letters_total", reason="dynamodb_rejected") == 2


def test_worker_threads_share_the_process_counters(server):
    before = value(scrape(server), "paywatch_events_total", source="kafka", outcome="valid")

    def work() -> None:
        for _ in range(1000):
            metrics.record_chunk("kafka", 3, 0, 0, None)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = value(scrape(server), "paywatch_events_total", source="kafka", outcome="valid")
    assert after - before == 4 * 1000 * 3


def test_label_values_are_capped():
    guard = registry.LabelGuard(limit=2)
    assert [guard(v) for v in ("a", "b", "c", "a", None)] == ["a", "b", "other", "a", "other"]


def test_every_name_is_prefixed(server):
    names = {name for name, _labels in scrape(server)}
    ours = {n for n in names if not n.startswith(("process_", "python_", "python_gc_"))}
    assert ours and all(n.startswith("paywatch_") for n in ours)
