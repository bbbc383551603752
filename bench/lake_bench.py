"""What the lake costs: throughput on vs off, bytes per event per zone, objects and PUTs.

Usage::

    .venv/bin/python -m bench.lake_bench [--events 300000] [--rounds 2] [--target-file-mb 16]
    .venv/bin/python -m bench.lake_bench --events 150000 --rounds 9   # the issue's figure (docs/lake.md)
    ARROW_DEFAULT_MEMORY_POOL=mimalloc .venv/bin/python -m bench.lake_bench --stages --events 100000
    .venv/bin/python -m bench.lake_bench --no-jsonl --events 150000 --rounds 3

Runs the real dataflow in this process (file source, the input of
``bench/aws_sinks_bench.py``: four regions, 1,000 events per second of event
time, 1 % failures, 0.5 % fraud-looking payments), alternating, ``--rounds``
times each (the order of ``off`` and ``lake`` swapped every round), wall clock
and CPU seconds of the whole process (every thread); reported: the best run of
each, and the median lake/off ratio of the adjacent pairs (the machine is
shared, and whole runs move by a third between identical runs):

- ``off``: JSONL outputs on, lake off;
- ``lake``: the same plus ``sinks.lake`` to a local directory (default settings:
  zstd, 128 MB, 300 s; ``--target-file-mb`` lowers the size at which files roll,
  so files finish while the flow runs, as in a long-running flow, instead of
  all at the end of the input);
- ``bare``: no output of every transaction at all (the parse step then skips
  the transactions JSONL; the lake does not need it either, only the
  enrichment keys), to show the lake's whole cost.

Also ``end_of_input_wait_s``: how long a lake run waited at the end of its
input for the last row groups, footers and writes. It is a fixed cost per
run, part of the wall clock above: a short run (150,000 events take under a
second) feels it most; ``--events 600000`` shows the ratio of a flow that runs on.

Then from the lake's files: bytes per event per zone (Parquet, zstd), objects
written, and, from the roll rules and the measured row sizes, objects per hour
(= S3 PUT requests: one single PUT per object) at 1,000 and 100,000 events/s
and PUT requests per million events with their price.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.aws_sinks_bench import write_events

#: S3 Standard PUT/COPY/POST/LIST, us-east-1, USD per 1,000 requests.
PUT_PRICE_PER_1000 = 0.005
QUIET = {"alerts": False, "metrics": False, "dead_letters": False}


def _settings(source: Path, out: Path, lake: Path | None, jsonl: bool, roll: dict[str, float]) -> Any:
    from config import load_settings

    sinks: dict[str, Any] = {"stdout": QUIET, "jsonl": {"dir": str(out) if jsonl else None}}
    if lake is not None:
        sinks["lake"] = {"enabled": True, "uri": str(lake), **roll}
    return load_settings(environ={}, overrides={"source": {"type": "file", "path": str(source)}, "sinks": sinks})


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_SENDER_CPU = [0.0]
_SENDER_LOCK = threading.Lock()
_CLOSE_WAIT = [0.0]


def _count_sender_cpu() -> None:
    """Wrap the lake's table building and Parquet encoding to sum their thread CPU.

    Both threads: the encoding thread (row groups of open files) and the
    sender (the rest of a file, waiting for the encoding thread, which costs
    no CPU; files encoded whole). Arrow releases the GIL in both.
    """
    from connectors.lake.sink import LakeFile

    def timed(original: Any) -> Any:
        def run(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return original(*args)
            finally:
                with _SENDER_LOCK:
                    _SENDER_CPU[0] += time.thread_time() - started

        return run

    LakeFile.encoded = timed(LakeFile.encoded)  # type: ignore[method-assign]
    try:
        from connectors.lake.encoder import FileEncoder
    except ImportError:  # this bench run against a commit before files were encoded while open
        return
    FileEncoder._encode = timed(FileEncoder._encode)  # type: ignore[method-assign]


def _time_the_end_of_input() -> None:
    """Wrap the lake partition's close: how long the flow waits at the end of the input for the
    last row groups, footers and uploads (a fixed cost per run, which a short run feels most)."""
    from connectors.lake.sink import _LakePartition

    close = _LakePartition.close

    def timed_close(self: Any) -> None:
        started = time.perf_counter()
        try:
            close(self)
        finally:
            _CLOSE_WAIT[0] += time.perf_counter() - started

    _LakePartition.close = timed_close  # type: ignore[method-assign]


def _run(settings: Any) -> tuple[float, float]:
    """Wall-clock and CPU seconds (every thread of this process: the lake's sender and Arrow's too)."""
    from bytewax.testing import run_main

    from dataflow import build_flow

    started, cpu = time.perf_counter(), _cpu()
    run_main(build_flow(settings))
    return time.perf_counter() - started, _cpu() - cpu


def _zone_stats(lake: Path) -> dict[str, dict[str, float]]:
    stats = {}
    for zone in ("raw", "enriched", "alerts", "metrics"):
        files = sorted((lake / zone).rglob("*.parquet"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        stats[zone] = {"objects": len(files), "rows": rows, "bytes": size}
    return stats


def _row_bytes(source: Path, transactions: Path) -> tuple[float, float]:
    """Uncompressed row bytes per event as the roller counts them (line + 48; JSONL line)."""
    lines = source.read_bytes().count(b"\n")
    raw = (source.stat().st_size - lines + 48 * lines) / lines
    txn_lines = sum(f.read_bytes().count(b"\n") for f in transactions.glob("transactions-*.jsonl"))
    enriched = sum(f.stat().st_size for f in transactions.glob("transactions-*.jsonl")) / max(1, txn_lines)
    return raw, enriched


def objects_per_hour(rate: float, row_bytes: float, target_mb: float = 128, max_seconds: float = 300) -> float:
    """Files one source partition writes per hour in a zone: by size or by age, whichever comes first."""
    by_age = 3600 / max_seconds
    by_size = rate * 3600 * row_bytes / (target_mb * 1024 * 1024)
    return max(by_age, by_size)


def stages(source: Path, events: int, chunk: int = 20_000, repeat: int = 3) -> dict[str, float]:
    """CPU microseconds per event of each stage of the lake, alone on this thread (best of ``repeat``).

    The bench's lines parsed in chunks of ``chunk`` (what the file source
    grows to), then: on the worker thread, the lines into Arrow
    (``ChunkLines``) and each zone's per-chunk rows; on the encoding thread,
    each zone's tables and their Parquet (one file per zone, row groups of
    ``sinks.lake.row_group_rows``). Run once per Arrow memory pool
    (``ARROW_DEFAULT_MEMORY_POOL``) to compare them.
    """
    from config import load_settings
    from connectors.lake.encoder import FileEncoder
    from connectors.lake.tables import ChunkLines, enriched_rows, raw_rows
    from operators.events.timestamps import TimestampParser
    from operators.parse import ChunkParser
    from operators.records import RawChunk

    settings = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "unused"}}})
    lines = source.read_bytes().splitlines()[:events]
    parser, state, chunks = ChunkParser(settings), None, []
    for start in range(0, len(lines), chunk):
        state, parsed = parser.parse(state, RawChunk("file:bench", 1, lines[start : start + chunk], "bench", start))
        chunks.append(parsed.lake)
    timestamps = TimestampParser(settings.validation.min_year, settings.validation.max_year)
    rows = settings.sinks.lake.row_group_rows

    def best(work: Any) -> tuple[float, Any]:
        times, result = [], None
        for _ in range(repeat):
            started = time.thread_time()
            result = work()
            times.append(time.thread_time() - started)
        return round(min(times) / len(lines) * 1e6, 3), result

    def encode(zone_rows: list[Any]) -> bytes:
        encoder = FileEncoder("zstd", rows)
        for zone in zone_rows:
            encoder.add((zone.source, None))
        return encoder.result()

    out: dict[str, float] = {}
    out["worker: ChunkLines"], buffers = best(lambda: [ChunkLines(c) for c in chunks])
    out["worker: raw_rows"], raw = best(
        lambda: [raw_rows(c, timestamps, 300.0, b) for c, b in zip(chunks, buffers, strict=True)]
    )
    out["worker: enriched_rows"], enriched = best(
        lambda: [enriched_rows(c, b) for c, b in zip(chunks, buffers, strict=True)]
    )
    out["encoding: raw tables"], _ = best(lambda: [r.source.build() for r in raw])
    out["encoding: enriched tables"], _ = best(lambda: [r.source.build() for r in enriched])
    out["encoding: raw tables + Parquet"], _ = best(lambda: encode(raw))
    out["encoding: enriched tables + Parquet"], _ = best(lambda: encode(enriched))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--target-file-mb",
        type=float,
        default=None,
        help="sinks.lake.target_file_mb for the lake runs (default: the setting's, 128); lower it so files "
        "roll during the run, as in a long-running flow",
    )
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=None,
        help="sinks.lake.row_group_rows for the lake runs (default: the setting's, 65,536; 10,000,000 encodes "
        "every file whole when it finishes, as before row groups were encoded while files are open)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="only time each stage of the lake alone (CPU us per event, best of 3), no flow runs",
    )
    parser.add_argument(
        "--no-jsonl",
        action="store_true",
        help="the off and lake runs without the JSONL outputs (as with flagged-only DynamoDB): "
        "the lake alone then decides whether the parse step builds the transactions JSONL",
    )
    args = parser.parse_args(argv)
    roll: dict[str, float] = {} if args.target_file_mb is None else {"target_file_mb": args.target_file_mb}
    if args.row_group_rows is not None:
        roll["row_group_rows"] = args.row_group_rows

    work = Path(tempfile.mkdtemp(prefix="lake-bench-"))
    try:
        source = work / "in.jsonl"
        write_events(source, args.events, 1000.0, datetime(2025, 7, 9, 19, 0, tzinfo=UTC))
        if args.stages:
            import pyarrow as pa

            report = {"events": args.events, "memory_pool": pa.default_memory_pool().backend_name}
            print(json.dumps({**report, **stages(source, args.events)}, indent=2))
            return 0
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        pairs: list[tuple[float, float]] = []  # (wall, cpu) ratio lake/off of adjacent runs
        _count_sender_cpu()
        _time_the_end_of_input()
        sender_cpu: list[float] = []
        close_waits: list[float] = []
        for round_no in range(args.rounds):
            order = ("off", "lake", "bare") if round_no % 2 == 0 else ("lake", "off", "bare")
            if args.no_jsonl:
                order = order[:2]  # "bare" would be "off" again
            runs: dict[str, tuple[float, float]] = {}
            for name in order:
                out, lake = work / f"out-{name}", work / f"lake-{name}"
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(lake, ignore_errors=True)
                _SENDER_CPU[0] = _CLOSE_WAIT[0] = 0.0
                wall, cpu = _run(
                    _settings(
                        source,
                        out,
                        lake if name == "lake" else None,
                        jsonl=name != "bare" and not args.no_jsonl,
                        roll=roll,
                    )
                )
                if name == "lake":
                    sender_cpu.append(_SENDER_CPU[0])
                    close_waits.append(_CLOSE_WAIT[0])
                best[name] = min(best.get(name, math.inf), wall)
                best_cpu[name] = min(best_cpu.get(name, math.inf), cpu)
                runs[name] = (wall, cpu)
            pairs.append((runs["off"][0] / runs["lake"][0], runs["off"][1] / runs["lake"][1]))
        if args.no_jsonl:
            best["bare"], best_cpu["bare"] = best["off"], best_cpu["off"]
        stats = _zone_stats(work / "lake-lake")
        if args.no_jsonl:  # no transactions JSONL to measure the enriched rows from: the object counts are moot
            raw_row = enriched_row = math.nan
        else:
            raw_row, enriched_row = _row_bytes(source, work / "out-lake")
        rates = {name: args.events / seconds for name, seconds in best.items()}
        cpu_rates = {name: args.events / seconds for name, seconds in best_cpu.items()}
        per_hour = {}
        for rate in (1_000, 100_000):
            zones = {
                "raw": objects_per_hour(rate, raw_row),
                "enriched": objects_per_hour(rate, enriched_row),
                "alerts": 3600 / 300,
                "metrics": 3600 / 300,
            }
            hour_events = rate * 3600
            per_hour[rate] = {
                "objects_per_hour": {k: round(v, 1) for k, v in zones.items()},
                "puts_per_million_events": round(sum(zones.values()) * 1e6 / hour_events, 2),
                "usd_per_million_events": sum(zones.values()) * 1e6 / hour_events * PUT_PRICE_PER_1000 / 1000,
            }
        report = {
            "events": args.events,
            "jsonl_outputs": not args.no_jsonl,
            "target_file_mb": roll.get("target_file_mb", 128),
            "row_group_rows": roll.get("row_group_rows", 65_536),
            "events_per_second": {k: round(v) for k, v in rates.items()},
            "events_per_cpu_second": {k: round(v) for k, v in cpu_rates.items()},
            "lake_vs_off": round(rates["lake"] / rates["off"], 3),
            "lake_vs_bare": round(rates["lake"] / rates["bare"], 3),
            "lake_vs_off_per_cpu_second": round(cpu_rates["lake"] / cpu_rates["off"], 3),
            "lake_vs_off_median_of_adjacent_pairs": {
                "wall": round(statistics.median(p[0] for p in pairs), 3),
                "cpu": round(statistics.median(p[1] for p in pairs), 3),
            },
            "lake_vs_bare_per_cpu_second": round(cpu_rates["lake"] / cpu_rates["bare"], 3),
            # Of the lake's extra CPU, what runs on its sender thread (Arrow, GIL released):
            "lake_extra_cpu_us_per_event": round((1 / cpu_rates["lake"] - 1 / cpu_rates["off"]) * 1e6, 2),
            "encoding_threads_cpu_us_per_event": round(min(sender_cpu) / args.events * 1e6, 2),
            # Median wall-clock seconds the lake run waited at the end of the input (in its wall clock):
            "end_of_input_wait_s": round(statistics.median(close_waits), 3),
            "bytes_per_event": {
                zone: round(s["bytes"] / max(1, s["rows"]), 1)
                for zone, s in stats.items()
                if zone in ("raw", "enriched")
            },
            "zones": stats,
            "row_bytes_uncompressed": {"raw": round(raw_row, 1), "enriched": round(enriched_row, 1)},
            "per_rate": per_hour,
        }
        if args.no_jsonl:
            for moot in ("row_bytes_uncompressed", "per_rate", "lake_vs_bare", "lake_vs_bare_per_cpu_second"):
                report.pop(moot)
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
