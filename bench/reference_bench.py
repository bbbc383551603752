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

With ``--refresh-items N``, instead: how much the flow slows while a DynamoDB merchant table
of N items is refreshed, on the loader's thread (the old way) against in a child process
(the default). Serves the table on loopback, then in one process keeps the flow's hot step
busy (``ChunkParser.parse`` over 1,000-line chunks of ``--events`` events, judged against the
table in force, on the main thread) and records the events parsed per interval: ``--quiet``
seconds with no refresh; a forced refresh on a background thread, as the loader's thread does
it, read in this process (``merchants_in_child=False``) while the parse goes on; quiet again;
then the same with the read in a child process (``merchants_in_child=True``). Reports, per
mode, the refresh's wall time, the CPU its thread spent in the flow's process (holding the
GIL: the read and build on the thread; receiving, hashing and indexing the built table with a
child), and the parse rate during the refresh over the rate outside any refresh (wall time: a
thread holding the GIL stalls the parse in wall time, not CPU time). A third "mode", the
control, runs a child at the same niceness that only burns CPU for ``--control-seconds``: what
the parse loses to it is what any busy process beside the flow costs on the machine.

The server: ``--server pages`` (the default) answers Scan with pages of 8,000 items prepared
before the run, in DynamoDB's JSON wire format, at the lowest priority (it stands for
DynamoDB, whose CPU is not on the flow's machine); ``--server moto`` fills a moto_server table
as the tests do, but moto spends seconds of CPU per 10,000 items it scans (6 s for a
14,642-item page here), which competes with the flow for the 2 cores and makes a table of
more than tens of thousands of items impractical. botocore parses either answer alike.

Usage: python -m bench.reference_bench --refresh-items 1000000 [--events 100000] [--quiet 4] [--rounds 1]
       [--server pages|moto]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import orjson
from bytewax.testing import run_main

from config import load_settings
from connectors.reference.child import CHILD_NICENESS
from connectors.reference.loader import ReferenceLoader
from connectors.reference.merchants import read_merchants
from dataflow import build_flow
from operators.parse import ChunkParser
from operators.records import RawChunk
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import MerchantTable
from tests.support.servers import start_moto

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


REFRESH_TABLE = "merchants"
PAGE = 8_000


def _item(i: int) -> dict:
    return {
        "merchant_id": {"S": f"m{i}"},
        "name": {"S": f"Merchant {i}"},
        "active": {"BOOL": True},
        "max_transaction_amount": {"N": "10000"},
    }


def _serve_pages(listener: socket.socket, items: int) -> None:
    """Answer Scan with prepared pages: the page after ExclusiveStartKey ``m<i>`` starts at i + 1.

    At the lowest priority: it stands for DynamoDB, whose CPU is not on the flow's machine."""
    os.nice(19)
    pages: dict[int, bytes] = {}
    for low in range(0, items, PAGE):
        high = min(low + PAGE, items)
        body: dict = {"Items": [_item(i) for i in range(low, high)], "Count": high - low, "ScannedCount": high - low}
        if high < items:
            body["LastEvaluatedKey"] = {"merchant_id": {"S": f"m{high - 1}"}}
        pages[low] = orjson.dumps(body)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            request = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            start = request.get("ExclusiveStartKey")
            low = int(start["merchant_id"]["S"][1:]) + 1 if start else 0
            body = pages[low]
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(listener.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.serve_forever()


def start_pages(items: int) -> tuple[str, multiprocessing.process.BaseProcess]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    process = multiprocessing.get_context("spawn").Process(target=_serve_pages, args=(listener, items), daemon=True)
    process.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", process


def fill_table(url: str, items: int) -> None:
    """``items`` merchants, written by 4 threads of BatchWriteItem (25 items a call)."""
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url)
    dynamodb.create_table(
        TableName=REFRESH_TABLE,
        KeySchema=[{"AttributeName": "merchant_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "merchant_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def write(start: int) -> None:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url)
        for low in range(start, min(start + 10_000, items), 25):
            requests = [{"PutRequest": {"Item": _item(i)}} for i in range(low, min(low + 25, items))]
            pending = {REFRESH_TABLE: requests}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(0, items, 10_000)))


