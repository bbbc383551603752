"""User rules on columns against the per-user implementation they replaced (issue 14).

Simulator-like traffic (bench/traffic.py: 50,000 users over four regions, 2,000
events per second of event time) is split over the ``users.shards`` shards as
the parse step splits it (crc32 of the user id), and each shard's events are
handed to ``UserRisk.process`` in batches of a given size: the size of what a
shard's event-time buffer releases at once (a chunk's share of one shard: a
1,000-line chunk over 64 shards is ~16 events, a 20,000-line chunk ~300).

For each batch size, in the same process and run, it times (CPU seconds per
event):

- ``columns``: today's :class:`operators.users.user_risk.UserRisk` (rounds of
  numpy across users, per-event Python under ``SCALAR_BELOW``);
- ``vector`` / ``scalar``: the same with one path forced (what tunes ``SCALAR_BELOW``);
- ``per-user``: the implementation before issue 14 (tests/support/legacy_user_risk.py);

and checks that columns and per-user raised the same alerts. Then the snapshot of
every shard's users (pickled as the step pickles it) for the whole user pool:
seconds and bytes, both implementations.

The shards are first warmed with ``--warm`` events (a million: twenty per
user, so every history is full and the spike rule judges every payment, the
steady state of a long run), in batches of 300, once per implementation; each
measurement then times ``--events`` more from those snapshots (handed to the
columns as :class:`~operators.records.UserColumns`, as the event-order buffer
releases them; to the per-user implementation as tuples), ``--repeat``
times, the implementations interleaved; the best pass of each counts (the
machine is shared).

``--flow`` measures the whole flow instead: ``--flow-events`` payments of
bench/traffic.py as a JSONL file, read by the file source in fixed chunks of each
``--chunks`` size (0: the default source settings, 1,000-line chunks that double
up to 20,000 while the source is behind; no stdout sinks), in fresh processes alternating the two
implementations (the per-user one swapped in for ``UserRisk``), ``--repeat``
times; each child reports the CPU seconds of ``run_main`` (start-up excluded).

``--instructions`` counts instructions per event instead (valgrind's callgrind,
deterministic): bench/instruction_counts.py's user-risk stage (1,000-line chunks,
100,000 events of warm-up, 30,000 measured) once with each implementation.

Usage (from the repository root): .venv/bin/python -m bench.user_rules_bench
[--events 200000] [--warm 1000000] [--sizes 16 64 300 1000] [--repeat 3]
[--flow [--flow-events 400000] [--chunks 0 1000 20000]] [--instructions]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.traffic import RATE, REGIONS, T0

USERS = 50_000


def traffic(n: int, seed: int = 7) -> list[tuple]:
    """``n`` events ``(user_id, ts, amount, region, txn)`` shaped as bench/traffic.py's payments."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        user = rng.randrange(USERS)
        amount = round(rng.uniform(5, 400), 2)
        if rng.random() < 0.002:  # a few spikes, so that the alert paths run too
            amount *= 40
        events.append((f"u{user}", T0 + i / RATE, amount, REGIONS[user % 4], f"txn_{i:09d}"))
    return events


def by_shard(events: list[tuple], shards: int) -> list[list[tuple]]:
    out: list[list[tuple]] = [[] for _ in range(shards)]
    for event in events:
        out[zlib.crc32(event[0].encode()) % shards].append(event)
    return out


def warm_states(make: Callable[[Any], Any], warm: list[list[tuple]], size: int) -> list[bytes]:
    """Each shard's snapshot after the warm-up events, so that every timed pass starts alike."""
    risks = [make(None) for _ in warm]
    for risk, events in zip(risks, warm, strict=True):
        for start in range(0, len(events), size):
            risk.process(events[start : start + size])
    return [risk.snapshot() for risk in risks]


