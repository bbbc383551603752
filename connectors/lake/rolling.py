"""Where raw and enriched files start and end, the same on every run.

One :class:`Roller` per (zone, source partition). Rows arrive in source
order; each row belongs to an event-time hour. A file holds rows of one hour,
and ends before the first row of that hour at which either

- the file would exceed ``target_bytes`` (uncompressed row bytes), or
- the partition's *event-time* clock (the highest event time of an accepted
  event seen so far on this partition, in this zone) is ``max_age`` seconds
  past the clock when the file opened.

Both rules depend only on the sequence of rows, never on how the rows were
cut into chunks or on the wall clock, so a replay after a crash cuts the
same files and names them the same (first and last position), and its
uploads overwrite the objects written before the crash. A file whose age has
passed is also closed at the end of a chunk even if no more rows of its hour
come: the next such row would have started a new file anyway, so the content
is the same, it just becomes visible sooner.

Pure: numpy over whole chunks (one pass per cut, and cuts are rare), no I/O.
Each open file may have an :class:`Encoding` (connectors/lake/encoder.py) that
the roller hands every segment as it joins the file and tells when the file
ends, so the file is encoded while it is open; encodings are never in a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from connectors.lake.tables import RowSource

NO_TIME = -np.inf


#: Rows of one source: all of them (None) or these row indices, in order.
Segment = tuple[RowSource, Optional[np.ndarray]]


class Encoding(Protocol):
    """What a roller tells the encoding of an open file (connectors.lake.encoder.FileEncoder)."""

    def add(self, segment: Segment) -> None: ...

    def finish(self) -> None: ...


@dataclass
class OpenFile:
    """A file being filled: the rows so far and what decides its end."""

    opened: float
    first: str
    last: str = ""
    rows: int = 0
    size: int = 0
    segments: list[Segment] = field(default_factory=list)
    encoding: Optional[Encoding] = None


@dataclass(frozen=True)
class FinishedFile:
    """A complete file, ready to encode and upload."""

    zone: str
    hour: int
    part: str
    first: str
    last: str
    rows: int
    segments: tuple[Segment, ...]
    encoding: Optional[Encoding] = field(default=None, compare=False)


# (clock, {hour: (opened, first, last, rows, size, segments)})
RollerState = tuple[float, dict[int, tuple[float, str, str, int, int, tuple[Segment, ...]]]]


def _first_known(clock: np.ndarray, start: int) -> float:
    """The clock when a file opens at row ``start``: the first event time known at or
    after it (a partition's first lines may have none; the age starts with the first)."""
    known = np.flatnonzero(clock[start:] > NO_TIME)
    return float(clock[start + known[0]]) if len(known) else NO_TIME


class Roller:
    """The open files of one zone of one source partition.

    :arg zone, part: named in every finished file.
    :arg target_bytes: a file ends before the row that would take it past this.
    :arg max_age: seconds of event time a file stays open.
    :arg state: from :meth:`snapshot`, after a resume.
    :arg encoding: makes the encoding of a file when it opens (None: files are encoded when sent).
        Restored open files get one too, and are handed their rows from the snapshot again.
    """

    def __init__(
        self,
        zone: str,
        part: str,
        target_bytes: int,
        max_age: float,
        state: Optional[RollerState] = None,
        encoding: Optional[Callable[[], Encoding]] = None,
    ) -> None:
        self.zone = zone
        self.part = part
        self._target = target_bytes
        self._max_age = max_age
        self._clock = NO_TIME
        self._open: dict[int, OpenFile] = {}
        self._encoding = encoding
        if state is not None:
            self._clock, files = state
            self._open = {
                hour: OpenFile(opened, first, last, rows, size, list(segments), self._encoder(segments))
                for hour, (opened, first, last, rows, size, segments) in sorted(files.items())
            }

    def _encoder(self, segments: tuple[Segment, ...] = ()) -> Optional[Encoding]:
        if self._encoding is None:
            return None
        encoder = self._encoding()
        for source, index in segments:
            encoder.add((source, index))
        return encoder

    @property
    def buffered_rows(self) -> int:
        return sum(f.rows for f in self._open.values())

    def add(
        self,
        source: RowSource,
        hours: np.ndarray,
        times: np.ndarray,
        sizes: np.ndarray,
        position: Callable[[int], Any],
    ) -> list[FinishedFile]:
        """Add one chunk's rows; return the files that ended.

        :arg source: the rows, in source order (built into a table only when a file is encoded).
        :arg hours: each row's epoch hour (its partition folder).
        :arg times: each row's event time in epoch seconds (NaN: none; it
            does not move the clock).
        :arg sizes: each row's size in bytes (uncompressed estimate).
        :arg position: the source position of row ``i``, for file names.
        """
        n = len(hours)
        if n == 0:
            return []
        known = np.where(np.isnan(times), NO_TIME, times)
        clock = np.maximum.accumulate(np.maximum(known, self._clock))
        for current in self._open.values():
            if current.opened == NO_TIME:
                current.opened = _first_known(clock, 0)
        finished: list[FinishedFile] = []
        if hours.min() == hours.max():  # the usual chunk: one hour, no sort
            self._add_hour(int(hours[0]), np.arange(n), source, True, clock, sizes, position, finished)
        else:
            order = np.argsort(hours, kind="stable")
            bounds = np.flatnonzero(np.diff(hours[order])) + 1
            for group in np.split(order, bounds):
                self._add_hour(int(hours[group[0]]), group, source, False, clock, sizes, position, finished)
        self._clock = float(clock[-1])
        for hour in [h for h, f in self._open.items() if self._clock - f.opened >= self._max_age]:
            finished.append(self._finish(hour))
        return finished

    def _add_hour(
        self,
        hour: int,
        rows: np.ndarray,
        source: RowSource,
        whole: bool,
        clock: np.ndarray,
        sizes: np.ndarray,
        position: Callable[[int], Any],
        finished: list[FinishedFile],
    ) -> None:
        row_clock = clock if whole else clock[rows]
        row_size = sizes if whole else sizes[rows]
        start = 0
        while start < len(rows):
            current = self._open.get(hour)
            if current is None:
                first = int(rows[start])
                current = self._open[hour] = OpenFile(
                    _first_known(clock, first), str(position(first)), encoding=self._encoder()
                )
            with np.errstate(invalid="ignore"):  # -inf - -inf: no event time yet, no age
                aged = row_clock[start:] - current.opened >= self._max_age
            cut = aged | (current.size + np.cumsum(row_size[start:]) > self._target)
            if current.rows == 0:
                cut[0] = False
            take = int(np.argmax(cut)) if cut.any() else len(cut)
            if take:
                segment = rows[start : start + take]
                all_rows = whole and take == len(rows)
                current.segments.append((source, None if all_rows else segment))
                if current.encoding is not None:
                    current.encoding.add(current.segments[-1])
                current.rows += take
                current.size += int(row_size[start : start + take].sum())
                current.last = str(position(int(segment[-1])))
            start += take
            if start < len(rows):
                finished.append(self._finish(hour))

    def _finish(self, hour: int) -> FinishedFile:
        done = self._open.pop(hour)
        if done.encoding is not None:
            done.encoding.finish()
        return FinishedFile(
            self.zone, hour, self.part, done.first, done.last, done.rows, tuple(done.segments), done.encoding
        )

    def flush(self) -> list[FinishedFile]:
        """Every open file, finished (end of a bounded input)."""
        return [self._finish(hour) for hour in sorted(self._open)]

    def snapshot(self) -> RollerState:
        return (
            self._clock,
            {h: (f.opened, f.first, f.last, f.rows, f.size, tuple(f.segments)) for h, f in self._open.items()},
        )
