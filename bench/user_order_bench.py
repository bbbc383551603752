"""User rules in event-time order: throughput, alert latency and memory under skew.

Before and after in one run on one tree: ``before`` swaps the flow's user step
for the arrival-order one of commit b14f580 (its ``operators/user_risk.py``,
read with ``git show`` and imported as ``old_user_risk``, and its wiring: each
shard gets the events of each chunk and judges them as they come); ``after`` is
the tree as it is. Each measurement runs the real flow (``dataflow.build_flow``
under ``bytewax.testing.run_main``) in a fresh subprocess, so peak RSS is that
run's alone:

- ``throughput``: N in-order events (one file, 50,000 users) at full speed,
  sinks for alerts only; events per wall second and per CPU second.
- ``latency``: a paced source (two partitions read at once, events stamped
  with the wall clock as they are read, 2,000 events/s) with an attacker
  starting every 0.5 s (11 payments 0.2 s apart: an amount spike, a region
  change, the 11th trips velocity); per user alert, the wall time it reached
  the sink minus its event's time (= when the event arrived). Attacks stop
  15 s before the end, so the end-of-input flush is not counted.
- ``skew``: the same N events as two files, either each holding a
  contiguous ten minutes of event time (one partition ten minutes ahead of
  the other all the way) or split round-robin (no skew); peak RSS of the run.
  ``held`` feeds the skewed files' parsed chunks to the user shards directly and
  reports the most events held at once and their shards' snapshot size then.

Usage: .venv/bin/python -m bench.user_order_bench [--events 300000] [--seconds 30]
       (``--mode`` runs one measurement and prints its JSON.)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import orjson

ROOT = Path(__file__).resolve().parent.parent

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
T0 = 1752087600
SKEW_SECONDS = 600
USER_TYPES = {"VELOCITY", "AMOUNT_SPIKE", "IMPOSSIBLE_TRAVEL"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _line(txn: str, user: str, ts: float, amount: float, region: str) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": txn,
            "user_id": user,
            "timestamp": _iso(ts),
            "payment_status": "SUCCESS",
            "region": region,
            "amount": amount,
            "currency": "USD",
            "merchant_id": "m1",
            "merchant_name": "Merchant",
            "device": "mobile",
        }
    )


def generate(directory: Path, n: int) -> dict[str, str]:
    """In-order events over 2 * SKEW_SECONDS of event time, in three layouts; returns their globs."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    rate = n / (2 * SKEW_SECONDS)
    lines = []
    for i in range(n):
        user = rng.randrange(50_000)
        lines.append(_line(f"txn_{i:09d}", f"u{user}", T0 + i / rate, round(rng.uniform(5, 400), 2), REGIONS[user % 4]))
    layouts = {"one": [lines], "round_robin": [lines[0::2], lines[1::2]], "skewed": [lines[: n // 2], lines[n // 2 :]]}
    globs = {}
    for name, parts in layouts.items():
        for index, part in enumerate(parts):
            (directory / f"{name}-{index}.jsonl").write_bytes(b"\n".join(part) + b"\n")
        globs[name] = str(directory / f"{name}-*.jsonl")
    return globs


def _settings(pattern: Optional[str], users: Optional[dict] = None) -> Any:
    from config import load_settings

    overrides: dict[str, Any] = {"sinks": {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}}}
    if pattern is not None:
        overrides["source"] = {"type": "file", "path": pattern, "batch_size": 1000}
    if users:
        overrides["users"] = users
    return load_settings(environ={}, overrides=overrides)


def _timed_sink(seen: list) -> Any:
    """A dynamic sink that notes the wall time at which each alert arrives."""
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class _Part(StatelessSinkPartition):
        def write_batch(self, items: list) -> None:
            now = time.time()
            seen.extend((now, alert) for _key, alert in items)

    class _Sink(DynamicSink):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Part:
            return _Part()

    return _Sink()


BEFORE_COMMIT = "b14f580"


def _use_arrival_order() -> None:
    """Put the arrival-order user step of BEFORE_COMMIT into the flow (the "before" variant)."""
    import importlib.util
    import tempfile

    import bytewax.operators as op
    from bytewax.dataflow import operator
    from bytewax.operators import StatefulBatchLogic

    import dataflow

    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:operators/user_risk.py"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_user_risk.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_user_risk", path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)

    class _Logic(StatefulBatchLogic):
        def __init__(self, settings: Any, state: Any) -> None:
            self.risk = old.UserRisk(settings.rules, settings.users, state)

        def on_batch(self, values: list) -> tuple[list, bool]:
            out: list = []
            for events in values:
                out.extend(self.risk.process(events.rows()))  # that release took tuples
            return out, len(self.risk) == 0

        def snapshot(self) -> bytes:
            return self.risk.snapshot()

    @operator
    def user_risk(step_id: str, chunks: Any, settings: Any, *_reference: Any) -> Any:
        batches = op.flat_map(
            "user_shards", chunks, lambda chunk: [(str(s), events) for s, events in chunk.user_events.items()]
        )
        alerts = op.stateful_batch("risk", batches, lambda state: _Logic(settings, state))
        return op.map("drop_shard_key", alerts, lambda keyed: keyed[1])

    dataflow.user_risk = user_risk  # type: ignore[assignment]


def _run(settings: Any, source: Any = None) -> tuple[list, float, float]:
    from bytewax.testing import run_main

    from cli.startup import _tune_garbage_collector
    from connectors.sinks.outputs import Outputs
    from dataflow import build_flow

    seen: list = []
    flow = build_flow(settings, source=source, outputs=Outputs(alerts=[_timed_sink(seen)]))
    _tune_garbage_collector()  # as `python -m bytewax.run dataflow` does
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    run_main(flow)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return seen, wall, usage.ru_utime + usage.ru_stime - cpu


def _peak_rss_mb() -> float:
    """This process's own high-water mark (``ru_maxrss`` survives exec: it would be the parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mode_throughput(pattern: str, n: int, users: Optional[dict]) -> dict:
    seen, wall, cpu = _run(_settings(pattern, users))
    return {
        "events": n,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "events_per_s": round(n / wall),
        "events_per_cpu_s": round(n / cpu),
        "user_alerts": sum(1 for _, a in seen if a["type"] in USER_TYPES),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _paced_source(seconds: float, rate: int) -> Any:
    """Two partitions of live, in-order traffic stamped with the wall clock, plus attackers."""
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

    from operators.records import RawChunk

    tick = 0.05
    began = time.time()
    attacks_until = began + seconds - 15

    class _Part(StatefulSourcePartition):
        def __init__(self, index: int) -> None:
            self.index = index
            self.name = f"paced:{index}"
            self.next_at = began
            self.last = began
            self.sent = 0
            self.finished = False
            self.rng = random.Random(index)

        def next_batch(self) -> list:
            if self.finished:
                raise StopIteration
            now = time.time()
            if now < self.next_at:
                return []
            self.next_at += tick
            lines = []
            for k in range(int(rate * tick / 2)):
                user = self.rng.randrange(50_000)
                txn = f"n{self.index}_{self.sent}_{k}"
                lines.append(_line(txn, f"u{user}", now, round(self.rng.uniform(5, 400), 2), REGIONS[user % 4]))
            # Attacker a starts at a/2 s and pays every 0.2 s for 2 s (amount spike on the
            # 6th, region change from the 8th, velocity on the 11th); payment j goes
            # through partition j % 2, so every attacker's events cross partitions.
            low, high = self.last - began, now - began
            for a in range(max(0, math.floor((low - 2.0) * 2)), math.floor(high * 2) + 1):
                if began + a / 2 > attacks_until:
                    break
                for j in range(self.index, 11, 2):
                    offset = a / 2 + j * 0.2
                    if low < offset <= high:
                        amount = 400.0 if j == 5 else 20.0
                        region = "EU-WEST" if j >= 7 else "US-EAST"
                        lines.append(_line(f"a{a}_{j}", f"attacker{a}", began + offset, amount, region))
            self.last = now
            self.sent += 1
            self.finished = now - began >= seconds
            return [RawChunk(self.name, 2, lines, self.name, self.sent * 1000, done=self.finished)]

        def next_awake(self) -> Optional[datetime]:
            return None if self.finished else datetime.fromtimestamp(self.next_at, UTC)

        def snapshot(self) -> None:
            return None

    class _Source(FixedPartitionedSource):
        def list_parts(self) -> list[str]:
            return ["paced:0", "paced:1"]

        def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Part:
            return _Part(int(for_part.split(":")[1]))

    return _Source()


def mode_latency(seconds: float, rate: int, users: Optional[dict]) -> dict:
    seen, wall, cpu = _run(_settings(None, users), source=_paced_source(seconds, rate))
    delays = []
    for arrived, alert in seen:
        if alert["type"] in USER_TYPES:
            event = datetime.fromisoformat(alert["event_time"].replace("Z", "+00:00")).timestamp()
            delays.append(arrived - event)
    delays.sort()
    pick = (lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))], 3)) if delays else (lambda q: None)
    return {
        "seconds": seconds,
        "rate": rate,
        "user_alerts": len(delays),
        "by_type": {t: sum(1 for _, a in seen if a["type"] == t) for t in sorted(USER_TYPES)},
        "latency_s": {
            "median": round(statistics.median(delays), 3) if delays else None,
            "p95": pick(0.95),
            "max": round(delays[-1], 3) if delays else None,
        },
        "cpu_s": round(cpu, 2),
    }


def mode_held(pattern: str) -> dict:
    """Feed the skewed files' chunks straight to the user shards: most held, snapshot size then."""
    import glob

    from operators.parse import ChunkParser
    from operators.records import RawChunk
    from operators.users.user_risk import UserEvents, UserShard

    settings = _settings(pattern)
    parser = ChunkParser(settings, transaction_lines=False)
    files = sorted(glob.glob(pattern))
    readers = [open(path, "rb") for path in files]  # noqa: SIM115
    partition_times: list[Any] = [None] * len(files)  # each partition's event-time state
    shards = [
        UserShard(settings.rules, settings.users, settings.windows.allowed_lateness_seconds)
        for _ in range(settings.users.shards)
    ]
    most, snapshot_bytes, done = 0, 0, [False] * len(files)
    while not all(done):
        for index, reader in enumerate(readers):
            if done[index]:
                continue
            lines = [reader.readline().rstrip(b"\n") for _ in range(1000)]
            lines = [line for line in lines if line]
            done[index] = len(lines) < 1000
            chunk = RawChunk(f"f{index}", len(files), lines, done=done[index])
            partition_times[index], parsed = parser.parse(partition_times[index], chunk)
            for shard_index, shard in enumerate(shards):
                events = parsed.user_events.get(shard_index)
                shard.add([UserEvents(parsed.part, parsed.n_parts, parsed.watermark, parsed.done, False, events)], 0.0)
        held = sum(len(shard.held) for shard in shards)
        if held > most:
            most = held
            snapshot_bytes = sum(len(shard.snapshot()) for shard in shards)
    for reader in readers:
        reader.close()
    return {"most_held_events": most, "snapshot_mb_then": round(snapshot_bytes / 1e6, 1)}


def _child(args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.user_order_bench", *args], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/paywatch-user-order-bench"))
    parser.add_argument("--mode", choices=("throughput", "latency", "skew", "held"))
    parser.add_argument("--pattern")
    parser.add_argument("--users", help="JSON overrides of the users: section")
    parser.add_argument("--variant", choices=("before", "after"), default="after")
    args = parser.parse_args()
    users = json.loads(args.users) if args.users else None
    if args.variant == "before":
        _use_arrival_order()
    if args.mode in ("throughput", "skew"):
        print(json.dumps(mode_throughput(args.pattern, args.events, users)))
        return
    if args.mode == "latency":
        print(json.dumps(mode_latency(args.seconds, args.rate, users)))
        return
    if args.mode == "held":
        print(json.dumps(mode_held(args.pattern)))
        return
    globs = generate(args.data, args.events)
    common = ["--events", str(args.events)]
    paced = ["--mode", "latency", "--seconds", str(args.seconds), "--rate", str(args.rate)]
    zero = ["--users", json.dumps({"order_lateness_seconds": 0})]
    results: dict[str, Any] = {}
    # Alternating before and after, so that other load on the machine falls on both.
    for name, args_ in (
        ("throughput_in_order", ["--mode", "throughput", "--pattern", globs["one"], *common]),
        ("skew_10min_two_files", ["--mode", "skew", "--pattern", globs["skewed"], *common]),
        ("no_skew_two_files", ["--mode", "skew", "--pattern", globs["round_robin"], *common]),
        ("latency_paced", paced),
    ):
        results[name] = {
            "before": _child([*args_, "--variant", "before"]),
            "after": _child([*args_, "--variant", "after"]),
        }
    results["throughput_in_order"]["after_order_lateness_0"] = _child(
        ["--mode", "throughput", "--pattern", globs["one"], *common, *zero]
    )
    results["latency_paced"]["after_order_lateness_0"] = _child([*paced, *zero])
    results["held_10min_skew"] = _child(["--mode", "held", "--pattern", globs["skewed"]])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
