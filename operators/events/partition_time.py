"""Event time of one source partition: its watermark, robust to one wrong clock.

Lateness is judged per source partition, against that partition's own
progress: an event is late when it is more than the allowed lateness behind
the partition's *high mark*. A partition's order is the only order that is
the same on every run, so the verdict does not depend on how fast other
partitions are read or how many workers run.

The high mark is the highest event time seen, with one exception that keeps
a single producer with a wrong clock from silencing the rest of its
partition: an event more than ``windows.max_skew_seconds`` ahead of the high
mark does not move it on its own. It is accepted and counted in its own
window, but the high mark follows it only when ``windows.skew_confirm_events``
such events arrive in a row (from the earliest of them): a
real jump in the data, such as a partition resuming after a pause, is
followed after that many events, an outlier (or a burst of fewer) never. An
event that moves the high mark normally ends the run.

:class:`PartitionTime` is the state (snapshotted with the source position),
:meth:`EventTimeRule.observe` the per-event reference, and
:meth:`EventTimeRule.observe_many` the same rule over a chunk's column of
event times: vectorised where no event is far ahead (the high mark before
each event is then a running maximum), one event at a time otherwise.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np

from config.settings import WindowSettings


class PartitionTime(NamedTuple):
    """A partition's event-time state.

    :ivar high: the high mark (-inf before the first event).
    :ivar ahead: how many events in a row were more than the skew limit ahead of ``high``.
    :ivar ahead_min: the earliest of those events (meaningful when ``ahead`` > 0).
    """

    high: float = -math.inf
    ahead: int = 0
    ahead_min: float = math.inf

    @classmethod
    def restore(cls, state: Union[PartitionTime, float, None]) -> PartitionTime:
        """The state from a snapshot; older snapshots held the highest event time alone."""
        if state is None:
            return cls()
        if isinstance(state, tuple):
            return cls(*state)
        return cls(float(state))

    def watermark(self, lateness: float) -> Optional[float]:
        """Event time below which an event is late, or None before the first event."""
        return None if self.high == -math.inf else self.high - lateness


class EventTimeRule:
    """Lateness and skew settings, and the two steps of the high mark."""

    __slots__ = ("lateness", "max_skew", "confirm")

    def __init__(self, windows: WindowSettings) -> None:
        self.lateness = windows.allowed_lateness_seconds
        self.max_skew = windows.max_skew_seconds
        self.confirm = windows.skew_confirm_events

    def skew_limit(self, high: float) -> float:
        """Event time beyond which an event is 'ahead' rather than progress."""
        return math.inf if high == -math.inf else high + self.max_skew

    def ahead(self, state: PartitionTime, ts: float) -> PartitionTime:
        """One more event far ahead of the high mark: follow the run once it is confirmed."""
        ahead_min = ts if state.ahead == 0 or ts < state.ahead_min else state.ahead_min
        if state.ahead + 1 >= self.confirm:
            # Confirmed: from the run's earliest event, plus this one as ordinary progress.
            return PartitionTime(ts if ts <= ahead_min + self.max_skew else ahead_min)
        return PartitionTime(state.high, state.ahead + 1, ahead_min)

    def observe(self, state: PartitionTime, ts: float) -> tuple[PartitionTime, bool]:
        """The reference, one event at a time: the new state and whether the event is late."""
        if ts < state.high - self.lateness:
            return state, True
        if ts <= state.high:
            return state, False
        if ts <= self.skew_limit(state.high):
            return PartitionTime(ts), False
        return self.ahead(state, ts), False

    def observe_many(self, state: PartitionTime, times: np.ndarray) -> tuple[PartitionTime, np.ndarray, np.ndarray]:
        """:meth:`observe` over a column of event times, in order.

        :returns: the new state, which events are late, and the horizon each
            one was judged against (``high - lateness`` before it; read only
            for the late ones, whose dead letters quote it).

        An event that is late or not ahead of the high mark leaves it where it
        is, and an event ahead of it within the skew limit sets it to its own
        time: so while no event is beyond the skew limit and no run of such
        events is pending, the high mark before event ``k`` is the running
        maximum of the state's mark and the times before ``k`` (a late time is
        below the mark, so counting it changes nothing). A chunk where that
        does not hold takes the exact loop.
        """
        n = len(times)
        if n == 0:
            return state, np.zeros(0, dtype=bool), np.zeros(0)
        if state.ahead == 0:
            before = np.empty(n)
            before[0] = state.high
            np.maximum.accumulate(times[:-1], out=before[1:])
            np.maximum(before, state.high, out=before)
            with np.errstate(invalid="ignore"):
                far = (times > before + self.max_skew) & (before > -math.inf)
            if not far.any():
                horizons = before - self.lateness
                high = max(state.high, float(times.max()))
                return PartitionTime(high), times < horizons, horizons
        return self._observe_each(state, times)

    def _observe_each(self, state: PartitionTime, times: np.ndarray) -> tuple[PartitionTime, np.ndarray, np.ndarray]:
        """The exact loop of :meth:`observe_many`, one event at a time."""
        late = np.zeros(len(times), dtype=bool)
        horizons = np.empty(len(times))
        lateness = self.lateness
        for k, ts in enumerate(times.tolist()):
            horizons[k] = state.high - lateness
            state, late[k] = self.observe(state, ts)
        if state.ahead == 0:
            state = PartitionTime(state.high)
        return state, late, horizons
