"""Versioned snapshots: every stateful step's state carries its format version.

Bytewax pickles whatever a stateful step's ``snapshot()`` returns and hands
it back to the step's builder on resume, with no notion of format. A release
that changes what a step keeps would then misread (or crash on) the state the
previous release wrote, and the only way out was to throw the state away.

So each stateful step declares one :class:`SnapshotFormat` and routes its
snapshots through it::

    FORMAT = SnapshotFormat("region_windows", 2, migrations={1: _add_baselines})

    def snapshot(self):            # what Bytewax stores
        return FORMAT.save(self.state)

    def __init__(self, resume):    # what Bytewax hands back (None on a fresh start)
        state = FORMAT.load(resume) if resume is not None else None

A snapshot is ``(MARK, name, version, state)``. Changing a step's state
means: bump ``version`` and add ``migrations[old_version]``, a pure function
from the old state to the new one (test it on a snapshot written by the old
code). States written before this module existed carry no envelope and read
as version 0. A snapshot with no migration path (too old, or written by a
newer release) raises :class:`SnapshotError` naming the step and what to do;
the start-up check (``connectors/recovery_upgrade.py``) loads one snapshot of
every step before the flow runs, so that error stops the start instead of a
worker.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

MARK = "paywatch-snapshot"
UNVERSIONED = 0
"""The version of a state written before snapshots carried one."""


class SnapshotError(ValueError):
    """A snapshot this release cannot read; the message names the step and what to do."""


def envelope(snapshot: Any) -> Optional[tuple[str, int, Any]]:
    """``(name, version, state)`` of a versioned snapshot; None for an unversioned one."""
    if type(snapshot) is tuple and len(snapshot) == 4 and snapshot[0] == MARK:
        return snapshot[1], snapshot[2], snapshot[3]
    return None


@dataclass(frozen=True)
class SnapshotFormat:
    """The snapshot format of one stateful step.

    :arg name: the step's stable name (written into every snapshot).
    :arg version: the format this release writes.
    :arg migrations: ``{v: f}`` where ``f`` turns a version ``v`` state into
        a version ``v + 1`` state. ``{0: ...}`` reads states written before
        versioning.
    """

    name: str
    version: int
    migrations: Mapping[int, Callable[[Any], Any]] = field(default_factory=dict)

    def save(self, state: Any) -> tuple[str, str, int, Any]:
        """The snapshot to hand Bytewax: the state with this format's name and version."""
        return (MARK, self.name, self.version, state)

    def oldest_readable(self) -> int:
        """The oldest version a chain of migrations brings up to :attr:`version`."""
        oldest = self.version
        while oldest - 1 in self.migrations:
            oldest -= 1
        return oldest

    def load(self, snapshot: Any) -> Any:
        """The state in the current format, migrating an older snapshot step by step.

        :raises SnapshotError: another step's snapshot, a newer format, or
            an older one with no migration path.
        """
        found = envelope(snapshot)
        if found is None:
            version, state = UNVERSIONED, snapshot
        else:
            name, version, state = found
            if name != self.name:
                raise SnapshotError(
                    f"step {self.name}: the recovery store holds a {name} snapshot under this step's id. "
                    "Move the recovery directory aside to start afresh."
                )
        if version > self.version:
            raise SnapshotError(
                f"step {self.name}: snapshot format version {version} was written by a newer release "
                f"(this one reads versions {self.oldest_readable()} to {self.version}). "
                "Run that release (or a later one) on this recovery directory, "
                "or move the directory aside to start afresh."
            )
        while version < self.version:
            migrate = self.migrations.get(version)
            if migrate is None:
                raise SnapshotError(
                    f"step {self.name}: snapshot format version {version} is too old for this release "
                    f"(it reads versions {self.oldest_readable()} to {self.version}). "
                    "Upgrade through the releases in between (stop, upgrade, start each once, "
                    "letting each take a snapshot), or move the recovery directory aside to start afresh."
                )
            state = migrate(state)
            version += 1
        return state


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large state is unpickled.

    Unpickling a million users' lists allocates tens of millions of
    containers; each young collection then walks them again, and the restore
    spent about three quarters of its CPU in the collector
    (bench/state_size_bench.py, docs/performance.md). Nothing unpickled is
    garbage, so pausing loses nothing; the collector resumes afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def unchanged(state: Any) -> Any:
    """Migration for a version that only added the envelope: the state itself did not change."""
    return state
