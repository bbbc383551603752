"""One user shard's per-user state in a numpy array: one row per user slot.

The user rules (:mod:`operators.users.user_risk`) work on a whole released batch
at once, so their state is columns, not objects: user ids are interned to
integer slots through one dict (its order is the order users arrived in, which
the cap on users uses to break ties), regions to small integers, and each slot
owns one row of a float64 array::

    last_ts, last_region, velocity_until, spike_until, travel_until,
    history_len, history_pos, window_pos, window_ordered,
    history[H]          the user's last H amounts, a ring (NaN where empty)
    window_ts[R]        the velocity window, a ring of event times (-inf where empty)
    window_amount[R]    their amounts

A batch gathers the rows of the users it touches in one fancy index, updates
them as a small matrix and scatters them back in one more: per-chunk numpy
calls instead of per-event Python. A snapshot pickles the user ids, the region
names and the rows packed (:func:`pack_rows`: only the fields that differ from a
blank row, with one bit per field saying which), not one Python object per user.

The window ring needs no sorting: an entry is in the velocity window when its
time is after the user's newest event time minus the window, and the newest
only grows, so an entry masked out once stays out (masking equals deleting),
and a new entry overwrites the oldest one. When a user has more than R events
in its window (a velocity burst), R doubles for every row: exact, never an
approximation, and rare because R starts at ``max_count + 2``.

While a user's payments come in time order, each goes at ``window_pos`` (the
slot after the previous one), so the live entries are the run that ends at the
newest write and everything before it is dead: the per-event path counts them
by walking back from the newest, one step per live entry, instead of scanning
the ring. An out-of-order payment goes in the oldest entry instead and clears
``window_ordered``; it is set again when that entry is the only live one. When
the chosen entry is still live, every entry is: the ring grows, unrolled from
each row's oldest write (so runs stay runs), and the choice is made again. Both
paths follow these same rules, so the state is the same whichever judged an
event, and both sum the live amounts in ring order.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, repeat
from operator import eq
from typing import Any, Optional

import numpy as np

LAST_TS = 0  # newest event time seen for the user (-inf: a free or new slot)
LAST_REGION = 1  # interned region of that event
VELOCITY_UNTIL = 2  # cooldown ends (event time)
SPIKE_UNTIL = 3
TRAVEL_UNTIL = 4
HISTORY_LEN = 5  # amounts held in the history ring
HISTORY_POS = 6  # where the next amount goes
WINDOW_POS = 7  # where the next window entry goes when it comes in time order
WINDOW_ORDERED = 8  # 1.0: the live window entries are the run of writes ending just before WINDOW_POS
HISTORY = 9  # first column of the history ring

_NEVER = float("-inf")
_MIN_CAPACITY = 64
_REGIONS_KEPT = 256  # interned region names beyond this are pruned at the next sweep

# The legacy (format 2) per-user list: see tests/support/legacy_user_risk.py.
_LEGACY_LAST_TS, _LEGACY_REGION, _LEGACY_TIMES, _LEGACY_AMOUNTS = 0, 1, 2, 3
_LEGACY_HISTORY, _LEGACY_UNTIL = 5, 7


def ring_for(max_count: int) -> int:
    """The starting size of the velocity ring: room for a window just over the count limit."""
    return max_count + 2


def relayout(rows: np.ndarray, history: tuple[int, int], ring: tuple[int, int]) -> np.ndarray:
    """``rows`` (history ``history[0]``, ring ``ring[0]``) laid out for ``history[1]`` and ``ring[1]``.

    The ring only grows: each row's entries are unrolled oldest write first, then the new
    empty ones.
    The history keeps each user's most recent amounts, as many as fit, oldest first.
    """
    old_h, new_h = history
    old_r, new_r = ring
    out = _blank(len(rows), new_h, new_r)
    out[:, :HISTORY] = rows[:, :HISTORY]
    old_vt, new_vt = HISTORY + old_h, HISTORY + new_h
    if new_r == old_r:
        out[:, new_vt : new_vt + old_r] = rows[:, old_vt : old_vt + old_r]
        out[:, new_vt + new_r : new_vt + new_r + old_r] = rows[:, old_vt + old_r : old_vt + 2 * old_r]
    else:
        # Unrolled from the next write position (the oldest write) on, so that a run of
        # writes in time order stays one run, followed by the new empty entries.
        unroll = (rows[:, WINDOW_POS].astype(np.intp)[:, None] + np.arange(old_r)) % old_r
        out[:, new_vt : new_vt + old_r] = np.take_along_axis(rows[:, old_vt : old_vt + old_r], unroll, axis=1)
        amounts = rows[:, old_vt + old_r : old_vt + 2 * old_r]
        out[:, new_vt + new_r : new_vt + new_r + old_r] = np.take_along_axis(amounts, unroll, axis=1)
        out[:, WINDOW_POS] = old_r
    if old_h == new_h:
        out[:, HISTORY:new_vt] = rows[:, HISTORY:old_vt]
        return out
    held = rows[:, HISTORY_LEN].astype(np.intp)
    pos = rows[:, HISTORY_POS].astype(np.intp)
    # Oldest first: a full ring starts at its write position, a partial one at 0.
    start = np.where(held == old_h, pos, 0)
    ordered = np.take_along_axis(rows[:, HISTORY:old_vt], (start[:, None] + np.arange(old_h)) % old_h, axis=1)
    keep = np.minimum(held, new_h)
    take = np.minimum((held - keep)[:, None] + np.arange(new_h), old_h - 1)
    out[:, HISTORY:new_vt] = np.where(
        np.arange(new_h) < keep[:, None], np.take_along_axis(ordered, take, axis=1), np.nan
    )
    out[:, HISTORY_LEN] = keep
    out[:, HISTORY_POS] = keep % new_h
    return out


def _blank(n: int, history: int, ring: int) -> np.ndarray:
    """``n`` rows of users with no state: no event, no cooldown, empty rings."""
    rows = np.zeros((n, HISTORY + history + 2 * ring))
    rows[:, LAST_TS] = _NEVER
    rows[:, LAST_REGION] = -1.0
    rows[:, VELOCITY_UNTIL : TRAVEL_UNTIL + 1] = _NEVER
    rows[:, WINDOW_ORDERED] = 1.0
    rows[:, HISTORY : HISTORY + history] = np.nan
    rows[:, HISTORY + history : HISTORY + history + ring] = _NEVER
    return rows


def _floats(array: np.ndarray) -> Any:
    """A flat memoryview of ``array``'s float64s (items read and written as Python floats)."""
    return memoryview(array.data).cast("B").cast("d")