def timed_pass(make: Callable[[Any], Any], states: list[bytes], timed: list[list[tuple]], size: int) -> tuple:
    """CPU seconds spent in ``process`` over ``timed``, the shards, and the alerts raised."""
    from operators.records import UserColumns

    risks = [make(state) for state in states]
    alerts: list = []
    spent = 0.0
    for risk, events in zip(risks, timed, strict=True):
        columnar = hasattr(risk, "process_columns")
        for start in range(0, len(events), size):
            # As the flow hands them over: columns (the event-order buffer releases UserColumns),
            # tuples for the per-user implementation.
            batch: Any = events[start : start + size]
            judge = risk.process
            if columnar:
                batch, judge = UserColumns.of_rows(batch), risk.process_columns
            began = time.process_time()
            out = judge(batch)
            spent += time.process_time() - began
            alerts += out
    return spent, risks, alerts


def snapshot_seconds(risks: list) -> tuple[float, int]:
    began = time.process_time()
    blobs = [pickle.dumps(risk.snapshot(), protocol=pickle.HIGHEST_PROTOCOL) for risk in risks]
    return time.process_time() - began, sum(map(len, blobs))


def flow_child(implementation: str, path: str, chunk: int) -> None:
    """One whole flow over ``path`` in this process; prints its CPU seconds as JSON."""
    import operators.users.user_risk as user_risk

    if implementation == "per-user":
        from tests.support.legacy_user_risk import UserRisk as LegacyUserRisk

        user_risk.UserRisk = LegacyUserRisk  # type: ignore[misc,assignment]
    from bytewax.testing import run_main

    from cli.startup import _tune_garbage_collector
    from config import load_settings
    from dataflow import build_flow

    quiet = {"alerts": False, "metrics": False, "dead_letters": False}
    source: dict[str, Any] = {"type": "file", "path": path}
    if chunk:  # 0: the configured chunks (batch_size, doubling up to max_batch_size while behind)
        source.update(batch_size=chunk, max_batch_size=chunk)
    settings = load_settings(environ={}, overrides={"source": source, "sinks": {"stdout": quiet}})
    flow = build_flow(settings)
    _tune_garbage_collector()
    began = time.process_time()
    run_main(flow)
    print(json.dumps({"cpu_s": round(time.process_time() - began, 3)}))


