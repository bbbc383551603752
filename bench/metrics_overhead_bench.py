"""Throughput cost of the Prometheus metrics, measured in one run.

Runs ``python -m bytewax.run dataflow`` (one process, file source, every
JSONL output on) over the same generated input with ``metrics.port`` null
(off) and set (on, scraped every 0.5 s as Prometheus would, only faster),
alternating the two so that machine noise hits both alike, and reports the
median events/s of each and the overhead.

The metrics are counted once per chunk, alert and minute, never per event,
so the overhead should be within noise.

Usage: .venv/bin/python -m bench.metrics_overhead_bench [--events 400000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
T0 = 1752087600


def generate(path: Path, n: int) -> None:
    rng = random.Random(3)
    with open(path, "wb") as out:
        for i in range(n):
            out.write(
                orjson.dumps(
                    {
                        "transaction_id": f"t{i}",
                        "timestamp": int((T0 + i / 2000) * 1000),
                        "payment_status": "FAIL" if rng.random() < 0.02 else "SUCCESS",
                        "region": REGIONS[i % 4],
                        "user_id": f"u{rng.randrange(50_000)}",
                        "amount": round(rng.uniform(1, 900), 2),
                        "currency": "USD",
                    }
                )
                + b"\n"
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape_until(port: int, stop: threading.Event, count: list[int]) -> None:
    while not stop.wait(0.5):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
                resp.read()
            count[0] += 1
        except OSError:
            pass


def run_once(work: Path, events: int, metrics_on: bool) -> tuple[float, int]:
    """Wall seconds of one run, and how many scrapes succeeded."""
    out = work / ("on" if metrics_on else "off")
    config = work / "bench.yaml"
    config.write_text(
        f'source: {{type: file, path: "{work / "events.jsonl"}", batch_size: 1000}}\n'
        "sinks: {stdout: {alerts: false, metrics: false, dead_letters: false}, "
        f'jsonl: {{dir: "{out}"}}}}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYWATCH", "BYTEWAX"))}
    env.update(PYTHONPATH=str(ROOT), PAYWATCH_CONFIG=str(config))
    port = _free_port()
    if metrics_on:
        env["PAYWATCH__METRICS__PORT"] = str(port)
    stop, scrapes = threading.Event(), [0]
    scraper = threading.Thread(target=_scrape_until, args=(port, stop, scrapes), daemon=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflow"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if metrics_on:
        scraper.start()
    _, err = proc.communicate(timeout=600)
    elapsed = time.perf_counter() - start
    stop.set()
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])
    return elapsed, scrapes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paywatch-metrics-bench-") as tmp:
        work = Path(tmp)
        generate(work / "events.jsonl", args.events)
        times: dict[str, list[float]] = {"off": [], "on": []}
        scrapes = 0
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                elapsed, n = run_once(work, args.events, mode == "on")
                times[mode].append(elapsed)
                scrapes += n
    rate = {mode: args.events / statistics.median(ts) for mode, ts in times.items()}
    result = {
        "events": args.events,
        "rounds": args.rounds,
        "seconds": times,
        "events_per_second_median": rate,
        "overhead_percent": round((rate["off"] - rate["on"]) / rate["off"] * 100, 2),
        "scrapes_during_on_runs": scrapes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
