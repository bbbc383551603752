"""AWS API calls per million events, and events/s, with every AWS sink on against moto_server.

Usage::

    .venv/bin/python -m bench.aws_sinks_bench [--events 200000] [--event-rate 1000] [--transactions flagged]

Runs the real dataflow (file source, JSONL written here) once with the AWS
sinks off and once with CloudWatch, SNS and DynamoDB on against a fresh
moto_server, counts every HTTP request each sink's client sends (botocore
``provide-client-params`` hook; botocore retries are off for sink clients, so
one call is one request), and prints a JSON summary plus the per-event Lambda
design of the product brief for comparison.

The input: four regions, ``--event-rate`` events per second of event time,
1 % failures except a 10 % spike in US-WEST for one minute in every ten,
and 0.5 % fraud-looking payments (flagged). Both runs also write the JSONL
outputs; the time of a run includes the sinks' drain at the end (close
waits until AWS acknowledged everything).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")


def write_events(path: Path, events: int, event_rate: float, start: datetime) -> None:
    """The benchmark input as JSONL (see the module docstring)."""
    with open(path, "wb") as fh:
        buf = []
        t0 = start.timestamp()
        for n in range(events):
            ts = t0 + n / event_rate
            region = REGIONS[n % 4]
            minute = int((ts - t0) // 60)
            every = 10 if (region == "US-WEST" and minute % 10 == 3) else 100
            fraud = n % 200 == 7
            event = {
                "transaction_id": f"t{n}",
                "timestamp": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "payment_status": "FAIL" if (n // 4) % every == every - 1 else "SUCCESS",
                "region": region,
                "user_id": f"{region}-u{(n // 4) % 20000}",
                "amount": 9000.0 if fraud else 10.0 + n % 90,
                "currency": "JPY" if fraud else "USD",
                "merchant_name": "Fake store" if fraud else "Shop",
            }
            buf.append(orjson.dumps(event))
            if len(buf) == 10_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            fh.write(b"\n".join(buf) + b"\n")


def _count_requests(counts: Counter, units: Counter) -> None:
    """Wrap the sinks' client factory: count calls and the records they carry, per API (and table)."""
    import connectors.aws.client as aws_client_module

    original = aws_client_module.aws_client

    def counting(service: str, settings: Any, *, sink: bool = True) -> Any:
        client = original(service, settings, sink=sink)
        if sink:

            def hook(**kwargs: Any) -> None:
                name = f"{service}.{kwargs['model'].name}"
                params = kwargs.get("params") or {}
                if "RequestItems" in params:
                    for table, requests in params["RequestItems"].items():
                        counts[f"{name}[{table}]"] += 1
                        units[f"{name}[{table}]"] += len(requests)
                    return
                counts[name] += 1
                units[name] += len(params.get("MetricData") or params.get("PublishBatchRequestEntries") or [1])

            client.meta.events.register("provide-client-params", hook)
        return client

    aws_client_module.aws_client = counting


def run_flow(settings: Any) -> float:
    from bytewax.testing import run_main

    from dataflow import build_flow

    started = time.perf_counter()
    run_main(build_flow(settings))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--event-rate", type=float, default=1000.0, help="events per second of event time")
    parser.add_argument("--transactions", choices=["all", "flagged", "none"], default="flagged")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from cli.provision import Provisioner
    from config import load_settings
    from tests.support.servers import start_moto

    # moto accepts any credentials; never let a benchmark reach a real account.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)

    tmp = Path(tempfile.mkdtemp(prefix="paywatch-aws-bench-"))
    span = timedelta(seconds=args.events / args.event_rate)
    start = (datetime.now(UTC) - span - timedelta(minutes=10)).replace(second=0, microsecond=0)
    events_path = tmp / "events.jsonl"
    write_events(events_path, args.events, args.event_rate, start)

    base = {
        "source": {"type": "file", "path": str(events_path), "batch_size": 1000},
        "sinks": {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}},
    }
    # Both runs write the JSONL outputs too (the baseline needs a sink; the AWS sinks run alongside it).
    off = load_settings(environ={}, overrides={**base, "sinks": {**base["sinks"], "jsonl": {"dir": str(tmp / "off")}}})
    seconds_off = run_flow(off)

    moto = start_moto(tmp)
    counts: Counter = Counter()
    units: Counter = Counter()
    try:
        on = load_settings(
            environ={},
            overrides={
                **base,
                "aws": {"endpoint_url": moto.url},
                "sinks": {
                    **base["sinks"],
                    "jsonl": {"dir": str(tmp / "on")},
                    "dead_letter": {"path": str(tmp / "sink_dead_letter.jsonl")},
                    "cloudwatch": {"enabled": True},
                    "sns": {"enabled": True},
                    "dynamodb": {"enabled": True, "transactions": args.transactions},
                },
            },
        )
        Provisioner(on, wait_seconds=10).up()
        _count_requests(counts, units)
        seconds_on = run_flow(on)
    finally:
        moto.stop()

    per_million = 1_000_000 / args.events
    minutes = args.events / args.event_rate / 60
    summary = {
        "events": args.events,
        "event_rate_per_event_second": args.event_rate,
        "event_time_minutes": round(minutes, 1),
        "transactions_mode": args.transactions,
        "events_per_second_jsonl_only": round(args.events / seconds_off),
        "events_per_second_aws_sinks_on_moto": round(args.events / seconds_on),
        "api_requests": dict(sorted(counts.items())),
        "records_per_request": {k: round(units[k] / v, 1) for k, v in sorted(counts.items())},
        "api_requests_per_million_events": {k: round(v * per_million, 1) for k, v in sorted(counts.items())},
        "lambda_design_per_million_events": {
            "kinesis_lambda_invocations(batch 100)": 10_000,
            "cloudwatch.PutMetricData(one per invocation)": 10_000,
            "dynamodb.PutItem(one per transaction)": 1_000_000,
            "sns.Publish(one per alert evaluation above threshold)": "per invocation while above 2 %",
        },
        "dead_letters_file": str(tmp / "sink_dead_letter.jsonl"),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
