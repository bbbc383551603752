"""End to end: a failure spike through the real dataflow with every AWS sink on, against moto_server."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import orjson
from bytewax.testing import run_main

from dataflow import build_flow
from tests.aws_helpers import aws_settings, iso, metric_values, provision, recent_minute, scan, sqs_messages

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
    settings = aws_settings(moto.url, tmp_path, {
        "source": {"type": "file", "path": str(path), "batch_size": 500},
        "rules": {"failure_rate": {"threshold_percent": 2.0, "min_events": 100}},
    })
    provision(settings)

    run_main(build_flow(settings))

    # CloudWatch: US-WEST's spike minute above 2 %, every other region/minute below.
    window = (start, start + timedelta(minutes=6))
    spike_ts = start + timedelta(minutes=SPIKE_MINUTE)
    for region in REGIONS:
        rates = {ts.replace(tzinfo=None): v for ts, v in metric_values(settings, "PaymentFailureRate", region,
                                                                        *window).items()}
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
    kinds = Counter((e["MessageAttributes"]["alert_type"]["Value"], e["MessageAttributes"]["state"]["Value"],
                     e["MessageAttributes"].get("region", {}).get("Value")) for e in envelopes)
    assert kinds[("FAILURE_RATE", "OPEN", "US-WEST")] == 1
    assert kinds[("FAILURE_RATE", "RESOLVED", "US-WEST")] == 1
    assert not any(k[0] == "FAILURE_RATE" and k[2] != "US-WEST" for k in kinds)
    assert kinds[("FRAUD_SUSPECTED", "OPEN", "EU-WEST")] == 2
    opened = next(e for e in envelopes if e["MessageAttributes"]["state"]["Value"] == "OPEN"
                  and e["MessageAttributes"]["alert_type"]["Value"] == "FAILURE_RATE")
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
