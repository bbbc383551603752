"""End to end: a failure spike through the real dataflow with every AWS sink on, against moto_server."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Optional

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from config.settings import Settings
from connectors.sinks.delivery import BufferedAwsSink
from connectors.sinks.outputs import build_outputs
from connectors.sources import build_source
from tests.support.aws_helpers import (
    aws_settings,
    delivery_stat,
    iso,
    metric_values,
    provision,
    recent_minute,
    scan,
    sqs_messages,
    wait_until,
)
from tests.support.flow import run_in_process
from tests.support.tcp_proxy import TcpProxy

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
PER_MINUTE = 240  # per region: well above the 100 events per 60 s window the test sets
SPIKE_MINUTE = 2


def spike_events(start, minutes=5):
    """Steady traffic with 1 % failures; US-WEST fails 10 % in minute SPIKE_MINUTE; two fraud-looking payments."""
    lines = []
    for minute in range(minutes):
        for i in range(PER_MINUTE):
            second = start + timedelta(minutes=minute, seconds=i * 60 / PER_MINUTE)
            for region in REGIONS:
                every = 10 if (region == "US-WEST" and minute == SPIKE_MINUTE) else 100
                n = minute * PER_MINUTE + i
                event = {
                    "transaction_id": f"{region}-{n}",
                    "timestamp": iso(second),
                    "payment_status": "FAIL" if i % every == every - 1 else "SUCCESS",
                    "region": region,
                    "user_id": f"{region}-u{n % 600}",
                    "amount": 20.0 + (n % 50),
                    "currency": "USD",
                    "merchant_name": "Shop",
                }
                if region == "EU-WEST" and n in (30, 700):
                    event.update(amount=9000.0, currency="JPY", merchant_name="Fake store")
                lines.append(orjson.dumps(event))
    return b"\n".join(lines) + b"\n"


def test_failure_spike_reaches_cloudwatch_sns_and_dynamodb(moto, tmp_path):
    start = recent_minute(600)
    path = tmp_path / "events.jsonl"
    path.write_bytes(spike_events(start))
    # The rule of the issue (> 2 % with at least 100 events per 60 s window), whatever the default.
    settings = aws_settings(
        moto.url,
        tmp_path,
        {
            "source": {"type": "file", "path": str(path), "batch_size": 500},
            "rules": {"failure_rate": {"threshold_percent": 2.0, "min_events": 100}},
        },
    )
    provision(settings)

    run_in_process(settings)

    # CloudWatch: US-WEST's spike minute above 2 %, every other region/minute below.
    window = (start, start + timedelta(minutes=6))
    spike_ts = start + timedelta(minutes=SPIKE_MINUTE)
    for region in REGIONS:
        rates = {
            ts.replace(tzinfo=None): v
            for ts, v in metric_values(settings, "PaymentFailureRate", region, *window).items()
        }
        assert len(rates) == 5, (region, rates)
        for ts, value in rates.items():
            if region == "US-WEST" and ts == spike_ts.replace(tzinfo=None):
                assert value > 2, (region, ts, value)
            else:
                assert value < 2, (region, ts, value)
    counts = metric_values(settings, "TransactionCount", "EU-WEST", *window, stat="Sum")
    assert sorted(counts.values()) == [PER_MINUTE] * 5

    # SNS: exactly one OPEN and one RESOLVED failure-rate message for US-WEST, with attributes.
    envelopes = sqs_messages(settings, expect=4)
    kinds = Counter(
        (
            e["MessageAttributes"]["alert_type"]["Value"],
            e["MessageAttributes"]["state"]["Value"],
            e["MessageAttributes"].get("region", {}).get("Value"),
        )
        for e in envelopes
    )
    assert kinds[("FAILURE_RATE", "OPEN", "US-WEST")] == 1
    assert kinds[("FAILURE_RATE", "RESOLVED", "US-WEST")] == 1
    assert not any(k[0] == "FAILURE_RATE" and k[2] != "US-WEST" for k in kinds)
    assert kinds[("FRAUD_SUSPECTED", "OPEN", "EU-WEST")] == 2
    opened = next(
        e
        for e in envelopes
        if e["MessageAttributes"]["state"]["Value"] == "OPEN"
        and e["MessageAttributes"]["alert_type"]["Value"] == "FAILURE_RATE"
    )
    assert opened["MessageAttributes"]["severity"]["Value"] == "CRITICAL"
    body = orjson.loads(opened["Message"])
    assert body["type"] == "FAILURE_RATE" and body["value"] > 2

    # DynamoDB: the alerts, 5 minutes x 4 regions of aggregates, the two flagged transactions, typed.
    ddb = settings.sinks.dynamodb
    alerts = {a["alert_id"]: a for a in scan(settings, ddb.alerts_table)}
    assert {a["alert_id"] for a in (orjson.loads(e["Message"]) for e in envelopes)} == set(alerts)
    stored_open = alerts[body["alert_id"]]
    assert isinstance(stored_open["value"], Decimal) and stored_open["value"] > 2
    aggregates = scan(settings, ddb.aggregates_table)
    assert len(aggregates) == 20
    spike = next(a for a in aggregates if a["region"] == "US-WEST" and a["window_start"] == iso(spike_ts))
    assert spike["count"] == PER_MINUTE and spike["failures"] == PER_MINUTE // 10
    assert isinstance(spike["failure_rate"], Decimal) and spike["failure_rate"] == Decimal("10.0")
    txns = scan(settings, ddb.transactions_table)
    assert sorted(t["transaction_id"] for t in txns) == ["EU-WEST-30", "EU-WEST-700"]
    assert all(t["fraud_status"] == "FRAUD_SUSPECTED" and t["amount"] == Decimal("9000") for t in txns)


# -- outage through the real dataflow ----------------------------------------------


class _GatedPartition(StatefulSourcePartition):
    def __init__(self, inner: StatefulSourcePartition, gate: GatedSource) -> None:
        self._inner = inner
        self._gate = gate

    def next_batch(self) -> list:
        gate = self._gate
        if gate.emitted >= gate.open_batches and not gate.opened.is_set():
            gate.paused.set()
            return []
        gate.emitted += 1
        try:
            return self._inner.next_batch()
        except StopIteration:
            gate.exhausted.set()
            raise

    def next_awake(self) -> Optional[datetime]:
        if self._gate.paused.is_set() and not self._gate.opened.is_set():
            return datetime.now(UTC) + timedelta(milliseconds=20)
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class GatedSource(FixedPartitionedSource):
    """The configured (file) source, holding back everything after ``open_batches`` batches until ``opened``.

    The flow keeps running while it waits (the partition answers with empty batches), so a test can
    cut the network between the first deliveries and the rest of the input, deterministically.
    """

    def __init__(self, inner: FixedPartitionedSource, open_batches: int) -> None:
        self._inner = inner
        self.open_batches = open_batches
        self.emitted = 0
        self.paused = threading.Event()
        self.opened = threading.Event()
        self.exhausted = threading.Event()

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _GatedPartition:
        return _GatedPartition(self._inner.build_part(step_id, for_part, resume_state), self)


def _outage_settings(endpoint: str, tmp_path, path) -> Settings:
    return aws_settings(
        endpoint,
        tmp_path,
        {
            # Fixed 500-line chunks: the gate below counts batches ("3 of 10").
            "source": {
                "type": "file",
                "path": str(path),
                "batch_size": 500,
                "max_batch_size": 500,
                "idle_partition_seconds": 600,
            },
            "rules": {"failure_rate": {"threshold_percent": 2.0, "min_events": 100}},
        },
    )


def _delivered(settings: Settings, moto_url: str, window: tuple[datetime, datetime]) -> dict[str, Any]:
    """What one run left in DynamoDB, SNS (through the subscribed queue) and CloudWatch, keyed for comparison."""
    direct = settings.model_copy(update={"aws": settings.aws.model_copy(update={"endpoint_url": moto_url})})
    ddb = settings.sinks.dynamodb

    def without(item: dict, *fields: str) -> dict:
        return {k: v for k, v in item.items() if k not in fields}

    alerts = {a["alert_id"]: without(a, "expires_at") for a in scan(direct, ddb.alerts_table)}
    aggregates = {
        (a["region"], a["window_start"]): without(a, "expires_at") for a in scan(direct, ddb.aggregates_table)
    }
    transactions = {
        t["transaction_id"]: without(t, "expires_at", "processed_at") for t in scan(direct, ddb.transactions_table)
    }
    envelopes = sqs_messages(direct, expect=len(alerts))
    messages: dict[str, dict] = {}
    for envelope in envelopes:
        body = orjson.loads(envelope["Message"])
        assert messages.setdefault(body["alert_id"], body) == body  # a duplicate is the same alert
    # Per region only: moto answers the dimensionless query with every series mixed (see docs/sinks.md).
    rates = {
        (region, ts): value
        for region in REGIONS
        for ts, value in metric_values(direct, "PaymentFailureRate", region, *window).items()
    }
    return {
        "alerts": alerts,
        "aggregates": aggregates,
        "transactions": transactions,
        "sns": messages,
        "sns_count": len(envelopes),
        "rates": rates,
    }


def test_outage_mid_run_through_the_real_dataflow_loses_nothing(moto, tmp_path):
    """Cut the network to AWS after the flow's first deliveries, restore it later: same results as without."""
    start = recent_minute(900)
    window = (start, start + timedelta(minutes=6))
    path = tmp_path / "events.jsonl"
    path.write_bytes(spike_events(start))

    # Reference: the same input without an outage, into its own tables, topic and queue.
    (tmp_path / "reference").mkdir()
    reference = _outage_settings(moto.url, tmp_path / "reference", path)
    provision(reference)
    run_in_process(reference)
    expected = _delivered(reference, moto.url, window)
    assert len(expected["aggregates"]) == 20
    kinds = Counter((a["type"], a["state"], a["region"]) for a in expected["alerts"].values())
    assert kinds[("FAILURE_RATE", "OPEN", "US-WEST")] == kinds[("FAILURE_RATE", "RESOLVED", "US-WEST")] == 1
    assert set(expected["sns"]) == set(expected["alerts"])
    assert sorted(expected["transactions"]) == ["EU-WEST-30", "EU-WEST-700"]

    # The same input through a proxy that is cut after the first deliveries and restored later.
    (tmp_path / "outage").mkdir()
    proxy = TcpProxy(moto.port).start()
    try:
        settings = _outage_settings(proxy.url, tmp_path / "outage", path)
        provision(settings)
        outputs = build_outputs(settings)
        sinks = [s for s in outputs.alerts + outputs.metrics + outputs.transactions if isinstance(s, BufferedAwsSink)]
        assert sorted(s.name for s in sinks) == [
            "cloudwatch",
            "dynamodb-aggregates",
            "dynamodb-alerts",
            "dynamodb-transactions",
            "sns",
        ]
        # 3 of 10 batches (up to 01:33 event time): minute 0 closes, EU-WEST-30 is flagged; the spike comes later.
        gated = GatedSource(build_source(settings), open_batches=3)
        finished = threading.Event()
        seen: dict[str, Any] = {}
        problems: list[BaseException] = []

        def control() -> None:
            try:
                wait_until(
                    "the source paused and every sink delivered its first records",
                    lambda: (
                        gated.paused.is_set()
                        and all(s.deliveries for s in sinks)
                        and all(delivery_stat(s, "delivered") > 0 for s in sinks)
                        and all(not d.snapshot() for s in sinks for d in s.deliveries)
                    ),
                )
                seen["before"] = {s.name: delivery_stat(s, "delivered") for s in sinks}
                proxy.stop()
                seen["cut"] = True
                gated.opened.set()
                # The worker is not stalled by the outage: it reads to the end of the input meanwhile.
                wait_until(
                    "every sink retried through the outage and the source read to the end",
                    lambda: gated.exhausted.is_set() and all(delivery_stat(s, "transient_errors") >= 3 for s in sinks),
                )
                seen["running_at_restore"] = not finished.is_set()
                seen["buffered_at_restore"] = {s.name: sum(len(d.snapshot()) for d in s.deliveries) for s in sinks}
            except BaseException as exc:  # noqa: BLE001 - re-raised on the test thread
                problems.append(exc)
            finally:
                gated.opened.set()
                if seen.get("cut"):
                    proxy.start()

        controller = threading.Thread(target=control, daemon=True)
        controller.start()
        try:
            run_in_process(settings, source=gated, outputs=outputs)
        finally:
            finished.set()
            controller.join(60)
        if problems:
            raise problems[0]

        # The outage hit every sink in mid-run, the flow kept running, and nothing was given up.
        assert seen["running_at_restore"]
        assert all(seen["buffered_at_restore"].values()), seen  # every sink held undelivered records
        for sink in sinks:
            assert delivery_stat(sink, "transient_errors") >= 3, sink.name
            assert delivery_stat(sink, "delivered") > seen["before"][sink.name], sink.name
            assert delivery_stat(sink, "dead_lettered") == 0, sink.name
            assert delivery_stat(sink, "permanent_errors") == 0, sink.name
        assert not (tmp_path / "outage" / "sink_dead_letter.jsonl").exists()

        got = _delivered(settings, moto.url, window)
        assert got["alerts"] == expected["alerts"]
        assert got["aggregates"] == expected["aggregates"]
        assert got["transactions"] == expected["transactions"]
        assert got["sns"] == expected["sns"]  # by alert_id; a standard topic may deliver a resent alert twice
        assert got["sns_count"] >= len(expected["sns"])
        assert got["rates"] == expected["rates"]  # Average per minute: unchanged by a resent datum
    finally:
        proxy.stop()
