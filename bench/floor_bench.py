"""What a whole process at 0.30 of an ``orjson.loads`` loop leaves for the detection itself.

Issue 14's target is the whole process (start-up included) at 0.30 of an
``orjson.loads`` loop over the same lines. This bench measures, in one run
and over the same lines, the parts no Paywatch design can leave out, so that
the budget they leave is a measured figure:

1. the reference: an ``orjson.loads`` loop (its time / 0.30 is the budget);
2. start-up: the Paywatch flow (``python -m bytewax.run dataflow``, file
   source, JSONL outputs) over 1,000 lines: imports, settings, Bytewax;
3. decoding every line into typed columns in native code, the cheapest way
   this stack has: ``pyarrow.json.read_json`` with the contract's schema, one
   call per 20,000-line chunk (the grown chunk size), one thread;
   beside it, today's decoder (msgspec into the contract's struct).
   Start-up plus this decode is the ``floor``;
4. writing the transactions output: the same bytes plus the enrichment
   suffix Paywatch appends (about 160 bytes), one ``write`` per chunk;
5. the whole Paywatch process over all the lines, for the ratio itself.

Usage::

    .venv/bin/python -m bench.floor_bench [--events 500000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pajson

from bench.traffic import payment
from config import load_settings
from operators.events.contract import Contract
from operators.events.decoder import EventDecoder

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 20_000
TARGET = 0.30
QUIET = "{alerts: false, metrics: false, dead_letters: false}"
_BEFORE_BRACE = itemgetter(slice(None, -1))
_SUFFIX = (
    b',"category":"LOW_VALUE","fraud_score":0,"fraud_status":"APPROVED","merchant_status":"active",'
    b'"over_merchant_limit":false,"rules_version":"builtin","processed_at":"2026-11-29T21:00:00.000Z"}\n'
)
_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("user_id", pa.string()),
        ("timestamp", pa.string()),
        ("payment_status", pa.string()),
        ("region", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_name", pa.string()),
        ("device", pa.string()),
    ]
)


def _generate(path: Path, n: int) -> list[bytes]:
    rng = random.Random(7)
    lines = [orjson.dumps(payment(i, rng)) for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _orjson_loop(lines: list[bytes]) -> None:
    loads = orjson.loads
    for line in lines:
        loads(line)


def _arrow_decode(chunks: list[bytes]) -> None:
    parse = pajson.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")
    for blob in chunks:
        read = pajson.ReadOptions(block_size=len(blob) + 1, use_threads=False)
        pajson.read_json(io.BytesIO(blob), read_options=read, parse_options=parse)


def _msgspec_decode(lines: list[bytes]) -> None:
    decoder = EventDecoder(Contract(load_settings(environ={}).validation))
    for start in range(0, len(lines), CHUNK):
        decoder.decode(lines[start : start + CHUNK])


def _write_output(lines: list[bytes], out: Path) -> None:
    """As the parse step writes it: C-level maps, one join and one ``write`` per chunk."""
    with open(out, "wb") as file:
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start : start + CHUNK]
            parts: list[bytes] = [b""] * (2 * len(chunk))
            parts[::2] = map(_BEFORE_BRACE, chunk)
            parts[1::2] = repeat(_SUFFIX, len(chunk))
            file.write(b"".join(parts))


def _whole_process(source: Path, work: Path) -> float:
    out = work / f"out-{source.stem}"
    config = work / f"{source.stem}.yaml"
    config.write_text(
        f"source: {{type: file, path: '{source}', batch_size: 1000}}\n"
        f"sinks: {{jsonl: {{dir: '{out}', files: 2}}, stdout: {QUIET}}}\n"
    )
    env = {**os.environ, "PAYWATCH_CONFIG": str(config)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflow"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paywatch-floor-") as tmp:
        work = Path(tmp)
        lines = _generate(work / "all.jsonl", args.events)
        (work / "start.jsonl").write_bytes(b"\n".join(lines[:1000]) + b"\n")
        chunks = [b"\n".join(lines[i : i + CHUNK]) for i in range(0, len(lines), CHUNK)]
        seconds = {
            "orjson_loop": _timed(lambda: _orjson_loop(lines)),
            "start_up": _whole_process(work / "start.jsonl", work),
            "arrow_decode": _timed(lambda: _arrow_decode(chunks)),
            "msgspec_decode": _timed(lambda: _msgspec_decode(lines)),
            "write_output": _timed(lambda: _write_output(lines, work / "written.jsonl")),
            "whole_process": _whole_process(work / "all.jsonl", work),
        }
    n = args.events
    budget = seconds["orjson_loop"] / TARGET
    floor = seconds["start_up"] + seconds["arrow_decode"]
    with_output = floor + seconds["write_output"]
    report = {
        "events": n,
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "budget_at_target_s": round(budget, 3),
        "floor_s": round(floor, 3),
        "floor_share_of_budget": round(floor / budget, 2),
        "floor_with_output_share_of_budget": round(with_output / budget, 2),
        "left_for_detection_and_output_us_per_event": round((budget - floor) / n * 1e6, 2),
        "whole_process_us_per_event": round(seconds["whole_process"] / n * 1e6, 2),
        "whole_process_vs_orjson": round(seconds["orjson_loop"] / seconds["whole_process"], 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
