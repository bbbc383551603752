"""Alert and metric files: event-time buckets, de-duplicated by record id.

The alert and per-minute streams are small (a few records a minute) and come
from several upstream steps, so their order at the sink can differ between a
run and its replay. Files are therefore cut by *content*, not by arrival:
each record goes to the bucket of ``bucket_seconds`` of event time that holds
it (buckets never cross an hour), a bucket keeps at most one row per record id
(alert ids and (region, minute) are deterministic), and a bucket is written
once, when the sink's event-time progress is ``bucket_seconds`` past its end.
Its object name is the bucket's start and the sink partition, so a replay
rewrites the same object with the same rows.

A record that arrives for a bucket already written (more than
``bucket_seconds`` behind the progress) goes to an extra object named after
its bucket and a checksum of the late batch's ids; after a crash such a
record can appear twice (readers de-duplicate on the id, see docs/lake.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional
from zlib import crc32

# (progress, {bucket_start: {record id: row}})
BucketState = tuple[float, dict[int, dict[str, dict[str, Any]]]]


@dataclass(frozen=True)
class BucketFile:
    """A bucket's rows (sorted by id), ready to encode and upload."""

    zone: str
    start: int
    suffix: str
    rows: list[dict[str, Any]]


class Buckets:
    """The open buckets of one zone in one sink partition."""

    def __init__(self, zone: str, bucket_seconds: int, state: Optional[BucketState] = None) -> None:
        self.zone = zone
        self._seconds = bucket_seconds
        self._progress, self._open = state if state is not None else (float("-inf"), {})

    def _bucket(self, t: float) -> int:
        hour = int(t // 3600) * 3600
        return hour + int((t - hour) // self._seconds) * self._seconds

    def _end(self, start: int) -> int:
        return min(start + self._seconds, (start // 3600 + 1) * 3600)

    def add(self, records: Iterable[tuple[str, float, dict[str, Any]]]) -> list[BucketFile]:
        """Add ``(id, event time, row)`` records; return the buckets that closed and late extras."""
        late: dict[int, dict[str, dict[str, Any]]] = {}
        for record_id, t, row in records:
            start = self._bucket(t)
            if start not in self._open and self._end(start) + self._seconds <= self._progress:
                late.setdefault(start, {})[record_id] = row
                continue
            self._open.setdefault(start, {})[record_id] = row
            if t > self._progress:
                self._progress = t
        out = [
            BucketFile(self.zone, start, f"-late-{crc32(''.join(sorted(rows)).encode()):08x}", _sorted(rows))
            for start, rows in sorted(late.items())
        ]
        closed = [s for s in self._open if self._end(s) + self._seconds <= self._progress]
        out.extend(BucketFile(self.zone, s, "", _sorted(self._open.pop(s))) for s in sorted(closed))
        return out

    def advance(self, t: float) -> list[BucketFile]:
        """Move the progress to event time ``t`` without a record (the minute stream's clock),
        so a bucket closes in a quiet stretch instead of waiting for the next record."""
        if t > self._progress:
            self._progress = t
        return self.add(())

    def flush(self) -> list[BucketFile]:
        """Every open bucket (end of a bounded input)."""
        out = [BucketFile(self.zone, s, "", _sorted(self._open[s])) for s in sorted(self._open)]
        self._open.clear()
        return out

    def snapshot(self) -> BucketState:
        return self._progress, {s: dict(rows) for s, rows in self._open.items()}


def _sorted(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [rows[k] for k in sorted(rows)]
