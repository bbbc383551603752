"""The event-time frontier of a partitioned stream: the minimum over its partitions.

Every parsed chunk carries its partition's watermark (newest event time seen
on that partition minus the allowed lateness; parse dead-letters anything
older as ``late``). So no event still to come can be older than the minimum
of those watermarks over every partition: that minimum is the point up to
which a consumer has seen everything it will ever see (Flink's rule).

A stale value is always safe: watermarks only grow, so a consumer that has
not heard from a partition for a while merely waits longer. Two exceptions
keep a stalled partition from holding everything forever, the same as in the
region windows: a partition that has ended no longer counts, and one marked
idle by its source (no data for ``source.idle_partition_seconds``) does not
hold the frontier back; when every live partition is idle, event time is
assumed to move on with the wall clock from the newest idle watermark.
Until every partition has been heard from, the frontier stays where it was:
an unheard partition may still deliver old events.
"""

from __future__ import annotations

import math
from typing import Optional

_WATERMARK = 0
_DONE = 1
_IDLE = 2
_LAST_WALL = 3


class PartitionClock:
    """Per-partition watermarks and their minimum.

    State is plain data (a dict of small lists, an int and a float) so that it
    pickles cheaply into the owner's snapshot: see :meth:`state`.
    """

    def __init__(self, state: Optional[tuple] = None) -> None:
        # part -> [watermark or None, done, idle, wall time of the last report]
        self.parts: dict[str, list] = {}
        self.n_parts = 0
        self.frontier = -math.inf
        if state is not None:
            self.parts, self.n_parts, self.frontier = state

    def state(self) -> tuple:
        """What a snapshot must hold (restored by passing it to the constructor)."""
        return (self.parts, self.n_parts, self.frontier)

    def report(self, part: str, n_parts: int, watermark: Optional[float], done: bool, idle: bool, now: float) -> None:
        """Record one chunk's view of its partition."""
        entry = self.parts.get(part)
        if entry is None:
            entry = self.parts[part] = [None, False, False, now]
        if watermark is not None and (entry[_WATERMARK] is None or watermark > entry[_WATERMARK]):
            entry[_WATERMARK] = watermark
        entry[_DONE] = entry[_DONE] or done
        entry[_IDLE] = idle
        entry[_LAST_WALL] = now
        if n_parts > self.n_parts:
            self.n_parts = n_parts

    def advance(self, now: float) -> float:
        """The frontier after the reports so far (never moves backwards)."""
        if not self.parts or len(self.parts) < self.n_parts:
            return self.frontier
        active: list[float] = []
        idle: list[float] = []
        for watermark, done, is_idle, last_wall in self.parts.values():
            if done:
                continue
            if is_idle:
                if watermark is not None:
                    idle.append(watermark + max(0.0, now - last_wall))
                continue
            if watermark is None:
                return self.frontier
            active.append(watermark)
        if active:
            candidate = min(active)
        elif idle:
            candidate = max(idle)
        else:
            candidate = math.inf  # every partition has ended
        if candidate > self.frontier:
            self.frontier = candidate
        return self.frontier
