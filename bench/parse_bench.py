"""The parse step per event, columnar against the per-event loop it replaced, in one run.

    .venv/bin/python -m bench.parse_bench [--events 200000] [--rounds 5]

Times ``ChunkParser.parse`` (operators/parse.py) and the per-event reference
(tests/support/parse_reference.py) over the same synthetic payments
(bench/traffic.py), at chunks of 1,000 and 10,000 lines, against an
``orjson.loads`` loop over the same lines. Each parser first parses every
chunk once, so its caches (event-time seconds, user shards, merchant
verdicts) are those of a process in its steady state; then ``--rounds``
rounds each time every variant once, in turn, and the best time of each is
kept (CPU time of this process, which a busy machine disturbs less than wall
time; garbage collection off, as in bench/instruction_counts.py). The figure
that compares across machines is the ratio ``orjson loop time / parser time``
measured in the same run: the parser's throughput as a fraction of a bare
JSON parse.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable

import orjson

from bench.traffic import payment
from config.loader import load_settings
from operators.parse import ChunkParser
from operators.records import RawChunk
from tests.support.parse_reference import ChunkParser as ReferenceParser

SIZES = (1_000, 10_000)


def timed(run: Callable[[], None]) -> float:
    """CPU seconds of one call, with garbage collection off."""
    gc.collect()
    gc.disable()
    start = time.process_time()
    run()
    seconds = time.process_time() - start
    gc.enable()
    return seconds


def parse_all(parser, chunks: list[RawChunk]) -> Callable[[], None]:
    def run() -> None:
        state = None
        for chunk in chunks:
            state, _ = parser.parse(state, chunk)

    return run


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--events", type=int, default=200_000)
    args.add_argument("--rounds", type=int, default=5)
    options = args.parse_args()
    rng = random.Random(7)
    lines = [orjson.dumps(payment(i, rng)) for i in range(options.events)]
    settings = load_settings(environ={})

    def orjson_loop() -> None:
        loads = orjson.loads
        for line in lines:
            loads(line)

    n = len(lines)
    variants: dict[str, Callable[[], None]] = {"orjson": orjson_loop}
    for size in SIZES:
        chunks = [RawChunk("file:bench", 1, lines[i : i + size], "bench", i) for i in range(0, n, size)]
        for name, cls in (("before", ReferenceParser), ("now", ChunkParser)):
            parser = cls(settings)
            parse_all(parser, chunks)()  # warm the caches
            variants[f"{name} {size}"] = parse_all(parser, chunks)
    # Rounds alternate the variants, so that a change in the machine's load touches them alike.
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(options.rounds):
        for name, run in variants.items():
            times[name].append(timed(run))
    best = {name: min(values) for name, values in times.items()}
    base = best["orjson"]
    print(f"{n:,} events; best of {options.rounds} alternating rounds (CPU time)")
    print(f"orjson.loads loop: {base / n * 1e9:,.0f} ns/event\n")
    print("| chunk lines | parser | ns/event | throughput vs orjson loop | speed-up |")
    print("|---:|---|---:|---:|---:|")
    for size in SIZES:
        before = best[f"before {size}"]
        for name, label in (("before", "per-event loop (before)"), ("now", "columnar (now)")):
            seconds = best[f"{name} {size}"]
            print(f"| {size:,} | {label} | {seconds / n * 1e9:,.0f} | {base / seconds:.2f} | {before / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
