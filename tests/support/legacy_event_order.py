"""The event-order buffer as it was before it held column blocks (issue 14): runs of event tuples.

Kept as the reference the column-block :class:`operators.users.event_order.EventTimeBuffer` is
compared with, release for release (the events, their order, what is held and forced), and as
the writer of format 3 held state that the format 4 migration must read. A verbatim copy of
``operators/users/event_order.py`` at commit 854d023 below this docstring.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from heapq import heappop, heappush
from operator import itemgetter
from typing import Optional

# Events are tuples whose field 1 is the event time and field 4 the transaction id
# (the user rules' ``(user_id, ts, amount, region, transaction_id)``).
_TS = itemgetter(1)
ORDER = itemgetter(1, 4)


class EventTimeBuffer:
    """Held events, released in event-time order once the frontier passes them.

    :arg max_held: how many events may wait; more forces the oldest out.
    :arg state: what :meth:`state` returned, to resume.
    """

    def __init__(self, max_held: int, state: Optional[tuple] = None) -> None:
        self.max_held = max(1, max_held)
        # (oldest event time, sequence number, events sorted by time); the
        # sequence number keeps heapq from ever comparing two runs.
        self.runs: list[tuple[float, int, list]] = []
        self.held = 0
        self.forced = 0
        self._seq = 0
        if state is not None:
            self.runs, self.held, self.forced, self._seq = state

    def state(self) -> tuple:
        """What a snapshot must hold: the runs as they are (lists of small tuples)."""
        return (self.runs, self.held, self.forced, self._seq)

    def __len__(self) -> int:
        return self.held

    def add(self, events: list[tuple]) -> None:
        """Hold one chunk's events (any order)."""
        if not events:
            return
        run = sorted(events, key=_TS)
        self._push(run)
        self.held += len(run)

    def release(self, frontier: float) -> list[tuple]:
        """Every held event older than ``frontier`` (plus any the cap forces out), in ORDER."""
        out: list[tuple] = []
        self._release_before(frontier, out)
        while self.held > self.max_held:
            # The oldest run goes whole, and everything before its end with it,
            # so that what is released early still leaves in order.
            forced_frontier = math.nextafter(self.runs[0][2][-1][1], math.inf)
            before = len(out)
            self._release_before(forced_frontier, out)
            self.forced += len(out) - before
        # Runs are sorted by time alone (a float key costs a fifth of a tuple key);
        # only equal times need the transaction id, and they are rare.
        out.sort(key=_TS)
        if len(set(map(_TS, out))) != len(out):
            out.sort(key=ORDER)
        return out

    def _release_before(self, frontier: float, out: list[tuple]) -> None:
        runs = self.runs
        while runs and runs[0][0] < frontier:
            run = heappop(runs)[2]
            if run[-1][1] < frontier:
                out.extend(run)
                self.held -= len(run)
                continue
            cut = bisect_left(run, frontier, key=_TS)
            out.extend(run[:cut])
            self.held -= cut
            self._push(run[cut:])

    def _push(self, run: list) -> None:
        self._seq += 1
        heappush(self.runs, (run[0][1], self._seq, run))
