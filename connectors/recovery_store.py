"""Read-only view of a Bytewax recovery directory (SQLite partitions).

The start-up checks need to know, before Bytewax opens the directory, whether
it exists, whether it holds a snapshot to resume from, and which source
partitions that snapshot belongs to: Bytewax itself panics with a Rust
backtrace on a missing directory or on state keys its source no longer lists.
The schema read here is Bytewax 0.21's (tables ``parts``, ``commits``,
``snaps``); nothing is ever written.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path


class RecoveryStoreError(RuntimeError):
    """The directory cannot be used as a Bytewax recovery directory."""


@dataclass
class RecoveryStore:
    """What a recovery directory holds.

    :ivar partitions: number of recovery partitions (``python -m bytewax.recovery DIR N``).
    :ivar commit_epoch: the epoch a resume starts from (0: nothing committed yet).
    :ivar state_keys: per step id, the state keys with a committed snapshot.
    """

    directory: Path
    partitions: int
    commit_epoch: int
    state_keys: dict[str, set[str]] = field(default_factory=dict)

    @property
    def resumes(self) -> bool:
        """A run started on this directory continues from a snapshot."""
        return self.commit_epoch > 0 and bool(self.state_keys)


def partition_files(directory: str | Path) -> list[Path]:
    """The directory's recovery partitions, in order."""
    return sorted(Path(directory).glob("part-*.sqlite3"))


def read_recovery_store(directory: str | Path) -> RecoveryStore:
    """Read every partition of ``directory``.

    :raises RecoveryStoreError: it is missing, holds no partition, or a
        partition cannot be read.
    """
    path = Path(directory)
    if not path.is_dir():
        raise RecoveryStoreError(f"recovery directory {path} does not exist")
    files = partition_files(path)
    if not files:
        raise RecoveryStoreError(f"recovery directory {path} holds no recovery partitions (part-*.sqlite3)")
    partitions = 0
    commit_epochs: list[int] = []
    keys: dict[str, set[str]] = {}
    for file in files:
        try:
            with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
                row = db.execute("SELECT part_count FROM parts").fetchone()
                partitions = max(partitions, row[0] if row else 0)
                commit = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0] or 0
                commit_epochs.append(commit)
                for step_id, state_key in db.execute(
                    "SELECT DISTINCT step_id, state_key FROM snaps WHERE snap_epoch <= ?", (commit,)
                ):
                    keys.setdefault(step_id, set()).add(state_key)
        except sqlite3.Error as exc:
            raise RecoveryStoreError(f"recovery partition {file} cannot be read: {exc}") from None
    if len(files) < partitions:
        raise RecoveryStoreError(
            f"recovery directory {path} holds {len(files)} of its {partitions} partitions (part-*.sqlite3)"
        )
    # A resume starts from the epoch every partition has committed.
    return RecoveryStore(path, partitions, min(commit_epochs), keys)
