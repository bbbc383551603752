"""Upgrades keep state: resume from a recovery directory written by the previous release.

``tests/data/recovery_v0/recovery_v0.tar.gz`` holds a flow's recovery
directory, its output so far and its input, as left by a crash of the release
before versioned snapshots (unversioned states, position-based sink ids,
stateful steps outside composite steps; ``make_fixture.py`` says how it was
made). Today's flow, started with the same command, must rename the old step
ids, read every old snapshot and finish with exactly the output of a run that
never stopped.
"""

from __future__ import annotations

import pickle
import sqlite3
import tarfile
from pathlib import Path

import orjson
import pytest

from connectors.recovery_upgrade import upgrade_recovery
from dataflow import build_flow
from operators.state.snapshots import SnapshotError, SnapshotFormat, envelope, unchanged
from tests.support.config import settings_for, write_config
from tests.support.flow import run_flow
from tests.support.output import jsonl_lines

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "recovery_v0" / "recovery_v0.tar.gz"
EVENTS = 6_000


def _config(tmp: Path, out: str) -> Path:
    """The fixture's settings (``make_fixture.SETTINGS``), writing JSONL to ``out``."""
    return write_config(tmp / f"{out}.yaml", out, source={"type": "file", "path": "events.jsonl", "batch_size": 500})


def _run(tmp: Path, config: Path, recovery: bool) -> str:
    done = run_flow(config, recovery=Path("recovery") if recovery else None, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _transactions(out: Path) -> list[tuple]:
    """Each scored transaction's identity and verdict.

    Not the whole line: ``processed_at`` is the wall clock of the run that
    scored it, and a release may add fields (lines written before the crash
    have the old release's).
    """
    fields = ("transaction_id", "user_id", "timestamp", "amount", "region", "category", "fraud_score", "fraud_status")
    return sorted(
        tuple(record.get(f) for f in fields) for record in map(orjson.loads, jsonl_lines(out, "transactions"))
    )


def _minutes(out: Path) -> list[dict]:
    """Per-minute records without ``partial``, which this release added to the format."""
    return [{k: v for k, v in orjson.loads(line).items() if k != "partial"} for line in jsonl_lines(out, "metrics")]


def _step_ids(recovery: Path) -> set[str]:
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        return {row[0] for row in db.execute("SELECT DISTINCT step_id FROM snaps")}


@pytest.mark.integration
def test_resume_from_the_previous_releases_recovery_directory(tmp_path):
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    before = {kind: jsonl_lines(tmp_path / "out", kind) for kind in ("metrics", "dead_letter", "transactions")}
    assert 0 < len(before["transactions"]) < EVENTS  # the fixture really crashed part-way
    assert "paywatch.metrics_out_0_jsonlsink" in _step_ids(tmp_path / "recovery")

    _run(tmp_path, _config(tmp_path, "ref"), recovery=False)
    banner = _run(tmp_path, _config(tmp_path, "out"), recovery=True)

    assert "metrics_out_0_jsonlsink -> paywatch.metrics_to_jsonl" in banner
    assert "WARNING" not in banner  # every old state found its step
    ids = _step_ids(tmp_path / "recovery")
    assert {"paywatch.region_windows.windows", "paywatch.user_risk.risk", "paywatch.metrics_to_jsonl"} <= ids
    assert not any("_out_" in step_id for step_id in ids)

    ref, out = tmp_path / "ref", tmp_path / "out"
    for kind in ("dead_letter", "alerts"):
        assert jsonl_lines(out, kind) == jsonl_lines(ref, kind), kind  # every alert, nothing twice
    # Every window, nothing twice; minutes written before the crash lack the field this release added.
    assert _minutes(out) == _minutes(ref)
    assert len(jsonl_lines(ref, "metrics")) >= 20
    assert _transactions(out) == _transactions(ref)  # none lost, none written twice
    assert len({record[0] for record in _transactions(out)}) == EVENTS  # every payment once
    for kind, lines in before.items():
        assert set(lines) <= set(jsonl_lines(out, kind)), kind  # output from before the crash kept

    # The resumed run wrote today's format: versioned snapshots.
    with sqlite3.connect(tmp_path / "recovery" / "part-0.sqlite3") as db:
        blob = db.execute(
            "SELECT ser_change FROM snaps WHERE step_id = 'paywatch.region_windows.windows' "
            "ORDER BY snap_epoch DESC LIMIT 1"
        ).fetchone()[0]
    found = envelope(pickle.loads(blob))
    assert found is not None and found[:2] == ("region_windows", 2)


def test_a_format_migrates_step_by_step_and_refuses_what_it_cannot_read():
    fmt = SnapshotFormat("demo", 3, {1: lambda s: s + ["v2"], 2: lambda s: s + ["v3"]})
    assert fmt.load(("paywatch-snapshot", "demo", 1, ["v1"])) == ["v1", "v2", "v3"]
    assert fmt.load(fmt.save(["now"])) == ["now"]
    with pytest.raises(SnapshotError, match=r"step demo: snapshot format version 0 is too old .* versions 1 to 3"):
        fmt.load(["unversioned"])
    with pytest.raises(SnapshotError, match=r"step demo: snapshot format version 4 was written by a newer release"):
        fmt.load(("paywatch-snapshot", "demo", 4, []))
    with pytest.raises(SnapshotError, match="holds a other snapshot"):
        fmt.load(("paywatch-snapshot", "other", 3, []))
    assert SnapshotFormat("first", 1, {0: unchanged}).load(42) == 42  # written before versioning


@pytest.mark.integration
def test_a_snapshot_from_a_newer_release_stops_the_start_naming_the_step(tmp_path):
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    with sqlite3.connect(tmp_path / "recovery" / "part-0.sqlite3") as db:
        db.execute(
            "UPDATE snaps SET ser_change = ? WHERE step_id = 'paywatch.region_windows'",
            (pickle.dumps(("paywatch-snapshot", "region_windows", 99, None)),),
        )
    done = run_flow(_config(tmp_path, "out"), recovery=Path("recovery"), cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "cannot start: step region_windows: snapshot format version 99 was written by a newer release" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_state_no_step_reads_is_reported_by_name_and_kept(tmp_path, monkeypatch):
    """The JSONL sinks turned off at the upgrade: their state is renamed, kept, and named in a warning."""
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    monkeypatch.chdir(tmp_path)
    settings = settings_for(source={"type": "file", "path": "events.jsonl", "batch_size": 500})
    upgrade = upgrade_recovery(tmp_path / "recovery", build_flow(settings))
    assert upgrade.unused == [f"paywatch.{kind}_to_jsonl" for kind in ("dead_letters", "metrics", "transactions")]
    assert any("paywatch.metrics_to_jsonl" in warning for warning in upgrade.warnings())
    assert {"paywatch.source", "paywatch.region_windows.windows", "paywatch.user_risk.risk"} <= set(upgrade.checked)
    assert "paywatch.metrics_to_jsonl" in _step_ids(tmp_path / "recovery")  # kept for when the sink returns
