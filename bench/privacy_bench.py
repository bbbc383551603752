"""Throughput cost of card masking and field redaction, measured in one run.

The parse step (``ChunkParser.parse``, chunks of 1,000 lines, all outputs
built) runs over the same lines with ``privacy.mask_pans`` off and on,
alternating the two for several rounds so that machine noise hits both
alike; the median events/s of each and the ratio are reported for three
inputs:

- ``iso``: ISO-8601 timestamps, no card numbers (the usual traffic: one
  translate and one find per chunk);
- ``epoch_ms``: numeric epoch-millisecond timestamps, so every line holds a
  13-digit run and is checked in Python (the worst case short of cards);
- ``cards_1pct``: 1 % of the events carry a card number in a string field.

Rates are events per CPU-second of this process, the two sides timed chunk
by chunk in turn (see ``paired_rates``). Then ``drop_fields``/``hash_fields`` configured (one field each) against
masking alone on the cards input, and with ``--flow`` the whole flow
(``python -m bytewax.run dataflow``, file source, JSONL outputs) off and on,
alternating, in CPU seconds of the child process (start-up included).

``--instructions`` counts the whole flow's instructions per event under
callgrind instead (needs valgrind; a few minutes at ``--events 20000``).

Usage: .venv/bin/python -m bench.privacy_bench [--events 300000] [--rounds 5] [--flow | --flow-only]
[--flow-rounds 7] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import orjson

from bench.traffic import RATE, T0, payment
from config import load_settings
from config.settings import PrivacySettings
from operators.parse import ChunkParser
from operators.privacy import Redactor
from operators.records import RawChunk

ROOT = Path(__file__).resolve().parent.parent
CARDS = ("4111111111111111", "5500 0000 0000 0004", "3782-822463-10005")
KEY = b"bench-key-0123456789abcdef"


def events(n: int, kind: str) -> list[bytes]:
    rng = random.Random(7)
    lines = []
    for i in range(n):
        ev = payment(i, rng, int((T0 + i / RATE) * 1000) if kind == "epoch_ms" else None)
        if kind == "cards_1pct" and i % 100 == 0:
            ev["card_number"] = CARDS[i // 100 % len(CARDS)]
            ev["cvv"] = "123"
        lines.append(orjson.dumps(ev))
    return lines


def chunks_of(lines: list[bytes], size: int = 1000) -> list[RawChunk]:
    return [
        RawChunk("bench/0", 1, lines[i : i + size], origin="bench", first_position=i)
        for i in range(0, len(lines), size)
    ]


def paired_rates(parsers: dict[str, ChunkParser], chunks: list[RawChunk], n: int, rounds: int) -> dict[str, float]:
    """Events per CPU-second of each parser, measured chunk by chunk in turn.

    Every chunk is parsed by each parser back to back (the first one
    alternating), timed in this process's CPU time: on a shared machine the
    noise then falls on both sides of the ratio alike. Median over rounds.
    """
    rates: dict[str, list[float]] = {name: [] for name in parsers}
    names = list(parsers)
    for _ in range(rounds):
        cpu = dict.fromkeys(names, 0.0)
        states: dict[str, Optional[float]] = dict.fromkeys(names)
        for i, chunk in enumerate(chunks):
            for name in names if i % 2 == 0 else reversed(names):
                start = time.process_time()
                states[name], _ = parsers[name].parse(states[name], chunk)
                cpu[name] += time.process_time() - start
        for name in names:
            rates[name].append(n / cpu[name])
    return {name: statistics.median(values) for name, values in rates.items()}


def parser_for(privacy: dict) -> ChunkParser:
    settings = load_settings(environ={}, overrides={"privacy": privacy})
    key = KEY if settings.privacy.hash_fields else None
    return ChunkParser(settings, redactor=Redactor(settings.privacy, key))


def redact_ns(redactor: Redactor, chunks: list[RawChunk], n: int) -> float:
    """CPU nanoseconds per event of the redaction alone (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for chunk in chunks:
            redactor.redact(chunk.lines)
        best = min(best, time.process_time() - start)
    return best / n * 1e9


def flow_cpu_seconds(path: Path, out: Path, mask: bool) -> float:
    """CPU seconds of one whole-flow process over ``path`` (start-up included)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH")},
        "PAYWATCH__SOURCE__TYPE": "file",
        "PAYWATCH__SOURCE__PATH": str(path),
        "PAYWATCH__SINKS__JSONL__DIR": str(out),
        "PAYWATCH__SINKS__STDOUT": "{alerts: false, metrics: false, dead_letters: false}",
        "PAYWATCH__PRIVACY__MASK_PANS": "true" if mask else "false",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "bytewax.run", "dataflow"], cwd=ROOT, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--flow", action="store_true", help="also run the whole flow off and on")
    parser.add_argument("--flow-only", action="store_true", help="only the whole flow")
    parser.add_argument("--flow-rounds", type=int, default=7)
    parser.add_argument(
        "--instructions", action="store_true", help="only the whole flow's instructions per event under callgrind"
    )
    args = parser.parse_args()
    n = args.events
    if args.instructions:
        print(json.dumps({"events": n, "whole_flow_instructions_per_event": instructions(n)}, indent=2))
        return
    result: dict = {"events": n, "rounds": args.rounds, "parse_step": {}}
    if not args.flow_only:
        parse_step(n, args.rounds, result["parse_step"])
    if args.flow or args.flow_only:
        result["whole_flow_iso"] = whole_flow(n, args.flow_rounds)
    result["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


def parse_step(n: int, rounds: int, result: dict) -> None:
    """The parse step's rates, masking off and on, per input kind (see the module docstring)."""
    off, on = parser_for({"mask_pans": False}), parser_for({"mask_pans": True})
    redactor = Redactor(PrivacySettings())
    for kind in ("iso", "epoch_ms", "cards_1pct"):
        chunks = chunks_of(events(n, kind))
        rates = paired_rates({"off": off, "on": on}, chunks, n, rounds)
        result[kind] = {
            "mask_off_per_cpu_s": round(rates["off"]),
            "mask_on_per_cpu_s": round(rates["on"]),
            "on_vs_off": round(rates["on"] / rates["off"], 3),
            "redactor_ns_per_event": round(redact_ns(redactor, chunks, n)),
        }
    chunks = chunks_of(events(n, "cards_1pct"))
    fields = parser_for({"drop_fields": ["cvv"], "hash_fields": ["card_number"]})
    rates = paired_rates({"mask": on, "mask_drop_hash": fields}, chunks, n, rounds)
    result["cards_1pct_drop_and_hash"] = {
        "mask_only_per_cpu_s": round(rates["mask"]),
        "mask_drop_hash_per_cpu_s": round(rates["mask_drop_hash"]),
        "ratio": round(rates["mask_drop_hash"] / rates["mask"], 3),
    }


def whole_flow(n: int, rounds: int) -> dict:
    """Whole processes, masking off and on in turn (order alternating per round).

    The ratio is taken per round, between two runs minutes apart at most,
    and the median of those ratios is reported with their spread: on a
    shared machine a whole run's CPU time moves by more than the effect.
    """
    ratios, off_rates, on_rates = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"\n".join(events(n, "iso")) + b"\n")
        for i in range(rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            cpu = {mask: flow_cpu_seconds(path, Path(tmp) / f"out-{i}-{mask}", mask) for mask in order}
            ratios.append(cpu[False] / cpu[True])
            off_rates.append(n / cpu[False])
            on_rates.append(n / cpu[True])
    return {
        "rounds": rounds,
        "mask_off_per_cpu_s": round(statistics.median(off_rates)),
        "mask_on_per_cpu_s": round(statistics.median(on_rates)),
        "on_vs_off_median_of_rounds": round(statistics.median(ratios), 3),
        "on_vs_off_each_round": [round(r, 3) for r in ratios],
    }


def instructions(n: int) -> dict:
    """Whole-flow instructions per event, masking off and on (deterministic, unlike time).

    Uses bench/instruction_counts.py's flow runs under callgrind: simulator
    traffic, ``n`` events after ``n`` of warm-up, the difference of the two
    runs divided by ``n``; the setting reaches the child through the environment.
    """
    from bench import instruction_counts

    tmp = Path(tempfile.mkdtemp(prefix="paywatch-privacy-ir-"))
    events_file, warm_file = tmp / "events.jsonl", tmp / "warm.jsonl"
    instruction_counts.write_events(events_file, 2 * n)
    warm_file.write_bytes(b"".join(events_file.read_bytes().splitlines(keepends=True)[:n]))
    per_event = {}
    try:
        for mask in ("false", "true"):
            os.environ["PAYWATCH__PRIVACY__MASK_PANS"] = mask
            runs = {
                name: instruction_counts.count(
                    f"{name}-{mask}", ["--run", "flow", str(path), str(tmp / f"out-{name}-{mask}")], tmp
                )
                for name, path in (("all", events_file), ("warm", warm_file))
            }
            per_event[mask] = (runs["all"] - runs["warm"]) // n
    finally:
        os.environ.pop("PAYWATCH__PRIVACY__MASK_PANS", None)
    return {
        "mask_off": per_event["false"],
        "mask_on": per_event["true"],
        "on_vs_off": round(per_event["true"] / per_event["false"], 3),
    }


if __name__ == "__main__":
    main()
