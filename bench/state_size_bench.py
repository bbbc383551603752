"""User state at scale: memory, snapshot size, snapshot time and restore time.

What a platform team sizes pods and recovery volumes by. For each user count
(default 100,000 and 1,000,000), a fresh subprocess builds the user step's
state exactly as the flow does (``users.shards`` :class:`UserShard` objects,
fed ``(user_id, ts, amount, region, txn)`` events through ``add`` in
event-time order, then ``flush``), then measures:

- RSS growth of the process while the state was built (``VmRSS``; the
  state plus allocator overhead: what a pod must hold);
- one snapshot of every shard as Bytewax takes it: the step's
  ``snapshot()`` (the shard's own pickling, wrapped in its
  :class:`~operators.state.snapshots.SnapshotFormat`) then ``pickle.dumps``
  (Bytewax's serialisation), total bytes and seconds;
- the restore of every shard from those bytes (``pickle.loads``, the
  format's ``load``, a new :class:`UserShard`), seconds.

Wall and CPU seconds are both reported (the machine may be shared). The
garbage collector is tuned as the flow process tunes it (``cli/startup.py``).

Each user gets ``--events-per-user`` payments, one per 600 s round of event
time, so its amount history and last region are filled and nobody expires
(``users.idle_seconds`` is 3600). The events are synthetic tuples, not parsed
lines: parsing is measured elsewhere (pipeline_bench.py), and feeding the
shards directly keeps a million users within a minute of CPU.

Usage (from the repository root): .venv/bin/python -m bench.state_size_bench [--users 100000 1000000]
[--events-per-user 3] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import pickle
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
T0 = 1752087600.0
ROUND_SECONDS = 600
CHUNK = 20_000


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(n_users: int, events_per_user: int, repeat: int = 1) -> dict:
    """Build the state of ``n_users`` users in this process and time its snapshot and restore
    (the best of ``repeat`` of each)."""
    from cli.startup import GC_THRESHOLD
    from config import load_settings
    from operators.records import UserColumns
    from operators.state.snapshots import collector_paused
    from operators.steps import USER_RISK_FORMAT
    from operators.users.user_risk import UserEvents, UserShard

    settings = load_settings(environ={}, overrides={"users": {"max_users": max(n_users, 1_000_000)}})
    rules, users, lateness = settings.rules, settings.users, settings.windows.allowed_lateness_seconds
    n_shards = users.shards
    user_ids = [f"u{i:07d}" for i in range(n_users)]
    shard_of = [zlib.crc32(u.encode()) % n_shards for u in user_ids]
    # The collector as the flow process sets it (cli/startup.py): a young collection every
    # 10,000 allocations, not 700. Unpickling a million users' lists allocates tens of millions
    # of containers, and with the default threshold the collections alone take most of the restore.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    rss_before = _rss_mb()
    shards = [UserShard(rules, users, lateness) for _ in range(n_shards)]
    step = ROUND_SECONDS / n_users
    index = 0
    for r in range(events_per_user):
        base = T0 + r * ROUND_SECONDS
        for start in range(0, n_users, CHUNK):
            by_shard: list[list[tuple]] = [[] for _ in range(n_shards)]
            for u in range(start, min(start + CHUNK, n_users)):
                ts = base + u * step
                by_shard[shard_of[u]].append(
                    (user_ids[u], ts, float(20 + (u * 7 + r * 13) % 400), REGIONS[u % 4], f"t{index}")
                )
                index += 1
            watermark = base + min(start + CHUNK, n_users) * step
            for shard, events in zip(shards, by_shard, strict=True):
                columns = UserColumns.of_rows(events) if events else None
                shard.add([UserEvents("p0", 1, watermark, False, False, columns)], 0.0)
    for shard in shards:
        shard.add([UserEvents("p0", 1, None, True, False, None)], 0.0)
        shard.flush()
    held = sum(len(shard.risk) for shard in shards)
    rss_state = _rss_mb() - rss_before

    # Best of ``repeat``: one snapshot's CPU moves by 2x between runs on the shared machine.
    snapshot_s = snapshot_cpu = restore_s = restore_cpu = math.inf
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        blobs = [pickle.dumps(USER_RISK_FORMAT.save(shard.snapshot())) for shard in shards]
        snapshot_s = min(snapshot_s, time.perf_counter() - started)
        snapshot_cpu = min(snapshot_cpu, time.process_time() - cpu)
        snapshot_bytes = sum(len(blob) for blob in blobs)

        started, cpu = time.perf_counter(), time.process_time()
        with collector_paused():  # as the user step restores (operators/steps.py)
            restored = [UserShard(rules, users, lateness, USER_RISK_FORMAT.load(pickle.loads(blob))) for blob in blobs]
        restore_s, restore_cpu = (
            min(restore_s, time.perf_counter() - started),
            min(restore_cpu, time.process_time() - cpu),
        )
        assert sum(len(shard.risk) for shard in restored) == held
        del blobs, restored  # one restored copy at a time beside the state
    return {
        "users": n_users,
        "users_held": held,
        "events": index,
        "shards": n_shards,
        "rss_state_mb": round(rss_state, 1),
        "rss_per_user_bytes": round(rss_state * 1024 * 1024 / n_users),
        "snapshot_mb": round(snapshot_bytes / 1e6, 1),
        "snapshot_bytes_per_user": round(snapshot_bytes / n_users),
        "snapshot_seconds": round(snapshot_s, 2),
        "snapshot_cpu_seconds": round(snapshot_cpu, 2),
        "restore_seconds": round(restore_s, 2),
        "restore_cpu_seconds": round(restore_cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--events-per-user", type=int, default=3)
    parser.add_argument(
        "--repeat", type=int, default=1, help="snapshots and restores of the state; the best is reported"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: measure one user count
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.events_per_user, args.repeat)))
        return
    for n in args.users:
        done = subprocess.run(
            [sys.executable, "-m", "bench.state_size_bench", "--one", str(n), "--events-per-user"]
            + [str(args.events_per_user), "--repeat", str(args.repeat)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
