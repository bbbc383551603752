"""Merchant reference data: the cost of a 1,000,000-merchant table, as ratios measured in one run.

Measures, in one process:
1. the table's load (= refresh) time from JSONL and from CSV, and its memory
   (tracemalloc: bytes the table keeps; RSS growth of the process);
2. the parse step alone (``ChunkParser.parse`` over 1,000-line chunks) with no
   table vs the table, rounds interleaved, best round of each (CPU time);
3. the whole flow in-process (file source -> every step -> JSONL transactions)
   with no table vs the table, rounds interleaved, best round of each (CPU time);
4. the parse step with a realistic table (2 % inactive merchants, limits of
   500/2,000/10,000): more transactions are flagged, which costs what flagged
   records cost, not the join.

Events name merchants drawn uniformly from the table (2 % unknown ids), so the
lookups miss the CPU caches as a real table's would. In 1-3 every merchant is
active with a limit no event reaches, so both runs produce the same verdicts
and the difference is the join alone.

Usage: python -m bench.reference_bench [--merchants 1000000] [--events 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import orjson
from bytewax.testing import run_main

from config import load_settings
from connectors.reference.loader import ReferenceLoader
from connectors.reference.merchants import read_merchants
from dataflow import build_flow
from operators.parse import ChunkParser
from operators.records import RawChunk
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import MerchantTable

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
T0 = 1752087600
QUIET = {"alerts": False, "metrics": False, "dead_letters": False}


def write_merchants(jsonl: Path, csv: Path, n: int, realistic: bool) -> None:
    """The table; unless ``realistic``, every merchant is active with a limit no event reaches,
    so the verdicts (and the flagged records they produce) are those of the run without a table."""
    rng = random.Random(3)
    with open(jsonl, "wb") as fj, open(csv, "w") as fc:
        fc.write("merchant_id,name,active,max_transaction_amount\n")
        for i in range(n):
            active = rng.random() > 0.02 if realistic else True
            limit = rng.choice((None, 500.0, 2000.0, 10000.0)) if realistic else 10000.0
            name = f"Merchant {i}"
            fj.write(
                orjson.dumps({"merchant_id": f"m{i}", "name": name, "active": active, "max_transaction_amount": limit})
                + b"\n"
            )
            fc.write(f"m{i},{name},{'true' if active else 'false'},{'' if limit is None else limit}\n")


def write_events(path: Path, n: int, merchants: int) -> list[bytes]:
    rng = random.Random(7)
    lines = []
    for i in range(n):
        user = rng.randrange(50_000)
        ts = datetime.fromtimestamp(T0 + i / 2000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        merchant = f"m{rng.randrange(merchants)}" if rng.random() > 0.02 else f"x{i}"
        lines.append(
            orjson.dumps(
                {
                    "transaction_id": f"txn_{i:09d}",
                    "user_id": f"u{user}",
                    "timestamp": ts,
                    "payment_status": "FAIL" if rng.random() < 0.01 else "SUCCESS",
                    "region": REGIONS[user % 4],
                    "amount": round(rng.uniform(5, 900), 2),
                    "currency": "USD",
                    "merchant_id": merchant,
                    "device": "mobile",
                }
            )
        )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def measure_load(jsonl: Path, csv: Path) -> tuple[MerchantTable, dict]:
    settings = load_settings(environ={})
    out: dict = {}
    gc.collect()
    rss_before = rss_mb()
    tracemalloc.start()
    started = time.process_time()
    table = read_merchants(str(jsonl), settings)
    out["load_jsonl_s"] = time.process_time() - started
    out["table_bytes_tracemalloc"] = tracemalloc.get_traced_memory()[0]
    out["load_peak_bytes_tracemalloc"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    gc.collect()
    out["rss_growth_mb"] = rss_mb() - rss_before
    started = time.process_time()
    again = read_merchants(str(csv), settings)
    out["load_csv_s"] = time.process_time() - started
    assert len(again) == len(table)
    del again
    # Without tracemalloc's own overhead: the refresh time a running process sees.
    started = time.process_time()
    read_merchants(str(jsonl), settings)
    out["refresh_jsonl_s"] = time.process_time() - started
    out["merchants"] = len(table)
    return table, out


def parse_rate(parser: ChunkParser, chunks: list[RawChunk], n: int) -> float:
    started = time.process_time()
    max_ts = None
    for chunk in chunks:
        max_ts, _ = parser.parse(max_ts, chunk)
    return n / (time.process_time() - started)


def flow_rate(events: Path, out: Path, merchants: Path | None, n: int) -> float:
    overrides: dict = {
        "source": {"type": "file", "path": str(events), "batch_size": 1000},
        "sinks": {"jsonl": {"dir": str(out)}, "stdout": QUIET},
    }
    if merchants is not None:
        overrides["reference"] = {"merchants": {"path": str(merchants), "refresh_seconds": 3600}}
    settings = load_settings(environ={}, overrides=overrides)
    loader = ReferenceLoader(settings)
    loader.load_initial()  # not timed: the table is loaded before the first event
    flow = build_flow(settings, reference=loader)
    started = time.process_time()
    run_main(flow)
    elapsed = time.process_time() - started
    loader.stop()
    return n / elapsed


def report(what: str, none: list[float], table: list[float]) -> None:
    """Best of each, and the median of the per-round ratios (rounds ran back to back)."""
    ratios = sorted(t / n for n, t in zip(none, table, strict=True))
    print(
        f"{what}: none {max(none):,.0f}/s, 1M table {max(table):,.0f}/s, best/best {max(table) / max(none):.3f}, "
        f"per-round ratios {[round(r, 3) for r in ratios]}, median {ratios[len(ratios) // 2]:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merchants", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jsonl, csv, events_path = tmp / "merchants.jsonl", tmp / "merchants.csv", tmp / "events.jsonl"
        write_merchants(jsonl, csv, args.merchants, realistic=False)
        lines = write_events(events_path, args.events, args.merchants)
        table, load = measure_load(jsonl, csv)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in load.items()})

        settings = load_settings(environ={})
        chunks = [RawChunk("bench", 1, lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
        plain = ChunkParser(settings)
        joined = ChunkParser(settings, reference=ReferenceHolder(LiveReference.of(settings.rules, table)))
        parse_none, parse_table = [], []
        for _ in range(args.rounds):
            parse_none.append(parse_rate(plain, chunks, len(lines)))
            parse_table.append(parse_rate(joined, chunks, len(lines)))
        report("parse only", parse_none, parse_table)

        flow_none, flow_table = [], []
        for i in range(args.rounds):
            flow_none.append(flow_rate(events_path, tmp / f"out-none-{i}", None, len(lines)))
            flow_table.append(flow_rate(events_path, tmp / f"out-table-{i}", jsonl, len(lines)))
        report("whole flow", flow_none, flow_table)
        del table, joined
        write_merchants(jsonl, csv, args.merchants, realistic=True)
        realistic = read_merchants(str(jsonl), settings)
        mixed = ChunkParser(settings, reference=ReferenceHolder(LiveReference.of(settings.rules, realistic)))
        parse_mixed = [parse_rate(mixed, chunks, len(lines)) for _ in range(args.rounds)]
        print(
            f"parse only, realistic table (more flagged): {max(parse_mixed):,.0f}/s, "
            f"ratio {max(parse_mixed) / max(parse_none):.3f}"
        )
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB")


if __name__ == "__main__":
    main()
