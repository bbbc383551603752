"""Two Bytewax processes on loopback, laid out as the Helm chart lays out pods.

The chart gives every pod the same ReadWriteMany volume (EFS) holding all
recovery partitions, created once by ``python -m bytewax.recovery``; Bytewax
0.21 only needs the cluster as a whole to see every partition (each worker
opens the ones it is assigned). Here both processes get one shared recovery
directory the same way, run ``python -m bytewax.run dataflow -i N -a ...``
on paced, seeded simulator traffic, one is SIGKILLed mid-stream (its peer then fails, as a pod's peers do), both
are started again, and the per-minute results must equal a one-process run
exactly. Meanwhile both processes' metrics endpoints are polled.
"""

from __future__ import annotations

import http.client
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.config import write_config
from tests.support.flow import flow_env, run_flow, start_flow
from tests.support.output import jsonl_lines, jsonl_records
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 120_000
PARTITIONS = 8
#: Wall-clock pace of the clustered runs: ~4 s, so the kill lands mid-stream.
RATE = 30_000

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _config(tmp: Path, out: str, rate: int) -> Path:
    """Bounded, seeded simulator traffic: 2 minutes of event time in 8 partitions.

    Every event is a pure function of its index (connectors/simulator/source.py), so
    the stream is the same whatever the pace, the process count or the resume
    point; only ``rate`` (wall-clock pacing) differs between runs.
    """
    simulator = {
        "scenario": "normal",
        "events": EVENTS,
        "rate": rate,
        "event_rate": 1000,
        "seed": 7,
        "partitions": PARTITIONS,
        "start": "2025-07-09T19:00:00Z",
    }
    return write_config(tmp / f"{out}.yaml", out, source={"type": "simulator", "batch_size": 500}, simulator=simulator)


def _minutes(directory: Path) -> list[dict]:
    return sorted(jsonl_records(directory, "metrics"), key=lambda r: (r["window_start"], r["region"]))


def _committed_epoch(recovery: Path) -> int:
    """The epoch every recovery partition has committed (0 before the first snapshot)."""
    epochs = []
    for part in sorted(recovery.glob("part-*.sqlite3")):
        try:
            with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=0.2)) as db:
                row = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()
        except sqlite3.OperationalError:
            return 0
        epochs.append(row[0] or 0)
    return min(epochs, default=0)


class _Cluster:
    """Two processes as pods 0 and 1: same hostfile order, one shared recovery dir."""

    def __init__(self, tmp: Path, config: Path, recovery: Path) -> None:
        self.tmp, self.config, self.recovery = tmp, config, recovery
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []

    def start(self, run: str) -> None:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
        self.ports = [free_port(), free_port()]
        self.procs = [
            start_flow(
                self.config,
                "-i",
                str(i),
                "-a",
                addresses,
                recovery=self.recovery,
                cwd=self.tmp,
                log=self.tmp / f"{run}-{i}.log",
                env=flow_env(self.config, PAYWATCH__METRICS__PORT=str(self.ports[i])),
            )
            for i in range(2)
        ]

    def log(self, run: str) -> str:
        return "\n".join((self.tmp / f"{run}-{i}.log").read_text()[-2000:] for i in range(2))


def _valid_events(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except (OSError, http.client.HTTPException):  # not up yet, or exiting mid-answer
        return None
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "paywatch_events_total" and sample.labels.get("outcome") == "valid"
    ]
    # No sample: nothing parsed yet, or a process exiting mid-scrape closed the
    # answer early without an error. Either way, no reading.
    return sum(values) if values else None


def test_two_processes_sigkill_and_resume_give_the_one_process_minutes(tmp_path):
    # Reference: one process, no recovery, as fast as it goes.
    ref = run_flow(_config(tmp_path, "ref", rate=0), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    expected = _minutes(tmp_path / "ref")
    total = len(jsonl_lines(tmp_path / "ref", "transactions"))
    assert len(expected) >= 2 * 4 and sum(r["count"] for r in expected) == total > EVENTS * 0.9

    # The recovery volume, created once as pod 0's init container does.
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "4"], check=True, timeout=60)
    out = tmp_path / "out"
    cluster = _Cluster(tmp_path, _config(tmp_path, "out", rate=RATE), recovery)

    # Run 1: poll both endpoints until each process reports events it parsed,
    # then SIGKILL process 1 as soon as every recovery partition has a snapshot.
    cluster.start("run1")
    deadline = time.monotonic() + 60
    first_run = [0.0, 0.0]
    while min(first_run) == 0 or _committed_epoch(recovery) < 2:
        assert time.monotonic() < deadline, cluster.log("run1")
        assert all(p.poll() is None for p in cluster.procs), "finished before the kill: " + cluster.log("run1")
        first_run = [_valid_events(port) or 0.0 for port in cluster.ports]
        time.sleep(0.01)
    cluster.procs[1].send_signal(signal.SIGKILL)
    assert cluster.procs[1].wait(10) == -signal.SIGKILL
    # Its peer loses the connection and exits with an error by itself: on
    # Kubernetes every pod then restarts, and the cluster forms again.
    assert cluster.procs[0].wait(20) != 0
    written_before_resume = len(jsonl_lines(out, "transactions"))
    assert 0 < written_before_resume < total

    # Run 2: both "pods" restart on the same volume and resume; poll both endpoints.
    cluster.start("run2")
    seen = [0.0, 0.0]
    while any(p.poll() is None for p in cluster.procs):
        for i, port in enumerate(cluster.ports):
            if cluster.procs[i].poll() is None:
                value = _valid_events(port)
                if value is not None:
                    assert value >= seen[i]  # counters only go up
                    seen[i] = value
        time.sleep(0.02)
    assert [p.returncode for p in cluster.procs] == [0, 0], cluster.log("run2")

    assert _minutes(out) == expected
    assert len(jsonl_lines(out, "transactions")) == total  # the resume truncated, so no duplicates
    assert len(jsonl_lines(out, "dead_letter")) == len(jsonl_lines(tmp_path / "ref", "dead_letter"))
    # Run 2 resumed from the snapshot: together its processes parsed fewer than all events.
    assert sum(seen) < total, seen
    assert all(v > 0 for v in first_run) and sum(first_run) < total, first_run