_PACKED_UP_TO = 0.75
"""Rows with more than this share of their fields set are stored whole: the mask then saves
little and choosing the fields costs more than the copy (users in the steady state)."""
_SAMPLE_EVERY = 16


def pack_rows(rows: np.ndarray, blank: np.ndarray) -> tuple[int, int, Optional[np.ndarray], np.ndarray]:
    """``rows`` as a snapshot stores them: ``(rows, width, mask, values)``.

    Most of a row is blank in many snapshots: a user with three payments fills 3 of the
    20 history entries and 3 of the 12 window entries, its cooldowns never started, and a
    freed slot is all blank. So the snapshot holds one bit per field (set where the field's
    bits differ from the blank row's, so NaN and -0.0 compare exactly) and, in row-major
    order, only the fields whose bit is set. Where most fields are set (users with full
    histories), the mask is None and the values are the rows whole. The rings are stored
    as they are (dead window entries included: the next event's ring position depends on
    them), so :func:`unpack_rows` gives back the same bits either way.
    """
    n, width = rows.shape
    bits, blank_bits = rows.view(np.int64), blank.view(np.int64)
    sample = bits[::_SAMPLE_EVERY] != blank_bits  # decided on every 16th row: a sixteenth of the compare
    if np.count_nonzero(sample) > _PACKED_UP_TO * sample.size:
        return n, width, None, rows.reshape(-1)
    differs = bits != blank_bits
    return n, width, np.packbits(differs), rows[differs]


def unpack_rows(packed: tuple, out: np.ndarray) -> None:
    """Write the rows :func:`pack_rows` packed into ``out`` (blank rows of the same width).

    The mask and values may be arrays or their bytes (the first release of format 5 wrote bytes).
    """
    n, width, mask, values = packed
    if out.shape != (n, width):
        raise ValueError(f"packed rows of shape {(n, width)} into rows of shape {out.shape}")
    values = np.frombuffer(values, np.float64)
    if mask is None:
        out[:] = values.reshape(n, width)
        return
    differs = np.unpackbits(np.frombuffer(mask, np.uint8), count=n * width).view(bool).reshape(n, width)
    out[differs] = values


