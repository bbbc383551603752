"""Instructions per event of each hot stage, counted by valgrind (callgrind).

    .venv/bin/python -m bench.instruction_counts [--events 30000] [--warm 100000] [--lake]

Wall-clock rates on a shared machine move by 20 % between identical runs;
instruction counts of the same code on the same input are the same to a few
hundred per event, so a change of 2 % shows. Each figure is the difference
between two runs under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``)
that differ only in the stage measured, divided by ``--events``:

- ``decode``: msgspec decoding the chunks (``operators/events/decoder.py``);
- ``orjson``: ``orjson.loads`` per line, for scale;
- ``parse``: the parse step without the transactions blob, and
  ``parse_lines`` with it;
- ``users``: the user-risk rules over the parsed chunks;
- ``flow``: the whole dataflow (``run_main``, file source, JSONL outputs),
  as the difference between a run of ``warm + events`` and one of ``warm``;
  with ``--lake``, the same again with ``sinks.lake`` on (a local directory;
  every thread counted: the sink's sender thread builds and encodes the
  Parquet files).
  The epoch is an hour long so that snapshots, which Bytewax takes on a
  wall-clock interval, do not multiply under valgrind's 50x slowdown.

Every stage but ``flow`` first parses and scores ``--warm`` events with the
same caches and user state, so the counts are those of a process in its
steady state (users seen before), not of a cold start. Needs ``valgrind``
(Debian package); takes a few minutes.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from config.loader import load_settings  # noqa: E402
from connectors.simulator.source import iter_events  # noqa: E402
from operators.records import RawChunk  # noqa: E402

STAGES = ("none", "decode", "orjson", "parse", "parse_lines", "users")
USERS = 50_000


def write_events(path: Path, n: int) -> None:
    """Simulator traffic (50,000 users, about 500 events per second of event time)."""
    sim = load_settings(
        overrides={
            "simulator": {"events": n, "rate": 0, "users": USERS, "start": "2025-07-09T19:00:00Z", "event_rate": 500}
        }
    ).simulator
    path.write_bytes(b"".join(payload + b"\n" for _, payload in iter_events(sim)))


def run_stage(stage: str, path: Path, warm: int, events: int) -> None:
    """The measured program: warm up, then run ``stage`` over ``events`` more events."""
    from operators.parse import ChunkParser
    from operators.users.user_risk import UserRisk

    settings = load_settings()
    lines = path.read_bytes().splitlines()[: warm + events]
    chunks = [RawChunk("file:bench", 1, lines[i : i + 1000], "bench", i) for i in range(0, len(lines), 1000)]
    warm_chunks, chunks = chunks[: warm // 1000], chunks[warm // 1000 :]
    gc.disable()
    warm_parser = ChunkParser(settings, transaction_lines=True)
    parser = warm_parser.for_partition()  # shares the user and merchant caches
    parser._transaction_lines = stage != "parse"
    risks: dict[int, UserRisk] = {}

    def score_users(parsed) -> None:
        for shard, shard_events in parsed.user_events.items():
            risk = risks.get(shard)
            if risk is None:
                risk = risks[shard] = UserRisk(settings.rules, settings.users)
            if hasattr(risk, "process_columns"):
                risk.process_columns(shard_events)
            else:  # bench/user_rules_bench.py --instructions swaps in the per-user rules, which take tuples
                risk.process(shard_events.rows())

    clock = None
    for chunk in warm_chunks:
        clock, parsed = warm_parser.parse(clock, chunk)
        score_users(parsed)
    if stage == "decode":
        for chunk in chunks:
            parser._decoder.decode(chunk.lines)
    elif stage == "orjson":
        import orjson

        for chunk in chunks:
            for line in chunk.lines:
                orjson.loads(line)
    elif stage in ("parse", "parse_lines", "users"):
        parsed_chunks = []
        for chunk in chunks:
            clock, parsed = parser.parse(clock, chunk)
            parsed_chunks.append(parsed)
        if stage == "users":
            for parsed in parsed_chunks:
                score_users(parsed)


def run_flow(path: Path, out: Path, lake: bool = False) -> None:
    from bytewax.testing import run_main

    import dataflow
    from cli import startup

    sinks: dict = {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}, "jsonl": {"dir": str(out)}}
    if lake:
        sinks["lake"] = {"enabled": True, "uri": str(out / "lake")}
    source = {"type": "file", "path": str(path), "batch_size": 1000}
    settings = load_settings(overrides={"source": source, "sinks": sinks})
    flow = dataflow.build_flow(settings)
    startup._tune_garbage_collector()
    run_main(flow, epoch_interval=timedelta(hours=1))


def count(name: str, args: list[str], tmp: Path) -> int:
    """Instructions of one ``python -m bench.instruction_counts ARGS`` under callgrind."""
    out_file = tmp / f"callgrind.{name}"
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            "-m",
            "bench.instruction_counts",
            *args,
        ],
        cwd=ROOT,
        # One BLAS thread: Paywatch makes no BLAS call, but OpenBLAS's idle workers spin under
        # callgrind's serialised threads and their instructions would count against the stage.
        env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run {args} failed:\n{proc.stderr[-2000:]}")
    out_file.unlink(missing_ok=True)
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--warm", type=int, default=100_000)
    parser.add_argument("--lake", action="store_true", help="also the flow with sinks.lake on (two more runs)")
    parser.add_argument("--run", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        kind, path, *rest = args.run
        if kind in ("flow", "flow_lake"):
            run_flow(Path(path), Path(rest[0]), lake=kind == "flow_lake")
        else:
            run_stage(kind, Path(path), args.warm, args.events)
        return 0

    # The inputs (tens of MB) and callgrind's files go in a folder removed however the run ends
    # (a failed callgrind run, Ctrl-C): each run used to leave its /tmp/paywatch-ir-* behind.
    with tempfile.TemporaryDirectory(prefix="paywatch-ir-") as folder:
        return measure(args.events, args.warm, args.lake, Path(folder))


def measure(n_events: int, warm: int, lake: bool, tmp: Path) -> int:
    """Write the inputs into ``tmp``, count every stage under callgrind, print the table."""
    events = tmp / "events.jsonl"
    write_events(events, warm + n_events)
    warm_file = tmp / "warm.jsonl"
    warm_file.write_bytes(b"".join(events.read_bytes().splitlines(keepends=True)[:warm]))
    sizes = ["--events", str(n_events), "--warm", str(warm)]
    jobs = {stage: [*sizes, "--run", stage, str(events)] for stage in STAGES}
    jobs["flow_warm"] = ["--run", "flow", str(warm_file), str(tmp / "out-warm")]
    jobs["flow_all"] = ["--run", "flow", str(events), str(tmp / "out-all")]
    if lake:
        jobs["lake_warm"] = ["--run", "flow_lake", str(warm_file), str(tmp / "out-lake-warm")]
        jobs["lake_all"] = ["--run", "flow_lake", str(events), str(tmp / "out-lake-all")]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = dict(zip(jobs, pool.map(lambda item: count(item[0], item[1], tmp), jobs.items()), strict=False))

    def per_event(a: str, b: str) -> int:
        return (totals[a] - totals[b]) // n_events

    rows = [
        ("orjson.loads per line", per_event("orjson", "none")),
        ("msgspec chunk decode", per_event("decode", "none")),
        ("parse, no transactions blob", per_event("parse", "none")),
        ("parse, with the transactions blob", per_event("parse_lines", "none")),
        ("user-risk rules", per_event("users", "parse_lines")),
        ("whole flow (run_main, JSONL outputs)", per_event("flow_all", "flow_warm")),
    ]
    if lake:
        rows.append(("whole flow with the lake on (sinks.lake, local directory)", per_event("lake_all", "lake_warm")))
        rows.append(("the lake's share (flow with the lake - flow without)", rows[-1][1] - rows[-2][1]))
    print(f"instructions per event; {n_events:,} events after {warm:,} warm-up, {USERS:,} users\n")
    print("| stage | instructions/event | vs orjson.loads |\n|---|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,} | {value / rows[0][1]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
