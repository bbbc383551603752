"""Live rules: layering, validation, restart-only keys, the loader's reloads and the metrics."""

from __future__ import annotations

import logging
import threading
import time

import orjson
import pytest

from config import load_settings
from config.live_rules import RulesRefused, check_live_change, parse_rules_document, rules_version
from connectors.reference.loader import ReferenceLoader, ReferenceStartError
from observability import reference_metrics
from observability.registry import REGISTRY
from operators.parse import ChunkParser
from tests.support.events import T0, chunk, event

BASE = load_settings(environ={}).rules


def failures() -> float:
    return REGISTRY.get_sample_value("paywatch_rules_reload_failures_total") or 0.0


def info_versions() -> set[str]:
    return {
        sample.labels["version"]
        for metric in REGISTRY.collect()
        if metric.name == "paywatch_rules_info"
        for sample in metric.samples
        if sample.value == 1
    }


def test_document_is_layered_key_by_key_over_the_settings_rules():
    rules = parse_rules_document("rules:\n  failure_rate: {threshold_percent: 0.5}\n", BASE)
    assert rules.failure_rate.threshold_percent == 0.5
    assert rules.failure_rate.min_events == BASE.failure_rate.min_events
    assert rules.fraud == BASE.fraud
    assert parse_rules_document("", BASE) == BASE


def test_version_is_a_short_hash_of_the_rules_in_force():
    lowered = parse_rules_document("rules: {fraud: {suspected_score: 60}}", BASE)
    assert rules_version(BASE) == rules_version(parse_rules_document("rules: {}", BASE))
    assert rules_version(lowered) != rules_version(BASE)
    assert len(rules_version(BASE)) == 12


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("rules: {failure_rate: {threshold_percent: -1}}", "rules.failure_rate.threshold_percent"),
        ("rules: {fraud: {suspected_scor: 60}}", "rules.fraud.suspected_scor"),
        ("rules: {fraud: {review_score: 90}}", "rules.fraud"),
        ("sinks: {}", "sinks"),
        ("rules: [1, 2]", "rules"),
        ("rules: {a: [", "rules_file"),
    ],
)
def test_invalid_documents_are_refused_naming_the_key(text, key):
    with pytest.raises(RulesRefused) as info:
        parse_rules_document(text, BASE)
    assert info.value.key == key


def test_changing_a_window_length_needs_a_restart_but_restating_it_does_not():
    same = parse_rules_document("rules: {failure_rate: {window_seconds: 60, threshold_percent: 1}}", BASE)
    check_live_change(BASE, same)
    longer = parse_rules_document("rules: {failure_rate: {window_seconds: 120}}", BASE)
    with pytest.raises(RulesRefused, match="restart needed") as info:
        check_live_change(BASE, longer)
    assert info.value.key == "rules.failure_rate.window_seconds"


def _loader(tmp_path, text: str, **overrides) -> tuple[ReferenceLoader, object]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    settings = load_settings(environ={}, overrides={"rules_file": str(path), **overrides})
    loader = ReferenceLoader(settings)
    loader.load_initial()
    return loader, path


def test_loader_applies_a_valid_rewrite_and_refuses_invalid_ones_once(tmp_path, caplog):
    loader, path = _loader(tmp_path, "rules: {failure_rate: {threshold_percent: 5}}")
    first = loader.holder.current
    assert first.rules.failure_rate.threshold_percent == 5
    assert info_versions() == {first.version}

    before = failures()
    path.write_text("rules: {failure_rate: {threshold_percent: 500}}")
    with caplog.at_level(logging.WARNING, logger="connectors.reference.loader"):
        assert not loader.refresh(force=True)
        assert not loader.refresh(force=True)  # the same refused text: counted and logged once
    assert loader.holder.current is first
    assert failures() == before + 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "rules.failure_rate.threshold_percent" in line and "less than or equal to 100" in line

    caplog.clear()
    path.write_text("rules: {failure_rate: {window_seconds: 120}}")
    with caplog.at_level(logging.WARNING, logger="connectors.reference.loader"):
        assert not loader.refresh(force=True)
    assert failures() == before + 2
    assert "restart needed" in caplog.records[0].getMessage()
    assert loader.holder.current is first

    path.write_text("rules: {failure_rate: {threshold_percent: 0.5}}")
    assert loader.refresh(force=True)
    now = loader.holder.current
    assert now.rules.failure_rate.threshold_percent == 0.5
    assert now.version != first.version
    assert info_versions() == {now.version}