def flow(events: int, chunks: list[int], repeat: int) -> dict:
    """The whole flow (file in, no stdout sinks) with each implementation, alternating fresh processes."""
    import orjson

    from bench.traffic import payment

    folder = Path(tempfile.mkdtemp(prefix="paywatch-user-rules-"))
    path = folder / "events.jsonl"
    rng = random.Random(3)
    with path.open("wb") as out:
        for i in range(events):
            out.write(orjson.dumps(payment(i, rng)) + b"\n")
    report: dict[str, Any] = {"events": events, "chunks": {}}
    for chunk in chunks:
        runs: dict[str, list[float]] = {"per-user": [], "columns": []}
        for _ in range(repeat):
            for name in runs:
                command = [sys.executable, "-m", "bench.user_rules_bench", "--child", name, str(path), str(chunk)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"])
        row = {**runs, "ratio_best": round(min(runs["columns"]) / min(runs["per-user"]), 3)}
        report["chunks"][chunk] = row
        print(json.dumps({chunk: row}), flush=True)
    shutil.rmtree(folder)
    return report


def instructions_child(implementation: str, stage: str, path: str, warm: int, events: int) -> None:
    """bench/instruction_counts.py's stage ``stage`` (``users`` or ``parse_lines``) with either rules."""
    import operators.users.user_risk as user_risk

    if implementation == "per-user":
        from tests.support.legacy_user_risk import UserRisk as LegacyUserRisk

        user_risk.UserRisk = LegacyUserRisk  # type: ignore[misc,assignment]
    from bench.instruction_counts import run_stage

    run_stage(stage, Path(path), warm, events)


def instructions(warm: int, events: int) -> dict:
    """Instructions per event of the user rules, each implementation, under callgrind.

    As bench/instruction_counts.py's ``user-risk rules`` row: the difference between
    its ``users`` and ``parse_lines`` stages (1,000-line chunks: ~16 events per shard
    batch) divided by the events, run once with each implementation.
    """
    import re
    from concurrent.futures import ThreadPoolExecutor

    from bench.instruction_counts import write_events

    folder = Path(tempfile.mkdtemp(prefix="paywatch-user-rules-ir-"))
    path = folder / "events.jsonl"
    write_events(path, warm + events)

    def count(job: tuple[str, str]) -> int:
        out = folder / f"callgrind.{job[0]}.{job[1]}"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m"]
        command += ["bench.user_rules_bench", "--ir-child", *job, str(path), str(warm), str(events)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise SystemExit(f"callgrind {job} failed:\n{done.stderr[-2000:]}")
        return int(found.group(1))

    jobs = [(name, stage) for name in ("per-user", "columns") for stage in ("parse_lines", "users")]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = dict(zip(jobs, pool.map(count, jobs), strict=True))
    report = {
        name: (totals[(name, "users")] - totals[(name, "parse_lines")]) // events for name in ("per-user", "columns")
    }
    shutil.rmtree(folder)
    print(json.dumps({"instructions_per_event": report}))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--warm", type=int, default=1_000_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 300, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flow", action="store_true", help="the whole flow instead (file in), per --chunks")
    parser.add_argument("--flow-events", type=int, default=400_000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 1000, 20000])
    parser.add_argument("--child", nargs=3, metavar=("IMPLEMENTATION", "PATH", "CHUNK"), help=argparse.SUPPRESS)
    parser.add_argument("--instructions", action="store_true", help="instructions per event under callgrind")
    parser.add_argument("--ir-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ir_child:
        name, stage, path, warm, events = args.ir_child
        instructions_child(name, stage, path, int(warm), int(events))
        return {}
    if args.instructions:
        return instructions(100_000, 30_000)
    if args.child:
        flow_child(args.child[0], args.child[1], int(args.child[2]))
        return {}
    if args.flow:
        return flow(args.flow_events, args.chunks, args.repeat)

    from cli.startup import GC_THRESHOLD
    from config import load_settings
    from operators.users.user_risk import UserRisk
    from tests.support.legacy_user_risk import UserRisk as LegacyUserRisk

    settings = load_settings(environ={})
    rules, users = settings.rules, settings.users
    events = traffic(args.warm + args.events)
    # The collector as the flow process sets it (cli/startup.py): the replayed events are
    # frozen, and young collections run every 10,000 allocations, not 700.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    warm, timed = by_shard(events[: args.warm], users.shards), by_shard(events[args.warm :], users.shards)

    def columns(path: int | None = None) -> Callable[[Any], Any]:
        def make(state: Any) -> Any:
            risk = UserRisk(rules, users, state)
            if path is not None:
                risk.scalar_below = path
            return risk

        return make

    makers: dict[str, Callable[[Any], Any]] = {
        "columns": columns(),
        "vector": columns(0),
        "scalar": columns(10**9),
        "per-user": lambda state: LegacyUserRisk(rules, users, state),
    }
    report: dict[str, Any] = {"events": args.events, "warm": args.warm, "shards": users.shards, "sizes": {}}
    kept: dict[str, list] = {}
    warmed = {name: warm_states(makers[name], warm, 300) for name in ("columns", "per-user")}
    states = {name: warmed["per-user" if name == "per-user" else "columns"] for name in makers}
    for size in args.sizes:
        best: dict[str, float] = {}
        alerts: dict[str, list] = {}
        for _ in range(args.repeat):  # interleaved, best of: the machine is shared
            for name, make in makers.items():
                spent, risks, out = timed_pass(make, states[name], timed, size)
                best[name] = min(best.get(name, spent), spent)
                alerts[name] = out
                kept[name] = risks
        row: dict[str, Any] = {f"{name}_us": round(best[name] / args.events * 1e6, 3) for name in makers}
        row["ratio_columns_to_per_user"] = round(best["columns"] / best["per-user"], 3)
        row["alerts"] = len(alerts["per-user"])
        row["same_alerts"] = all(alerts[name] == alerts["per-user"] for name in ("columns", "vector", "scalar"))
        report["sizes"][size] = row
        print(json.dumps({size: row}), flush=True)
    held = sum(len(risk) for risk in kept["columns"])
    for name in ("columns", "per-user"):
        seconds, size = snapshot_seconds(kept[name])
        report[f"snapshot_{name}"] = {"users": held, "ms": round(seconds * 1e3, 1), "bytes": size}
    report["snapshot_ratio"] = round(report["snapshot_columns"]["ms"] / report["snapshot_per-user"]["ms"], 3)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
