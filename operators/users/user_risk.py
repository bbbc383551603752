"""Per-user risk rules that fire on the event itself.

Users are grouped into a fixed number of shards (``users.shards``); one
Bytewax key per shard receives, per parsed chunk, one :class:`UserEvents`:
that shard's events of the chunk as columns (:class:`~operators.records.UserColumns`),
and the partition's progress.
Keying by user would cost one Bytewax item (routing, Python call) per
event; keying by shard costs one per shard per chunk.

A shard's state is columns (:mod:`operators.users.user_table`): users interned
to slots, one float64 row per slot, so a released batch is judged with numpy
calls per batch instead of Python per event, and a snapshot pickles arrays.
A batch is judged in rounds: round k takes every user's k-th event of the
batch, vectorised across users (a user appears at most once per round, so the
gathered rows can be updated as a matrix and scattered back). Batches and
rounds smaller than ``SCALAR_BELOW`` events take a per-event Python path over
the same rows (fields read and written through a memoryview), where numpy's
fixed cost per call would exceed the work. Users expire after ``idle_seconds`` of event time without a
payment: a user whose next payment comes later than that starts afresh, and
a sweep that runs once per eighth of ``idle_seconds`` of event time (or when
the shard is 10 % over its cap) frees the idle ones and then the least
recently seen beyond the cap.

Rules, each with a cooldown so a burst raises one alert, not one per event
(a burst lasts while the condition keeps holding within the cooldown):

- VELOCITY: more than ``max_count`` payments, or more than ``max_amount``
  in total, within the trailing ``window_seconds`` of event time;
- AMOUNT_SPIKE: an amount at least ``factor`` times the median of the
  user's last ``history_size`` amounts, after ``min_history`` payments;
- IMPOSSIBLE_TRAVEL: a payment from a different region than the user's
  previous one within ``window_seconds``.

Order: a user's events are judged in event-time order (ties by transaction
id), whatever partitions they come through and however far apart those
partitions are in event time. :class:`UserShard` holds each chunk's events
(:mod:`operators.users.event_order`) until the frontier of every source partition
(:mod:`operators.partition_clock`) has passed them, minus
``users.order_lateness_seconds``, and only then hands them to the rules; the
cost is that wait, added to alert latency (docs/architecture.md, "User rules
in event-time order"). An event that arrives behind what was already judged
(a partition back from idle, a forced release, disorder beyond the wait) is
judged on arrival: the rules accept events out of order, they just judge them
against the state as it is.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from functools import reduce
from operator import add, itemgetter
from typing import Any, Optional, Union

import numpy as np

from config.settings import RuleSettings, UserSettings
from operators import alerts
from operators.partition_clock import PartitionClock
from operators.records import AMOUNT, REGION, TIME, UserColumns
from operators.state.snapshots import SnapshotError
from operators.users.event_order import EventTimeBuffer
from operators.users.user_table import (
    HISTORY,
    HISTORY_LEN,
    HISTORY_POS,
    LAST_REGION,
    LAST_TS,
    SPIKE_UNTIL,
    TRAVEL_UNTIL,
    VELOCITY_UNTIL,
    WINDOW_ORDERED,
    WINDOW_POS,
    UserTable,
    relayout,
    ring_for,
)

_NEVER = float("-inf")
_SWEEPS_PER_IDLE_TIME = 8
_CAP_SLACK = 1.1
SCALAR_BELOW = 24
"""Batches (and rounds) with fewer events than this are judged per event in Python: numpy costs
about a microsecond per call whatever the length, and a round makes about a hundred calls.
Measured at 300-event shard batches (bench/user_rules_bench.py's traffic, best of three):
2.03-2.05 us per event for 16-32, 2.15 for 48, 2.18 for 8."""

# Rule order of the alerts one event raises.
_TRAVEL, _VELOCITY, _SPIKE = 0, 1, 2
_ALERT_ORDER = itemgetter(0, 1)


@dataclass(slots=True)
class UserEvents:
    """What one user shard needs from one parsed chunk.

    Every chunk sends one to every shard, with or without events, so that each
    shard knows how far every partition has come and releases held events as
    soon as the slowest one has passed them.
    """

    part: str
    n_parts: int
    watermark: Optional[float]
    done: bool
    idle: bool
    events: Optional[UserColumns]  # None: no events of this shard in the chunk


# Inner tag of the shard snapshots written between event-time order and the
# versioned envelope of operators/state/snapshots.py (read by upgrade_snapshot only).
_TAGGED = "paywatch.user_shard"


def upgrade_snapshot(snapshot: bytes) -> bytes:
    """Migration of the ``user_risk`` step's snapshot from format 1 to format 2.

    Format 2 is ``pickle((rules state, partition clock, held events))``. Format 1
    (and the unversioned 0 before it) held one of two shapes: the rules' state
    alone, from the release that judged in arrival order (migrated: its users
    are kept, nothing is held, no partition is heard from until it reports
    again), or that triple behind an inner tag and version.

    :raises SnapshotError: for bytes of neither shape.
    """
    state = pickle.loads(snapshot)
    if isinstance(state, tuple) and len(state) == 5 and state[0] == _TAGGED and state[1] == 2:
        upgraded = state[2:]
    elif isinstance(state, tuple) and len(state) == 3 and isinstance(state[0], dict):
        upgraded = (state, None, None)
    else:
        raise SnapshotError(
            f"step user_risk: a format 1 snapshot of unknown shape ({type(state).__name__}). "
            "Move the recovery directory aside to start afresh."
        )
    return pickle.dumps(upgraded, protocol=pickle.HIGHEST_PROTOCOL)


def upgrade_to_columns(snapshot: bytes) -> bytes:
    """Migration of the ``user_risk`` step's snapshot from format 2 to format 3.

    Format 3 is format 2 with the rules' users in columns (:class:`UserTable`'s
    state) instead of a dict of per-user lists; the partition clock and the held
    events are unchanged. The users keep their order, history, window and
    cooldowns, so a resumed flow judges their next events as the old release would.
    """
    risk_state, clock_state, buffer_state = pickle.loads(snapshot)
    users, newest, next_sweep = risk_state
    if not isinstance(users, dict):
        raise SnapshotError(
            f"step user_risk: a format 2 snapshot whose users are a {type(users).__name__}, not a dict. "
            "Move the recovery directory aside to start afresh."
        )
    upgraded = ((UserTable.from_users(users).dense_state(), newest, next_sweep), clock_state, buffer_state)
    return pickle.dumps(upgraded, protocol=pickle.HIGHEST_PROTOCOL)


def upgrade_held_to_columns(snapshot: bytes) -> bytes:
    """Migration of the ``user_risk`` step's snapshot from format 3 to format 4.

    Format 4 is format 3 with the held events (:class:`EventTimeBuffer`'s runs) as
    column blocks (:class:`~operators.records.UserColumns`) instead of lists of
    ``(user_id, ts, amount, region, transaction_id)`` tuples. Each run keeps its
    place in the heap (its oldest time and sequence number), so the held events
    are released when, and in the order, the old release would have released them.
    """
    risk_state, clock_state, buffer_state = pickle.loads(snapshot)
    if buffer_state is not None:
        runs, held, forced, seq = buffer_state
        if any(not isinstance(run, list) for _, _, run in runs):
            raise SnapshotError(
                "step user_risk: a format 3 snapshot whose held events are not lists of tuples. "
                "Move the recovery directory aside to start afresh."
            )
        blocks = [(oldest, number, UserColumns.of_rows(run)) for oldest, number, run in runs]
        buffer_state = (blocks, held, forced, seq)
    return pickle.dumps((risk_state, clock_state, buffer_state), protocol=pickle.HIGHEST_PROTOCOL)


def upgrade_packed_rows(snapshot: bytes) -> bytes:
    """Migration of the ``user_risk`` step's snapshot from format 4 to format 5.

    Format 5 is format 4 with the users' rows packed (:func:`~operators.users.user_table.pack_rows`:
    a bit per field, and only the fields that differ from a blank row) instead of the whole
    float64 array; ids, slots, free slots, regions, the partition clock and the held events are
    unchanged. Unpacking gives back the same bits, so the users resume exactly as they were.
    """
    risk_state, clock_state, buffer_state = pickle.loads(snapshot)
    table, newest, next_sweep = risk_state
    if not (isinstance(table, tuple) and len(table) == 7 and isinstance(table[6], np.ndarray)):
        raise SnapshotError(
            "step user_risk: a format 4 snapshot whose users are not a table of rows. "
            "Move the recovery directory aside to start afresh."
        )
    packed = (UserTable.from_dense_state(table).state(), newest, next_sweep)
    return pickle.dumps((packed, clock_state, buffer_state), protocol=pickle.HIGHEST_PROTOCOL)


class UserShard:
    """One user shard: partition frontier, held events and the rules, with one snapshot.

    :arg allowed_lateness: ``windows.allowed_lateness_seconds``, the lag of the
        partition watermarks behind each partition's newest event.
    :arg state: what :meth:`snapshot` returned (format 5 of the ``user_risk``
        step; :func:`upgrade_snapshot`, :func:`upgrade_to_columns`,
        :func:`upgrade_held_to_columns` and :func:`upgrade_packed_rows` bring older ones to it).
    """

    def __init__(
        self, rules: RuleSettings, users: UserSettings, allowed_lateness: float, state: Optional[bytes] = None
    ) -> None:
        hold = users.order_lateness_seconds
        # The clock's frontier is min over partitions of (newest - allowed lateness);
        # events wait until min(newest) - hold has passed them.
        self._offset = allowed_lateness - (allowed_lateness if hold is None else hold)
        max_held = max(1, users.max_held_events // users.shards)
        risk_state, clock_state, buffer_state = pickle.loads(state) if state is not None else (None, None, None)
        self.risk = UserRisk(rules, users, risk_state)
        self.clock = PartitionClock(clock_state)
        self.held = EventTimeBuffer(max_held, buffer_state)

    def add(self, batch: list[UserEvents], now: float) -> list[dict[str, Any]]:
        """Take a batch of chunk slices; judge every held event the frontier has passed.

        :arg now: wall clock, for partitions that have gone idle.
        """
        clock, held = self.clock, self.held
        for item in batch:
            clock.report(item.part, item.n_parts, item.watermark, item.done, item.idle, now)
            if item.events is not None:
                held.add(item.events)
        if not held.held:
            return []
        ready = held.release(clock.advance(now) + self._offset)
        return self.risk.process_columns(ready) if ready is not None else []

    def flush(self) -> list[dict[str, Any]]:
        """Judge everything still held (the input has ended)."""
        ready = self.held.release(math.inf)
        return self.risk.process_columns(ready) if ready is not None else []

    def snapshot(self) -> bytes:
        """Pickled now, so later mutation cannot leak into the snapshot."""
        state = (self.risk.state(), self.clock.state(), self.held.state())
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


class _Batch:
    """What both judging paths need of one batch: its columns, the users' slots and
    region ids, as lists (the per-event path) and, built once for the rounds only,
    as numpy arrays."""

    __slots__ = (
        "cols",
        "slots",
        "_ids",
        "listed",
        "times",
        "amounts",
        "region_ids",
        "slot",
        "ts",
        "amount",
        "paid",
        "region",
    )

    times: list[float]
    amounts: list[float]
    region_ids: list[int]

    def __init__(self, cols: UserColumns, slots: list[int], region_ids: list[int]) -> None:
        self.cols, self.slots = cols, slots
        self._ids = region_ids  # the table's region id of each of cols.regions
        self.listed = False

    def lists(self) -> None:
        """Per event, Python floats and ints for the per-event path (NaN: no amount)."""
        if self.listed:
            return
        self.listed = True
        self.times, self.amounts, codes = self.cols.numbers[TIME : REGION + 1].tolist()
        ids = self._ids
        if len(ids) == 1:
            self.region_ids = [ids[0]] * len(codes)
        else:
            self.region_ids = list(map(ids.__getitem__, map(int, codes)))

    def picked(self, chosen: np.ndarray) -> tuple[list[int], list[float], list[float], list[int]]:
        """Slots, times, amounts and region ids of the events ``chosen`` only, as Python lists
        (the per-event tail of the rounds: a few events of a batch of hundreds)."""
        times, amounts, codes = self.cols.numbers[TIME : REGION + 1, chosen].tolist()
        ids = self._ids
        regions = [ids[0]] * len(codes) if len(ids) == 1 else list(map(ids.__getitem__, map(int, codes)))
        return list(map(self.slots.__getitem__, chosen.tolist())), times, amounts, regions

    def arrays(self) -> None:
        """The same as numpy arrays, for the rounds."""
        numbers = self.cols.numbers
        n = len(self.slots)
        self.slot = np.fromiter(self.slots, np.intp, n)
        self.ts = numbers[TIME]
        self.amount = numbers[AMOUNT]  # NaN: no amount
        self.paid = np.fmax(self.amount, 0.0)  # NaN -> 0.0
        ids = self._ids
        if len(ids) == 1:
            self.region = np.full(n, float(ids[0]))
        else:  # rows hold floats
            self.region = np.array(ids, dtype=np.float64)[numbers[REGION].astype(np.intp)]


class UserRisk:
    """The users of one shard and the rules applied to them."""

    def __init__(self, rules: RuleSettings, users: UserSettings, state: Union[bytes, tuple, None] = None) -> None:
        self.use_rules(rules)
        self.idle_seconds = users.idle_seconds
        self.max_users = max(1, users.max_users // users.shards)
        self._sweep_above = int(self.max_users * _CAP_SLACK)
        self.scalar_below = SCALAR_BELOW
        history = rules.amount_spike.history_size
        self.table = UserTable(history, ring_for(rules.velocity.max_count))
        self.newest = _NEVER
        self.next_sweep = _NEVER
        if state is not None:
            table, self.newest, self.next_sweep = pickle.loads(state) if isinstance(state, bytes) else state
            self.table = UserTable.from_state(table)
            self.table.set_history(history)
            self.table.reserve_ring(ring_for(rules.velocity.max_count))

    @property
    def users(self) -> dict[str, int]:
        """User id -> slot, least recently arrived (or least recently seen after a cap sweep) first."""
        return self.table.slot_of

    def state(self) -> tuple:
        """The users' columns and the sweep clock (live objects: pickle before the next batch)."""
        return (self.table.state(), self.newest, self.next_sweep)

    def snapshot(self) -> bytes:
        """Pickled now, so later mutation cannot leak into the snapshot."""
        return pickle.dumps(self.state(), protocol=pickle.HIGHEST_PROTOCOL)

    def __len__(self) -> int:
        return len(self.table)

    def use_rules(self, rules: RuleSettings) -> None:
        """Judge the next events by new thresholds (live rules; window lengths unchanged)."""
        self.velocity = rules.velocity
        self.spike = rules.amount_spike
        self.travel = rules.impossible_travel

    def process(self, events: list[tuple]) -> list[dict[str, Any]]:
        """Apply the rules to ``(user_id, ts, amount, region, txn)`` events in order (tests, benchmarks)."""
        if not events:
            return []
        return self.process_columns(UserColumns.of_rows(events))

    def process_columns(self, cols: UserColumns) -> list[dict[str, Any]]:
        """Apply the rules to a batch of events in order, as columns (what the shard releases)."""
        table = self.table
        n = len(cols.users)
        if not n:
            return []
        slots = table.slots(cols.users)
        batch = _Batch(cols, slots, table.region_ids(cols.regions))
        out: list[tuple[int, int, dict]] = []
        if n < self.scalar_below:
            batch.lists()
            self._scalar(batch, range(n), (batch.slots, batch.times, batch.amounts, batch.region_ids), out)
        else:
            batch.arrays()
            if len(set(slots)) == n:
                self._vector(batch, None, out)
            else:
                self._rounds(batch, out)
        newest = max(batch.times) if batch.listed else float(batch.ts.max())  # a numpy call costs 16 events' max
        self.newest = max(self.newest, newest)
        if self.newest >= self.next_sweep or len(table) > self._sweep_above:
            self._sweep()
        if not out:
            return []
        out.sort(key=_ALERT_ORDER)
        return [alert for _, _, alert in out]

    def _rounds(self, batch: _Batch, out: list) -> None:
        """Rank each event within its user; round k judges every user's k-th event."""
        n = len(batch.slots)
        order = np.argsort(batch.slot, kind="stable")
        ordered = batch.slot[order]
        position = np.arange(n)
        starts = np.empty(n, dtype=bool)
        starts[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
        rank = np.empty(n, dtype=np.intp)
        rank[order] = position - np.maximum.accumulate(np.where(starts, position, 0))
        for k in range(int(rank.max()) + 1):
            chosen = np.flatnonzero(rank == k)
            if len(chosen) < self.scalar_below:
                # Fewer users left than a round is worth: the rest in order, per event.
                tail = np.flatnonzero(rank >= k)
                self._scalar(batch, tail.tolist(), batch.picked(tail), out)
                return
            self._vector(batch, chosen, out)

    def _vector(self, batch: _Batch, chosen: Optional[np.ndarray], out: list) -> None:
        """Judge events of distinct users (``chosen``; None: the whole batch) as one matrix."""
        table = self.table
        if chosen is None:
            slot, ts, region, amount, paid = batch.slot, batch.ts, batch.region, batch.amount, batch.paid
        else:
            slot, ts, region = batch.slot[chosen], batch.ts[chosen], batch.region[chosen]
            amount, paid = batch.amount[chosen], batch.paid[chosen]
        rows = table.rows[slot]
        n = len(slot)
        every = np.arange(n)

        # First payment, or the first after idle_seconds: the user starts afresh
        # (a new slot's last time is -inf). Only the velocity amount limit can fire then.
        fresh = ts - rows[:, LAST_TS] > self.idle_seconds
        if np.count_nonzero(fresh):
            rows[fresh] = table.blank
            rows[fresh, LAST_TS] = ts[fresh]
            rows[fresh, LAST_REGION] = region[fresh]
        last_ts = rows[:, LAST_TS].copy()
        last_region = rows[:, LAST_REGION].copy()

        # Impossible travel: against the previous payment's region and time.
        gap = np.abs(ts - last_ts)
        travel = (region != last_region) & (gap <= self.travel.window_seconds)
        if np.count_nonzero(travel):
            until = rows[:, TRAVEL_UNTIL]
            for i in np.flatnonzero(travel & (ts > until)).tolist():
                e = i if chosen is None else int(chosen[i])
                previous = table.regions[int(last_region[i])]
                out.append((e, _TRAVEL, self._travel_alert(batch, e, previous, float(gap[i]))))
            rows[:, TRAVEL_UNTIL] = np.where(travel, ts + self.travel.cooldown_seconds, until)
        newer = ts >= last_ts
        newest = np.where(newer, ts, last_ts)
        rows[:, LAST_TS] = newest
        rows[:, LAST_REGION] = np.where(newer, region, last_region)

        # Velocity: the ring's entries after the user's newest time minus the window.
        # The ring is transposed (one row per ring position) so that the reductions
        # run along whole rows of users, and the sum adds positions in ring order.
        # Where the entry goes: operators/users/user_table.py (the same rules as _scalar).
        cutoff = newest - self.velocity.window_seconds
        start = table.window_ts
        times = rows[:, start : start + table.ring].T.copy()
        pos = rows[:, WINDOW_POS].astype(np.intp)
        in_order = (rows[:, WINDOW_ORDERED] > 0) & (ts >= times[(pos - 1) % table.ring, every])
        write = np.where(in_order, pos, times.argmin(axis=0))
        if np.count_nonzero(times[write, every] > cutoff):  # a full window: room for everyone
            before = table.ring
            table.grow_ring()
            rows = relayout(rows, (table.history, table.history), (before, table.ring))
            start = table.window_ts
            times = rows[:, start : start + table.ring].T.copy()
            pos = rows[:, WINDOW_POS].astype(np.intp)
            in_order = (rows[:, WINDOW_ORDERED] > 0) & (ts >= times[(pos - 1) % table.ring, every])
            write = np.where(in_order, pos, times.argmin(axis=0))
        times[write, every] = ts
        rows[every, start + write] = ts
        rows[every, table.window_amount + write] = paid
        amounts = rows[:, table.window_amount : table.window_amount + table.ring].T
        live = times > cutoff
        count = np.add.reduce(live, axis=0, dtype=np.intp)
        total = np.where(live, amounts, 0.0).sum(axis=0)
        rows[:, WINDOW_POS] = (write + 1) % table.ring
        # A run again when the new entry is the only live one (not when it came dead, behind the window).
        rows[:, WINDOW_ORDERED] = in_order | ((count == 1) & (ts > cutoff))
        velocity = (count > self.velocity.max_count) | (total > self.velocity.max_amount)
        if np.count_nonzero(velocity):
            until = rows[:, VELOCITY_UNTIL]
            for i in np.flatnonzero(velocity & (ts > until)).tolist():
                e = i if chosen is None else int(chosen[i])
                out.append((e, _VELOCITY, self._velocity_alert(batch, e, int(count[i]), float(total[i]))))
            rows[:, VELOCITY_UNTIL] = np.where(velocity, ts + self.velocity.cooldown_seconds, until)

        # Amount spike against the median of the user's recent amounts. In the steady
        # state every event has an amount and every user enough history: whole
        # columns then, no gathers.
        has = amount == amount  # not NaN: the event has an amount
        held = rows[:, HISTORY_LEN]
        size = table.history
        judge = has & (held >= self.spike.min_history)
        judged_n = np.count_nonzero(judge)
        if judged_n:
            if judged_n == n:
                judged, history, k = every, rows[:, HISTORY : HISTORY + size], held.astype(np.intp)
            else:
                judged = np.flatnonzero(judge)
                history, k = rows[judged, HISTORY : HISTORY + size], held[judged].astype(np.intp)
            ordered = np.sort(history, axis=1)  # NaN (empty) last
            at = np.arange(judged_n)
            typical = (ordered[at, (k - 1) // 2] + ordered[at, k // 2]) / 2.0
            spike = (typical > 0) & (amount[judged] >= self.spike.factor * typical)
            if np.count_nonzero(spike):
                spiking = judged[spike]
                until = rows[:, SPIKE_UNTIL]
                for i, median in zip(spiking.tolist(), typical[spike].tolist(), strict=True):
                    if ts[i] > until[i]:
                        e = i if chosen is None else int(chosen[i])
                        out.append((e, _SPIKE, self._spike_alert(batch, e, median)))
                until[spiking] = ts[spiking] + self.spike.cooldown_seconds
        adding = np.count_nonzero(has)
        if adding == n:
            pos = rows[:, HISTORY_POS].astype(np.intp)
            rows[every, HISTORY + pos] = amount
            rows[:, HISTORY_POS] = (pos + 1) % size
            np.minimum(held + 1, size, out=held)
        elif adding:
            adds = np.flatnonzero(has)
            pos = rows[adds, HISTORY_POS].astype(np.intp)
            rows[adds, HISTORY + pos] = amount[adds]
            rows[adds, HISTORY_POS] = (pos + 1) % size
            rows[adds, HISTORY_LEN] = np.minimum(held[adds] + 1, size)
        table.rows[slot] = rows

    def _scalar(self, batch: _Batch, chosen: Any, fields: tuple, out: list) -> None:
        """Judge events ``chosen`` (indices, in order) one by one, in place in the rows.

        ``fields`` holds the chosen events' slots, times, amounts and region ids, in
        the order of ``chosen`` (:meth:`_Batch.lists` or :meth:`_Batch.picked`).

        Each event's row is a slice of the table's flat memoryview: fields read
        and written as Python floats, at small constant indices (no int objects
        made per access), with no per-row conversion, so a handful of events
        costs what their bytecode costs.
        """
        table = self.table
        flat, width, ring = table.flat, table.width, table.ring
        start, at = table.window_ts, table.window_amount  # the window ring's two blocks
        blank = table.blank_view
        idle_seconds = self.idle_seconds
        travel_window = self.travel.window_seconds
        velocity_window = self.velocity.window_seconds
        max_count, max_amount = self.velocity.max_count, self.velocity.max_amount
        factor, min_history, size = self.spike.factor, self.spike.min_history, table.history
        for e, slot, ts, amount, region in zip(chosen, *fields, strict=True):
            base = slot * width
            row = flat[base : base + width]
            if ts - row[LAST_TS] > idle_seconds:
                row[:] = blank
                row[LAST_TS] = ts
                row[LAST_REGION] = region
            last_ts, last_region = row[LAST_TS], row[LAST_REGION]
            if region != last_region and abs(ts - last_ts) <= travel_window:
                if ts > row[TRAVEL_UNTIL]:
                    previous = table.regions[int(last_region)]
                    out.append((e, _TRAVEL, self._travel_alert(batch, e, previous, abs(ts - last_ts))))
                row[TRAVEL_UNTIL] = ts + self.travel.cooldown_seconds
            if ts >= last_ts:
                row[LAST_TS] = ts
                row[LAST_REGION] = region
                cutoff = ts - velocity_window
            else:
                cutoff = last_ts - velocity_window

            # Velocity: the entry goes after the previous one while payments come in
            # time order (then the live ones are the run ending there), else in the
            # oldest; the ring doubles when every entry is live.
            for _ in range(2):
                write = int(row[WINDOW_POS])
                in_order = row[WINDOW_ORDERED] > 0 and ts >= row[start + (write - 1) % ring]
                if not in_order:
                    window = row[start : start + ring].tolist()
                    write = window.index(min(window))
                if row[start + write] <= cutoff:
                    break
                # Every entry is live: every user's ring doubles (then there is room).
                table.grow_ring()
                flat, width, ring = table.flat, table.width, table.ring
                start, at = table.window_ts, table.window_amount
                blank = table.blank_view
                base = slot * width
                row = flat[base : base + width]
            if not in_order:
                window[write] = ts
            row[start + write] = ts
            row[at + write] = amount if amount > 0.0 else 0.0  # NaN (no amount): 0.0
            row[WINDOW_POS] = (write + 1) % ring
            if in_order:
                count, back = 1, write - 1
                while count < ring and row[start + back % ring] > cutoff:
                    count += 1
                    back -= 1
                first = write - count + 1  # the run is first..write, wrapping below 0
                if first >= 0:
                    total = reduce(add, row[at + first : at + write + 1].tolist(), 0.0)
                else:  # in ring order: 0..write, then first + ring..ring - 1
                    total = reduce(add, row[at : at + write + 1].tolist(), 0.0)
                    total = reduce(add, row[at + first + ring : at + ring].tolist(), total)
            else:
                live = [a for t, a in zip(window, row[at : at + ring].tolist(), strict=True) if t > cutoff]
                count, total = len(live), reduce(add, live, 0.0)
                row[WINDOW_ORDERED] = 1.0 if count == 1 and ts > cutoff else 0.0
            if count > max_count or total > max_amount:
                if ts > row[VELOCITY_UNTIL]:
                    out.append((e, _VELOCITY, self._velocity_alert(batch, e, count, total)))
                row[VELOCITY_UNTIL] = ts + self.velocity.cooldown_seconds

            if amount == amount:  # not NaN: the event has an amount
                held = int(row[HISTORY_LEN])
                if held >= min_history:
                    ordered = sorted(row[HISTORY : HISTORY + held].tolist())
                    typical = (ordered[(held - 1) // 2] + ordered[held // 2]) / 2.0
                    if typical > 0 and amount >= factor * typical:
                        if ts > row[SPIKE_UNTIL]:
                            out.append((e, _SPIKE, self._spike_alert(batch, e, typical)))
                        row[SPIKE_UNTIL] = ts + self.spike.cooldown_seconds
                pos = int(row[HISTORY_POS])
                row[HISTORY + pos] = amount
                row[HISTORY_POS] = (pos + 1) % size
                if held < size:
                    row[HISTORY_LEN] = held + 1

    def _sweep(self) -> None:
        """Drop users idle for ``idle_seconds`` of event time, then the least recent beyond the cap."""
        self.table.sweep(self.newest - self.idle_seconds, self.max_users)
        self.next_sweep = self.newest + self.idle_seconds / _SWEEPS_PER_IDLE_TIME

    # -- alert records ---------------------------------------------------------

    def _velocity_alert(self, batch: _Batch, e: int, count: int, total: float) -> dict:
        cols = batch.cols
        user_id, txn, ts, region = cols.users[e], cols.txns[e], float(cols.numbers[TIME, e]), cols.region(e)
        rule = self.velocity
        by_count = count > rule.max_count
        value, threshold = (float(count), float(rule.max_count)) if by_count else (round(total, 2), rule.max_amount)
        what = f"{count} payments" if by_count else f"{total:.2f} in payments"
        return alerts.make_alert(
            alerts.VELOCITY,
            alerts.OPEN,
            user_id,
            f"{alerts.VELOCITY}:{user_id}:{txn}",
            ts,
            value,
            threshold,
            f"user {user_id} made {what} within {rule.window_seconds:g}s",
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={
                "count": count,
                "amount_sum": round(total, 2),
                "window_seconds": rule.window_seconds,
                "limit": "count" if by_count else "amount",
            },
        )

    def _spike_alert(self, batch: _Batch, e: int, typical: float) -> dict:
        cols = batch.cols
        user_id, txn, ts, region = cols.users[e], cols.txns[e], float(cols.numbers[TIME, e]), cols.region(e)
        amount = cols.amount(e)
        assert amount is not None  # only an event with an amount spikes
        factor = amount / typical
        return alerts.make_alert(
            alerts.AMOUNT_SPIKE,
            alerts.OPEN,
            user_id,
            f"{alerts.AMOUNT_SPIKE}:{user_id}:{txn}",
            ts,
            round(factor, 2),
            self.spike.factor,
            f"user {user_id} paid {amount:g}, {factor:.1f}x their typical {typical:g}",
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={"amount": amount, "typical_amount": typical},
        )

    def _travel_alert(self, batch: _Batch, e: int, previous: str, gap: float) -> dict:
        cols = batch.cols
        user_id, txn, ts, region = cols.users[e], cols.txns[e], float(cols.numbers[TIME, e]), cols.region(e)
        return alerts.make_alert(
            alerts.IMPOSSIBLE_TRAVEL,
            alerts.OPEN,
            user_id,
            f"{alerts.IMPOSSIBLE_TRAVEL}:{user_id}:{txn}",
            ts,
            round(gap, 3),
            self.travel.window_seconds,
            f"user {user_id} paid from {region} {gap:.0f}s after paying from {previous}",
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={"from_region": previous, "to_region": region, "seconds_between": round(gap, 3)},
        )
