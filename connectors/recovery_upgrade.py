"""Bring a recovery directory written by an earlier release up to this flow, at start.

Three things, before Bytewax opens the directory:

1. **Step ids that changed.** Bytewax finds a step's state by its step id.
   Earlier releases named sink steps by their position in a list
   (``metrics_out_1_jsonlsink``), and the stateful region and user steps sat
   directly under the flow before they moved into composite steps. Their
   stored state is renamed to today's ids (``metrics_to_jsonl``,
   ``region_windows.windows``), so an upgrade keeps it.
2. **State no step reads.** A step whose state is in the store but which is
   not in the flow (a sink turned off, a step removed) is reported by name:
   Bytewax would ignore it silently. The state stays, unused, so turning the
   sink back on resumes it.
3. **Formats.** One committed snapshot of every stateful step is loaded with
   the step's :class:`~operators.state.snapshots.SnapshotFormat` (migrations
   included), so a snapshot this release cannot read stops the start with a
   message naming the step and what to do, not a worker in the middle of a
   resume.

This is the one place that writes Bytewax's recovery store (the renames of
step 1, each partition in one SQLite transaction, idempotent, so processes
starting together on a shared volume agree); the schema is Bytewax 0.21's.
"""

from __future__ import annotations

import pickle
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink

from connectors.preflight import StartError
from connectors.recovery_store import RecoveryStoreError, partition_files, read_recovery_store
from operators.state.snapshots import SnapshotError, SnapshotFormat

_MOVED_STEPS = {"region_windows": "region_windows.windows", "user_risk": "user_risk.risk"}
"""Stateful steps that moved into composite steps: old id -> new id (under the flow id)."""

_POSITIONAL_SINK = re.compile(r"^(alerts|metrics|transactions|dead_letters)_out_\d+_([a-z]+)$")
_SINK_KINDS = {
    "stdoutsink": "stdout",
    "jsonlsink": "jsonl",
    "cloudwatchsink": "cloudwatch",
    "snssink": "sns",
    "dynamodbsink": "dynamodb",
    "deadlettersink": "dead_letter",
}
"""Class names in the position-based sink ids -> the sink's kind in today's ids."""


@dataclass
class RecoveryUpgrade:
    """What :func:`upgrade_recovery` did and found."""

    renamed: dict[str, str] = field(default_factory=dict)
    """Old step id -> new step id, for every step whose stored state was renamed."""
    unused: list[str] = field(default_factory=list)
    """Step ids with state in the store that no step of this flow reads."""
    checked: list[str] = field(default_factory=list)
    """Step ids whose stored snapshot was loaded with the step's format."""

    def warnings(self) -> list[str]:
        """One line per unused step state, for the start banner and the log."""
        return [
            f"recovery state of step {step_id} is in the recovery directory but no step of this flow reads it "
            "(a sink turned off or a step removed?); it is kept unused and resumes if the step returns."
            for step_id in self.unused
        ]


def current_step_id(flow_id: str, stored: str) -> Optional[str]:
    """Today's id for a step id an earlier release stored; None if it never changed."""
    prefix = flow_id + "."
    if not stored.startswith(prefix):
        return None
    local = stored[len(prefix) :]
    if local in _MOVED_STEPS:
        return prefix + _MOVED_STEPS[local]
    match = _POSITIONAL_SINK.match(local)
    if match and match.group(2) in _SINK_KINDS:
        return f"{prefix}{match.group(1)}_to_{_SINK_KINDS[match.group(2)]}"
    return None