def test_an_unreadable_rules_file_keeps_the_rules_in_force(tmp_path):
    loader, path = _loader(tmp_path, "rules: {velocity: {max_count: 3}}")
    first = loader.holder.current
    before = failures()
    path.unlink()
    assert not loader.refresh(force=True)
    assert loader.holder.current is first
    assert failures() == before + 1


def test_a_file_change_is_picked_up_without_waiting_for_the_refresh_interval(tmp_path):
    loader, path = _loader(tmp_path, "rules: {}", reference={"merchants": {"refresh_seconds": 3600}})
    path.write_text("rules: {fraud: {currency_points: 25}}")
    assert loader.refresh()  # not forced, interval not over: the stat changed
    assert loader.holder.current.rules.fraud.currency_points == 25


def test_an_invalid_rules_file_stops_the_start(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules: {fraud: {currencies: [DOLLARS]}}")
    settings = load_settings(environ={}, overrides={"rules_file": str(path)})
    with pytest.raises(ReferenceStartError, match=r"rules\.fraud\.currencies"):
        ReferenceLoader(settings).load_initial()
    missing = load_settings(environ={}, overrides={"rules_file": str(tmp_path / "absent.yaml")})
    with pytest.raises(ReferenceStartError, match="absent.yaml"):
        ReferenceLoader(missing).load_initial()


def test_rules_file_setting_is_checked_at_start():
    from config import SettingsError

    with pytest.raises(SettingsError, match="rules_file"):
        load_settings(environ={}, overrides={"rules_file": "http://example.com/rules.yaml"})


def test_parser_takes_new_fraud_rules_at_the_next_chunk(tmp_path):
    loader, path = _loader(tmp_path, "rules: {}")
    settings = load_settings(environ={})
    parser = ChunkParser(settings, reference=loader.holder)
    ev = event("t1", T0, amount=6000.0)  # high amount: +30 -> REVIEW_REQUIRED
    _, out = parser.parse(None, chunk([ev]))
    [record] = [orjson.loads(x) for x in out.transactions.splitlines()]
    assert (record["fraud_status"], record["rules_version"]) == ("REVIEW_REQUIRED", loader.holder.current.version)

    path.write_text("rules: {fraud: {high_amount_points: 55}}")
    assert loader.refresh(force=True)
    _, out = parser.parse(None, chunk([event("t2", T0 + 1, amount=6000.0)]))
    [record] = [orjson.loads(x) for x in out.transactions.splitlines()]
    assert record["fraud_status"] == "FRAUD_SUSPECTED"
    assert record["rules_version"] == loader.holder.current.version
    [alert] = out.alerts
    assert alert["rules_version"] == loader.holder.current.version
    assert reference_metrics.RULES_INFO.labels(version=loader.holder.current.version)._value.get() == 1


@pytest.mark.integration
def test_rules_from_an_s3_object_reload_when_the_object_changes(moto):
    import uuid

    import boto3

    bucket = f"rules-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto.url)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="paywatch/rules.yaml", Body=b"rules: {velocity: {max_count: 4}}")
    settings = load_settings(
        environ={},
        overrides={"rules_file": f"s3://{bucket}/paywatch/rules.yaml", "aws": {"endpoint_url": moto.url}},
    )
    loader = ReferenceLoader(settings)
    assert loader.load_initial().current.rules.velocity.max_count == 4
    s3.put_object(Bucket=bucket, Key="paywatch/rules.yaml", Body=b"rules: {velocity: {max_count: 7}}")
    assert loader.refresh(force=True)
    assert loader.holder.current.rules.velocity.max_count == 7
    before = failures()
    s3.delete_object(Bucket=bucket, Key="paywatch/rules.yaml")
    assert not loader.refresh(force=True)  # unreadable: the rules in force stay
    assert loader.holder.current.rules.velocity.max_count == 7 and failures() == before + 1


def test_user_rules_and_region_rules_take_new_thresholds_at_the_next_batch():
    from operators.records import UserColumns
    from operators.reference.live import LiveReference, ReferenceHolder
    from operators.steps import _RegionWindowsLogic, _UserRiskLogic
    from operators.users.user_risk import UserEvents

    settings = load_settings(environ={}, overrides={"users": {"order_lateness_seconds": 0}})
    holder = ReferenceHolder(LiveReference.of(settings.rules))
    users = _UserRiskLogic(settings, holder, None)
    burst = [("u1", T0 + i, 10.0, "US-WEST", f"t{i}") for i in range(5)]  # 5 payments: under max_count 10
    alerts, _ = users.on_batch([UserEvents("p", 1, T0 + 100, False, False, UserColumns.of_rows(burst))])
    assert alerts == []
    lowered = parse_rules_document("rules: {velocity: {max_count: 5}}", settings.rules)
    holder.publish(LiveReference.of(lowered))
    more = [("u1", T0 + 6, 10.0, "US-WEST", "t6")]
    alerts, _ = users.on_batch([UserEvents("p", 1, T0 + 100, False, False, UserColumns.of_rows(more))])
    [alert] = alerts
    assert alert["type"] == "VELOCITY" and alert["threshold"] == 5.0
    assert alert["rules_version"] == holder.current.version

    regions = _RegionWindowsLogic(settings, holder, None)
    assert regions.windows.rule.threshold_percent == settings.rules.failure_rate.threshold_percent
    holder.publish(LiveReference.of(parse_rules_document("rules: {failure_rate: {threshold_percent: 9}}", lowered)))
    regions.on_batch([])
    assert regions.windows.rule.threshold_percent == 9


def test_a_rules_edit_takes_effect_while_a_merchant_table_read_is_under_way(tmp_path):
    """The rules and the merchant table refresh on threads of their own: a million-item table
    takes tens of seconds to read, and a rules edit must not wait for it."""
    merchants = tmp_path / "merchants.jsonl"
    merchants.write_bytes(orjson.dumps({"merchant_id": "m1", "active": True}) + b"\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: {}")
    settings = load_settings(
        environ={},
        overrides={"rules_file": str(rules), "reference": {"merchants": {"path": str(merchants)}}},
    )
    loader = ReferenceLoader(settings, merchants_in_child=False)
    loader.load_initial()
    first_table = loader.holder.current.merchants
    reading, release = threading.Event(), threading.Event()
    read_merchants = loader._read_merchants

    def slow_read():
        reading.set()
        release.wait(30)
        return read_merchants()

    loader._read_merchants = slow_read
    loader.start()
    try:
        merchants.write_bytes(orjson.dumps({"merchant_id": "m2", "active": True}) + b"\n")
        assert reading.wait(30)  # the table's thread is inside its read
        rules.write_text("rules: {fraud: {currency_points: 25}}")
        assert _eventually(lambda: loader.holder.current.rules.fraud.currency_points == 25)
        assert loader.holder.current.merchants is first_table  # the read is still under way
        release.set()
        assert _eventually(lambda: loader.holder.current.merchants is not first_table)
        assert loader.holder.current.rules.fraud.currency_points == 25  # the table's swap kept the new rules
    finally:
        release.set()
        loader.stop()


def _eventually(condition, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
