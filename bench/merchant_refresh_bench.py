"""How much the flow slows while a large DynamoDB merchant table is refreshed: on the loader's
thread (the old way) against in a child process (the default).

Serves a ``merchants`` table of ``--items`` items on loopback, then in one process keeps the
flow's hot step busy (``ChunkParser.parse`` over 1,000-line chunks, judged against the table in
force, on the main thread) and records the events parsed per interval:

1. ``--quiet`` seconds with no refresh (the reference rate);
2. a forced refresh on a background thread, as the loader's thread does it, read in this
   process (``merchants_in_child=False``), while the parse goes on; then quiet again;
3. the same refresh read in a child process (``merchants_in_child=True``).

Reports, per mode, the refresh's wall time, the CPU its thread spent in the flow's process
(holding the GIL: the read and build on the thread; receiving, hashing and indexing the built
table with a child), and the parse rate during it over the rate outside
any refresh (wall time: a thread holding the GIL stalls the parse in wall time, not CPU time).
The server: ``--server pages`` (the default) answers Scan with pages of 8,000 items prepared
before the run, in the wire format of DynamoDB's JSON protocol, so the server costs almost
nothing; ``--server moto`` fills a moto_server table (as the tests do), but moto spends seconds
of CPU per 10,000 items it scans (6 s for a 14,642-item page here), which competes with the
flow for the 2 cores and hides the GIL effect, and makes a table of more than tens of thousands
of items impractical. botocore parses either answer the same way on the client side.

Usage: python -m bench.merchant_refresh_bench [--items 1000000] [--events 200000] [--quiet 5] [--rounds 2]
       [--server pages|moto]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import orjson

from bench.reference_bench import write_events
from config import load_settings
from connectors.reference.loader import ReferenceLoader
from operators.parse import ChunkParser
from operators.records import RawChunk
from tests.support.servers import start_moto

TABLE = "merchants"
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
        TableName=TABLE,
        KeySchema=[{"AttributeName": "merchant_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "merchant_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def write(start: int) -> None:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url)
        for low in range(start, min(start + 10_000, items), 25):
            requests = [{"PutRequest": {"Item": _item(i)}} for i in range(low, min(low + 25, items))]
            pending = {TABLE: requests}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(0, items, 10_000)))


def run_mode(loader: ReferenceLoader, parser: ChunkParser, chunks: list[RawChunk], quiet: float) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--server", choices=("pages", "moto"), default="pages")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--quiet", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
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
            fill_table(url, args.items)
        else:
            url, pages = start_pages(args.items)
            stop = pages.terminate
        print(f"{args.server}: {args.items:,} items ready in {time.perf_counter() - t0:.0f}s")
        try:
            lines = write_events(tmp / "events.jsonl", args.events, args.items)
            chunks = [RawChunk("bench", 1, lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
            settings = load_settings(
                environ={},
                overrides={
                    "aws": {"endpoint_url": url, "region": "us-east-1"},
                    "reference": {"merchants": {"path": f"dynamodb://{TABLE}", "refresh_seconds": 3600}},
                },
            )
            loaders = {
                "thread": ReferenceLoader(settings, merchants_in_child=False),
                "child": ReferenceLoader(settings, merchants_in_child=True),
            }
            parsers = {}
            for mode, loader in loaders.items():
                t0 = time.perf_counter()
                holder = loader.load_initial()
                print(
                    f"{mode}: first load {time.perf_counter() - t0:.1f}s, {len(holder.current.merchants):,} merchants"
                )
                parsers[mode] = ChunkParser(settings, reference=holder)
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


if __name__ == "__main__":
    main()
