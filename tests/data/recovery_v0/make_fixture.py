"""How ``tests/data/recovery_v0/recovery_v0.tar.gz`` was made (provenance; run once, on commit 84482ca).

A flow with recovery reads ``events.jsonl`` (the ``mixed`` simulator scenario
plus undecodable lines), crashes after ``CRASH_AFTER_BATCHES`` source batches,
and leaves its recovery directory (``recovery/``) and the JSONL output written
before the crash (``out/``), archived with the input. Snapshot formats and step ids are those of the
release before versioned snapshots: position-based sink step ids
(``metrics_out_0_jsonlsink``) and unversioned states.

``tests/operations/test_snapshot_upgrade.py`` resumes from a copy of it with today's code
and compares with a run that never stopped. Re-running this script on a later
release would write that release's formats, not the fixture's: do not.

Usage (from the repository root): ``python tests/data/recovery_v0/make_fixture.py``
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from datetime import timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from config.loader import load_settings  # noqa: E402
from connectors.simulator.source import iter_events  # noqa: E402
from connectors.sources.file import JsonlFileSource  # noqa: E402
from dataflow import build_flow  # noqa: E402

EVENTS = 6_000
BATCH = 500
CRASH_AFTER_BATCHES = 7
SETTINGS = {
    "source": {"type": "file", "path": "events.jsonl", "batch_size": BATCH},
    "simulator": {
        "scenario": "mixed",
        "events": EVENTS,
        "rate": 0,
        "users": 600,
        "seed": 7,
        "start": "2025-07-09T19:00:00Z",
        "event_rate": EVENTS / 360,
    },
    "sinks": {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}, "jsonl": {"dir": "out"}},
}


class _Crash(StatefulSourcePartition):
    def __init__(self, inner: StatefulSourcePartition) -> None:
        self._inner = inner
        self._batches = 0

    def next_batch(self):
        self._batches += 1
        if self._batches > CRASH_AFTER_BATCHES:
            raise RuntimeError("fixture: simulated crash")
        return self._inner.next_batch()

    def snapshot(self):
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _CrashingSource(FixedPartitionedSource):
    def __init__(self, inner: JsonlFileSource) -> None:
        self._inner = inner

    def list_parts(self):
        return self._inner.list_parts()

    def build_part(self, step_id, for_part, resume_state):
        return _Crash(self._inner.build_part(step_id, for_part, resume_state))


def _events_file() -> None:
    settings = load_settings(overrides=SETTINGS)
    lines = []
    for i, (_key, value) in enumerate(iter_events(settings.simulator)):
        lines.append(value)
        if i % 997 == 0:
            lines.append(b'{"transaction_id": %d, "broken' % i)
    Path("events.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def main() -> None:
    os.chdir(HERE)
    for name in ("recovery", "out"):
        shutil.rmtree(name, ignore_errors=True)
    _events_file()
    Path("recovery").mkdir()
    init_db_dir(Path("recovery"), 1)
    settings = load_settings(overrides=SETTINGS)
    flow = build_flow(settings, source=_CrashingSource(JsonlFileSource("events.jsonl", BATCH)))
    try:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig("recovery"))
    except Exception:  # noqa: BLE001 - the simulated crash, wrapped by Bytewax
        pass
    else:
        raise SystemExit("the flow did not crash")
    with tarfile.open("recovery_v0.tar.gz", "w:gz") as tar:
        for name in ("events.jsonl", "recovery", "out"):
            tar.add(name)
    for name in ("recovery", "out"):
        shutil.rmtree(name)
    os.remove("events.jsonl")


if __name__ == "__main__":
    main()
