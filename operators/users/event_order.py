"""Hold events until the event-time frontier passes them, then hand them over in event-time order.

This is what Flink's keyed event-time timers do for a keyed process function,
done per chunk instead of per event: a consumer that must see a key's events
in event-time order (the user rules) adds each chunk's events here and
releases, whenever its frontier (see :mod:`operators.partition_clock`)
advances, every held event older than the frontier, sorted by
``(event time, transaction id)``. The transaction id breaks ties so that
events with the same timestamp are judged in the same order whatever
partitions they came through.

Events are held as column blocks (:class:`~operators.records.UserColumns`):
one block per added chunk slice, sorted by time, in a heap ordered by each
block's oldest event. A release pops only the blocks that start before the
frontier and cuts the one that straddles it with one ``searchsorted``, then
merges what it took with one stable numpy argsort of the times (skipped when
they are already in order, as one in-order partition's are), so its cost is
a few numpy calls per block touched plus the events released, never Python
per event, and not the number held: a partition far ahead of the others (a
backfill, a replay after an outage) holds many blocks, and each chunk of the
slow one touches only the few it releases.

The number held is capped (``max_held``): beyond it the frontier is forced
forward past the oldest blocks, releasing them in order before the slowest
partition has caught up. Events the slow partition later delivers behind that
point are judged on arrival, out of order; ``forced`` counts the events
released early so that it shows.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush
from itertools import compress, islice
from operator import eq, le
from typing import Optional

import numpy as np

from operators.records import TIME, UserColumns

_SMALL = 64
"""Blocks up to this many events are checked in Python (one ``tolist``, C-level maps): a numpy
call costs about a microsecond whatever its length, several times what 16 events cost so."""


def in_time_order(block: UserColumns) -> UserColumns:
    """``block`` sorted by event time (stable: equal times keep their order); itself when it already is."""
    times = block.numbers[TIME]
    n = len(times)
    if n < 2:
        return block
    if n <= _SMALL:
        listed = times.tolist()
        if all(map(le, listed, islice(listed, 1, None))):
            return block
    elif not (times[1:] < times[:-1]).any():
        return block
    return block.take(np.argsort(times, kind="stable"))


def by_transaction_on_ties(batch: UserColumns) -> UserColumns:
    """``batch`` (sorted by time) with each run of equal times sorted by transaction id (stable)."""
    times = batch.numbers[TIME]
    n = len(times)
    if n < 2:
        return batch
    if n <= _SMALL:
        listed = times.tolist()
        ties = list(compress(range(n - 1), map(eq, listed, islice(listed, 1, None))))
    else:
        ties = np.flatnonzero(times[1:] == times[:-1]).tolist()
    if not ties:
        return batch
    txns = batch.txns
    # Equal times are common (millisecond timestamps, thousands of events a second), and their
    # transaction ids usually already in order: one C-level pass over the tied pairs says so.
    if all(map(le, map(txns.__getitem__, ties), map(txns.__getitem__, map((1).__add__, ties)))):
        return batch
    # Runs of equal times: a tie at i joins i and i + 1; consecutive ties make one run.
    order = list(range(n))
    first = last = ties[0]
    for i in [*ties[1:], -2]:  # -2: a sentinel that ends the last run
        if i == last + 1:
            last = i
            continue
        run = order[first : last + 2]
        run.sort(key=txns.__getitem__)
        order[first : last + 2] = run
        first = last = i
    return batch.take(np.array(order, dtype=np.intp))


class EventTimeBuffer:
    """Held events, released in event-time order once the frontier passes them.

    :arg max_held: how many events may wait; more forces the oldest out.
    :arg state: what :meth:`state` returned, to resume.
    """

    def __init__(self, max_held: int, state: Optional[tuple] = None) -> None:
        self.max_held = max(1, max_held)
        # (oldest event time, sequence number, block sorted by time); the
        # sequence number keeps heapq from ever comparing two blocks.
        self.runs: list[tuple[float, int, UserColumns]] = []
        self.held = 0
        self.forced = 0
        self._seq = 0
        if state is not None:
            self.runs, self.held, self.forced, self._seq = state

    def state(self) -> tuple:
        """What a snapshot must hold: the blocks as they are (each pickles as lists and one bytes object)."""
        return (self.runs, self.held, self.forced, self._seq)

    def __len__(self) -> int:
        return self.held

    def add(self, events: UserColumns) -> None:
        """Hold one chunk's events (any order)."""
        if not len(events):
            return
        block = in_time_order(events)
        self._push(block)
        self.held += len(block)

    def release(self, frontier: float) -> Optional[UserColumns]:
        """Every held event older than ``frontier`` (plus any the cap forces out), in
        ``(time, transaction id)`` order; None when there is none."""
        out: list[UserColumns] = []
        self._release_before(frontier, out)
        while self.held > self.max_held:
            # The oldest block goes whole, and everything before its end with it,
            # so that what is released early still leaves in order.
            oldest = self.runs[0][2]
            forced_frontier = math.nextafter(float(oldest.numbers[TIME, -1]), math.inf)
            before = sum(map(len, out))
            self._release_before(forced_frontier, out)
            self.forced += sum(map(len, out)) - before
        if not out:
            return None
        batch = UserColumns.concat(out)
        if len(out) > 1:
            batch = in_time_order(batch)  # a merge of sorted blocks; stable, so ties keep heap order
        return by_transaction_on_ties(batch)

    def _release_before(self, frontier: float, out: list[UserColumns]) -> None:
        runs = self.runs
        while runs and runs[0][0] < frontier:
            block = heappop(runs)[2]
            times = block.numbers[TIME]
            if times[-1] < frontier:
                out.append(block)
                self.held -= len(block)
                continue
            cut = int(np.searchsorted(times, frontier, side="left"))
            out.append(block.cut(0, cut))
            self.held -= cut
            self._push(block.cut(cut, len(block)))

    def _push(self, block: UserColumns) -> None:
        self._seq += 1
        heappush(self.runs, (float(block.numbers[TIME, 0]), self._seq, block))