def stateful_steps(flow: Dataflow) -> dict[str, Optional[SnapshotFormat]]:
    """Every step of ``flow`` that keeps recovery state, with its snapshot format if it declares one.

    Inputs with a partitioned source, outputs with a partitioned sink and
    ``stateful_batch`` steps (under which every stateful operator of Bytewax
    is built) keep state.
    """
    found: dict[str, Optional[SnapshotFormat]] = {}
    for step in _steps(flow):
        source = getattr(step, "source", None)
        sink = getattr(step, "sink", None)
        builder = getattr(step, "builder", None)
        if source is not None and hasattr(source, "list_parts"):
            found[step.step_id] = getattr(source, "snapshot_format", None)
        elif isinstance(sink, FixedPartitionedSink):
            found[step.step_id] = getattr(sink, "snapshot_format", None)
        elif builder is not None and type(step).__name__ == "stateful_batch":
            found[step.step_id] = getattr(builder, "snapshot_format", None)
    return found


def source_step_id(flow: Dataflow) -> str:
    """The id of the flow's input step, under which Bytewax keeps source positions.

    :raises StartError: the flow has no partitioned input.
    """
    for step in _steps(flow):
        if isinstance(getattr(step, "source", None), FixedPartitionedSource):
            return str(step.step_id)
    raise StartError("the flow has no partitioned input step")


def _steps(flow: Dataflow) -> Iterator[Any]:
    """Every step of ``flow``, composite steps' inner steps included, in declaration order."""
    pending: list[Any] = list(flow.substeps)
    while pending:
        step = pending.pop(0)
        yield step
        pending.extend(getattr(step, "substeps", []))


def _rename(file: Path, flow_id: str) -> dict[str, str]:
    """Rename old step ids in one partition whose new id it does not hold yet.

    Also for steps not in this flow (a sink turned off): their state then
    waits under today's id and resumes when the sink is turned back on.
    """
    renamed: dict[str, str] = {}
    db = sqlite3.connect(file, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        stored = {row[0] for row in db.execute("SELECT DISTINCT step_id FROM snaps")}
        for old in sorted(stored):
            new = current_step_id(flow_id, old)
            if new is not None and new not in stored:
                db.execute("UPDATE snaps SET step_id = ? WHERE step_id = ?", (new, old))
                renamed[old] = new
        db.execute("COMMIT")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    return renamed


def _sample(files: list[Path], step_id: str, epoch: int) -> Optional[bytes]:
    """One committed, non-empty snapshot of ``step_id`` (the smallest: a format check needs no more)."""
    for file in files:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT ser_change FROM snaps WHERE step_id = ? AND snap_epoch <= ? AND ser_change IS NOT NULL "
                "ORDER BY length(ser_change) LIMIT 1",
                (step_id, epoch),
            ).fetchone()
        if row is not None:
            return bytes(row[0])
    return None


def upgrade_recovery(directory: str | Path, flow: Dataflow) -> RecoveryUpgrade:
    """Rename moved step ids, find unused state and check every stored format.

    :raises StartError: a stored snapshot this release cannot read (the
        message names the step and what to do), or the store cannot be read.
    """
    files = partition_files(directory)
    steps = stateful_steps(flow)
    upgrade = RecoveryUpgrade()
    try:
        for file in files:
            upgrade.renamed.update(_rename(file, flow.flow_id))
        store = read_recovery_store(directory)
    except (sqlite3.Error, RecoveryStoreError) as exc:
        raise StartError(f"recovery directory {directory} cannot be upgraded: {exc}") from None
    stored, epoch = set(store.state_keys), store.commit_epoch
    upgrade.unused = sorted(stored - set(steps))
    for step_id, snapshot_format in sorted(steps.items()):
        if snapshot_format is None or step_id not in stored:
            continue
        blob = _sample(files, step_id, epoch)
        if blob is None:
            continue
        try:
            snapshot_format.load(pickle.loads(blob))
        except SnapshotError as exc:
            raise StartError(f"{exc} (step id {step_id} in recovery directory {directory})") from None
        except Exception as exc:  # noqa: BLE001 - a state that does not even unpickle is unreadable too
            raise StartError(
                f"step {snapshot_format.name}: its snapshot in recovery directory {directory} cannot be read "
                f"by this release ({type(exc).__name__}: {exc}). Run the release that wrote it, "
                "or move the directory aside to start afresh."
            ) from None
        upgrade.checked.append(step_id)
    return upgrade
