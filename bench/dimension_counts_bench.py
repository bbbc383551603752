"""What the contributor counts cost: the whole flow with and without ``explain_by``, in one run.

The per-dimension counting (operators/dimension_counts.py, called once per
chunk by the parse step) and the region windows' merging of those counts are
the only per-event cost that FAILURE_RATE contributors add. This runs the
whole dataflow in-process (file source -> every JSONL sink) on the same
events with ``rules.failure_rate.explain_by`` at its default
(device, merchant_id, currency) and empty, alternating the two, and reports
the ratio of their best CPU times (``time.process_time``: the machine is
shared, and CPU time moves least with other load), plus the parse step alone.

Usage: .venv/bin/python -m bench.dimension_counts_bench [--events 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent

from bytewax.testing import run_main  # noqa: E402

from config import load_settings  # noqa: E402
from dataflow import build_flow  # noqa: E402
from operators.parse import ChunkParser  # noqa: E402
from operators.records import RawChunk  # noqa: E402

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
DEVICES = ("mobile", "web", "pos", "tablet")
CURRENCIES = ("USD", "EUR", "GBP")
T0 = 1752087600


def generate(path: Path, n: int, per_second: int) -> list[bytes]:
    """``n`` events at ``per_second`` events per second of event time, 500 merchants."""
    rng = random.Random(7)
    lines = []
    for i in range(n):
        user = rng.randrange(50_000)
        ts = datetime.fromtimestamp(T0 + i / per_second, UTC).isoformat(timespec="milliseconds")
        merchant = rng.randrange(500)
        lines.append(
            orjson.dumps(
                {
                    "transaction_id": f"txn_{i:09d}",
                    "user_id": f"u{user}",
                    "timestamp": ts.replace("+00:00", "Z"),
                    "payment_status": "FAIL" if rng.random() < 0.01 else "SUCCESS",
                    "region": REGIONS[user % 4],
                    "amount": round(rng.uniform(5, 400), 2),
                    "currency": CURRENCIES[user % 3],
                    "merchant_id": f"m{merchant}",
                    "merchant_name": f"Merchant {merchant}",
                    "device": DEVICES[user % 4],
                }
            )
        )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def run_flow(path: Path, out: Path, explain_by: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    settings = load_settings(
        environ={},
        overrides={
            "source": {"type": "file", "path": str(path)},
            "sinks": {"jsonl": {"dir": str(out)}, "stdout": {"alerts": False, "metrics": False, "dead_letters": False}},
            "rules": {"failure_rate": {"explain_by": explain_by}},
        },
    )
    began = time.process_time()
    run_main(build_flow(settings))
    return time.process_time() - began


def run_parse(lines: list[bytes], explain_by: list[str]) -> float:
    settings = load_settings(environ={}, overrides={"rules": {"failure_rate": {"explain_by": explain_by}}})
    parser = ChunkParser(settings)
    chunks = [RawChunk("p0", 1, lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
    max_ts = None
    began = time.process_time()
    for chunk in chunks:
        max_ts, _ = parser.parse(max_ts, chunk)
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-second", type=int, default=2000, help="events per second of event time")
    args = parser.parse_args()
    default = ["device", "merchant_id", "currency"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        lines = generate(path, args.events, args.per_second)
        flow = {"with": [], "without": []}
        parse = {"with": [], "without": []}
        for _ in range(args.rounds):
            for name, fields in (("without", []), ("with", default)):
                flow[name].append(run_flow(path, Path(tmp) / "out", fields))
                parse[name].append(run_parse(lines, fields))
    for label, times in (("whole flow", flow), ("parse step", parse)):
        rounds = ", ".join(f"{w:.2f}/{wo:.2f}" for w, wo in zip(times["with"], times["without"], strict=True))
        print(f"{label}: CPU seconds per round (with/without): {rounds}")
        best_with, best_without = min(times["with"]), min(times["without"])
        print(
            f"{label}: {args.events / best_without:,.0f} events per CPU second without explain_by, "
            f"{args.events / best_with:,.0f} with; throughput ratio {best_without / best_with:.3f} "
            f"(cost {100 * (1 - best_without / best_with):.1f} %)"
        )


if __name__ == "__main__":
    main()