class UserTable:
    """Users of one shard: the slot dict, the region names and the rows.

    :arg history: amounts kept per user (``rules.amount_spike.history_size``).
    :arg ring: starting size of the velocity window ring (:func:`ring_for`).
    """

    rows: np.ndarray
    flat: Any  # memoryview of float64 ("d"); typed Any: the stubs see memoryview[int]

    def __init__(self, history: int, ring: int) -> None:
        self.slot_of: dict[str, int] = {}
        self.free: list[int] = []
        self.used = 0  # slots ever handed out: rows[:used] is the state
        self.regions: list[str] = []
        self.region_of: dict[str, int] = {}
        self._shape(history, ring)
        self.set_rows(_blank(_MIN_CAPACITY, history, ring))

    def set_rows(self, rows: np.ndarray) -> None:
        """Hold ``rows`` (C-contiguous), and ``flat``: a memoryview of them as one run of floats.

        The per-event path takes a row as ``flat[slot * width : (slot + 1) * width]`` and
        reads and writes its fields there: a Python float either way, without numpy's
        scalar boxing or a conversion of whole rows.
        """
        self.rows = np.ascontiguousarray(rows)
        self.flat = _floats(self.rows)

    def _shape(self, history: int, ring: int) -> None:
        self.history = history
        self.ring = ring
        self.window_ts = HISTORY + history  # first column of each ring
        self.window_amount = self.window_ts + ring
        self.width = self.window_amount + ring
        self.blank = _blank(1, history, ring)[0]
        self.blank_view = _floats(self.blank)

    def __len__(self) -> int:
        return len(self.slot_of)

    # -- interning -------------------------------------------------------------

    def slots(self, user_ids: Sequence[str]) -> list[int]:
        """The slot of each user, allocating slots (blank rows) for users not held, in arrival order."""
        slot_of = self.slot_of
        found = list(map(slot_of.get, user_ids, repeat(-1)))
        if found and min(found) < 0:
            missing = dict.fromkeys(compress(user_ids, map(eq, found, repeat(-1))))
            slot_of.update(zip(missing, self._allocate(len(missing)), strict=True))
            found = list(map(slot_of.__getitem__, user_ids))
        return found

    def region_ids(self, names: Sequence[str]) -> list[int]:
        """Each region's small integer (new names get the next ones)."""
        region_of = self.region_of
        found = list(map(region_of.get, names))
        if None in found:
            for name in dict.fromkeys(names):
                if name not in region_of:
                    region_of[name] = len(self.regions)
                    self.regions.append(name)
            found = list(map(region_of.__getitem__, names))
        return found  # type: ignore[return-value]

    def _allocate(self, n: int) -> list[int]:
        reused = self.free[-n:] if n else []
        if reused:
            del self.free[-len(reused) :]
        fresh = n - len(reused)
        if self.used + fresh > len(self.rows):
            capacity = max(_MIN_CAPACITY, len(self.rows))
            while capacity < self.used + fresh:
                capacity *= 2
            grown = _blank(capacity, self.history, self.ring)
            grown[: self.used] = self.rows[: self.used]
            self.set_rows(grown)
        slots = reused + list(range(self.used, self.used + fresh))
        self.used += fresh
        self.rows[slots] = self.blank
        return slots

    # -- shape changes ---------------------------------------------------------

    def grow_ring(self) -> None:
        """Double the velocity ring of every slot (a user has more events in its window than it holds)."""
        self.reserve_ring(2 * self.ring)

    def reserve_ring(self, ring: int) -> None:
        """A velocity ring of at least ``ring`` entries (a table migrated with a short one)."""
        if ring > self.ring:
            self.set_rows(relayout(self.rows, (self.history, self.history), (self.ring, ring)))
            self._shape(self.history, ring)

    def set_history(self, history: int) -> None:
        """Keep ``history`` amounts per user from now on (a restart with another history_size)."""
        if history != self.history:
            self.set_rows(relayout(self.rows[: max(self.used, 1)], (self.history, history), (self.ring, self.ring)))
            self._shape(history, self.ring)

    # -- expiry ----------------------------------------------------------------

    def sweep(self, horizon: float, max_users: int) -> None:
        """Free users last seen before ``horizon``, then the least recently seen beyond ``max_users``.

        Ties in last-seen time keep the users that arrived first, and the kept
        users' order becomes least recent first: what the dict of the per-user
        implementation did (``heapq.nlargest`` over it, reversed).
        """
        ids = list(self.slot_of)
        slots = np.fromiter(self.slot_of.values(), np.intp, len(ids))
        last = self.rows[slots, LAST_TS]
        keep = np.flatnonzero(last >= horizon)
        if len(keep) > max_users:
            keep = keep[np.lexsort((keep, -last[keep]))[:max_users]][::-1]
        if len(keep) < len(ids):
            gone = np.ones(len(ids), dtype=bool)
            gone[keep] = False
            self.free.extend(slots[gone].tolist())
            self.slot_of = dict(zip(map(ids.__getitem__, keep.tolist()), slots[keep].tolist(), strict=True))
            self.rows[slots[gone]] = self.blank
        if len(self.regions) > _REGIONS_KEPT:
            self._forget_regions(slots[keep])

    def _forget_regions(self, live: np.ndarray) -> None:
        """Intern again only the regions the live users last paid from (region names are
        input: without this, a stream of distinct ones would grow the list for ever)."""
        used = np.unique(self.rows[live, LAST_REGION]).astype(np.intp)
        used = used[used >= 0]
        renumber = np.full(len(self.regions), -1.0)
        renumber[used] = np.arange(len(used))
        self.rows[live, LAST_REGION] = renumber[self.rows[live, LAST_REGION].astype(np.intp)]
        self.regions = [self.regions[i] for i in used.tolist()]
        self.region_of = {name: i for i, name in enumerate(self.regions)}

    # -- snapshots -------------------------------------------------------------

    def state(self) -> tuple:
        """What a snapshot holds (format 5): shape, user ids with their slots, free slots, regions,
        and the rows packed by :func:`pack_rows` (only the fields that differ from a blank row).

        Live objects (the slot list): pickle before the next batch, as the shard does.
        """
        slots = np.fromiter(self.slot_of.values(), np.intp, len(self.slot_of))
        return (
            self.history,
            self.ring,
            list(self.slot_of),
            slots,
            self.free,
            self.regions,
            pack_rows(self.rows[: self.used], self.blank),
        )

    def dense_state(self) -> tuple:
        """The state as formats 3 and 4 held it: :meth:`state` with every row whole (tests write
        old snapshots with it; :func:`~operators.users.user_risk.upgrade_packed_rows` reads them)."""
        history, ring, ids, slots, free, regions, _ = self.state()
        return (history, ring, ids, slots, free, regions, self.rows[: self.used])

    @classmethod
    def from_state(cls, state: tuple) -> UserTable:
        """The table :meth:`state` described."""
        history, ring, ids, slots, free, regions, packed = state
        table = cls(history, ring)
        n = packed[0]
        table.set_rows(_blank(max(_MIN_CAPACITY, n), history, ring))
        unpack_rows(packed, table.rows[:n])
        table._restore(ids, slots, free, regions, n)
        return table

    @classmethod
    def from_dense_state(cls, state: tuple) -> UserTable:
        """The table of a format 3 or 4 snapshot's state (:meth:`dense_state`'s shape)."""
        history, ring, ids, slots, free, regions, rows = state
        table = cls(history, ring)
        table.set_rows(_blank(max(_MIN_CAPACITY, len(rows)), history, ring))
        table.rows[: len(rows)] = rows
        table._restore(ids, slots, free, regions, len(rows))
        return table

    def _restore(self, ids: list[str], slots: np.ndarray, free: list[int], regions: list[str], used: int) -> None:
        self.slot_of = dict(zip(ids, slots.tolist(), strict=True))
        self.free = list(free)
        self.regions = list(regions)
        self.region_of = {name: i for i, name in enumerate(self.regions)}
        self.used = used

    @classmethod
    def from_users(cls, users: dict[str, list], ring: Optional[int] = None) -> UserTable:
        """The table of format 2's users: a dict of user id -> per-user list (the dict's order kept).

        The history ring is as long as the longest history held (the rules'
        ``history_size`` then takes over through :meth:`set_history`), the
        window ring at least as long as the fullest window.
        """
        history = max((len(user[_LEGACY_HISTORY]) for user in users.values()), default=1) or 1
        fullest = max((len(user[_LEGACY_TIMES]) for user in users.values()), default=0)
        size = max(ring or 1, fullest)
        table = cls(history, size)
        table.slots(tuple(users))
        rows = table.rows
        amounts = table.window_amount
        for slot, user in enumerate(users.values()):
            row = rows[slot]
            row[LAST_TS] = user[_LEGACY_LAST_TS]
            row[LAST_REGION] = table.region_ids((user[_LEGACY_REGION],))[0]
            row[VELOCITY_UNTIL : TRAVEL_UNTIL + 1] = user[_LEGACY_UNTIL : _LEGACY_UNTIL + 3]
            held = user[_LEGACY_HISTORY]
            row[HISTORY : HISTORY + len(held)] = held
            row[HISTORY_LEN] = len(held)
            row[HISTORY_POS] = len(held) % history
            times = user[_LEGACY_TIMES]
            row[table.window_ts : table.window_ts + len(times)] = times  # sorted: a run from 0
            row[amounts : amounts + len(times)] = user[_LEGACY_AMOUNTS]
            row[WINDOW_POS] = len(times) % size
        return table