class BusyChild:
    """The control: a child process at the merchant child's niceness that only burns CPU for
    ``seconds``, as if it were a refresh. What the parse loses to it is what any busy process
    beside the flow costs on this machine, with no GIL and no table involved."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def refresh(self, force: bool = False) -> bool:
        code = f"import os, time\nos.nice({CHILD_NICENESS})\nend = time.time() + {self.seconds}\n"
        code += "while time.time() < end: pass"
        subprocess.run([sys.executable, "-c", code], check=True)
        return False


def run_mode(loader: ReferenceLoader | BusyChild, parser: ChunkParser, chunks: list[RawChunk], quiet: float) -> dict:
    """Parse chunks round and round; refresh once after ``quiet`` seconds; stop ``quiet`` seconds after."""
    samples: list[tuple[float, int]] = []  # (end time, events) per chunk
    refresh: dict[str, float] = {}

    def do_refresh() -> None:
        cpu = time.thread_time()
        refresh["start"] = time.perf_counter()
        loader.refresh(force=True)
        refresh["end"] = time.perf_counter()
        refresh["cpu"] = time.thread_time() - cpu

    started = time.perf_counter()
    thread = threading.Thread(target=do_refresh, daemon=True)
    max_ts = None
    i = 0
    while True:
        now = time.perf_counter()
        if not thread.is_alive() and "start" not in refresh and now - started >= quiet:
            thread.start()
        if "end" in refresh and now - refresh["end"] >= quiet:
            break
        max_ts, _ = parser.parse(max_ts, chunks[i % len(chunks)])
        samples.append((time.perf_counter(), len(chunks[i % len(chunks)].lines)))
        i += 1
    thread.join()
    start, end = refresh["start"], refresh["end"]
    before = sum(n for t, n in samples if t < start) / (start - started)
    during = sum(n for t, n in samples if start <= t <= end) / (end - start)
    after_events = [(t, n) for t, n in samples if t > end]
    after = sum(n for _, n in after_events) / (after_events[-1][0] - end)
    outside = statistics.mean((before, after))
    return {
        "refresh_s": end - start,
        "gil_cpu_s": refresh["cpu"],
        "outside_per_s": outside,
        "during_per_s": during,
        "ratio": during / outside,
    }


def refresh_main(args: argparse.Namespace) -> None:
    """The ``--refresh-items`` measurement (module docstring)."""
    items = args.refresh_items
    # moto_server only: dummy credentials for the emulator (the child inherits them, as it would
    # inherit a real environment's), never a real account's.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = "testing"
    os.environ.pop("AWS_PROFILE", None)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        if args.server == "moto":
            moto = start_moto(tmp)
            url, stop = moto.url, moto.stop
            fill_table(url, items)
        else:
            url, pages = start_pages(items)
            stop = pages.terminate
        print(f"{args.server}: {items:,} items ready in {time.perf_counter() - t0:.0f}s")
        try:
            lines = write_events(tmp / "events.jsonl", args.events, items)
            chunks = [RawChunk("bench", 1, lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
            settings = load_settings(
                environ={},
                overrides={
                    "aws": {"endpoint_url": url, "region": "us-east-1"},
                    "reference": {"merchants": {"path": f"dynamodb://{REFRESH_TABLE}", "refresh_seconds": 3600}},
                },
            )
            loaders: dict[str, ReferenceLoader | BusyChild] = {
                "thread": ReferenceLoader(settings, merchants_in_child=False),
                "child": ReferenceLoader(settings, merchants_in_child=True),
            }
            parsers = {}
            for mode, loader in loaders.items():
                assert isinstance(loader, ReferenceLoader)
                t0 = time.perf_counter()
                holder = loader.load_initial()
                print(
                    f"{mode}: first load {time.perf_counter() - t0:.1f}s, {len(holder.current.merchants):,} merchants"
                )
                parsers[mode] = ChunkParser(settings, reference=holder)
            if args.control_seconds:
                loaders["control"] = BusyChild(args.control_seconds)
                parsers["control"] = parsers["child"]
            results: dict[str, list[dict]] = {mode: [] for mode in loaders}
            for _ in range(args.rounds):
                for mode, loader in loaders.items():
                    result = run_mode(loader, parsers[mode], chunks, args.quiet)
                    results[mode].append(result)
                    print(mode, {k: round(v, 3) for k, v in result.items()}, flush=True)
            for mode, runs in results.items():
                ratios = [r["ratio"] for r in runs]
                print(
                    f"{mode}: refresh {statistics.median(r['refresh_s'] for r in runs):.1f}s wall, "
                    f"{statistics.median(r['gil_cpu_s'] for r in runs):.2f}s CPU on the flow's process (medians), "
                    f"parse rate during / outside the refresh: {[round(x, 3) for x in ratios]}, "
                    f"median {statistics.median(ratios):.3f}"
                )
        finally:
            stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merchants", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--refresh-items", type=int, default=0, help="measure a DynamoDB refresh of this many items")
    parser.add_argument("--quiet", type=float, default=4.0, help="seconds before and after the refresh")
    parser.add_argument("--server", choices=("pages", "moto"), default="pages")
    parser.add_argument("--control-seconds", type=float, default=20.0, help="the busy-child control; 0 = none")
    args = parser.parse_args()
    if args.refresh_items:
        refresh_main(args)
        return
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
