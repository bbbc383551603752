"""Held user events as column blocks (issue 14): the same releases as the buffer of event tuples.

The reference is the buffer the blocks replaced, kept verbatim in
tests/support/legacy_event_order.py: every release must hand on the same events
in the same order (ties in time broken by transaction id, full ties by arrival),
with the same counts held and forced, for chunks from several partitions out of
step, out-of-order chunks, equal times and the cap on held events. Also: the
blocks cross processes by pickle unchanged, and a format 3 snapshot (held
tuples) resumes as format 4 with the same releases.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.records import AMOUNT, WHOLE, UserColumns
from operators.state.snapshots import MARK
from operators.steps import USER_RISK_FORMAT
from operators.users.event_order import EventTimeBuffer
from operators.users.user_risk import UserEvents, UserShard
from tests.support.events import T0
from tests.support.legacy_event_order import EventTimeBuffer as LegacyEventTimeBuffer
from tests.support.legacy_user_risk import UserRisk as LegacyUserRisk

_EVENT = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0]),  # few times: many ties
    st.sampled_from([None, 0.0, 5, 20.0, 20, 400.5]),  # None, ints and floats
    st.sampled_from(["EU", "US", "AP"]),
    st.sampled_from(["t1", "t2", "t3", "t10", "x"]),  # equal ids too: full ties keep arrival order
)
_STEPS = st.lists(
    st.tuples(
        st.lists(_EVENT, max_size=12),  # one chunk's events (any order)
        st.sampled_from([0.0, 1.0, 2.0, 4.0, 9.0, 20.0]),  # the chunk's offset in time
        st.sampled_from([-1.0, 0.0, 2.0, 6.0, 15.0, math.inf]),  # the frontier after it (-1: no release)
    ),
    min_size=1,
    max_size=25,
)


def _chunk(events: list[tuple], offset: float) -> list[tuple]:
    return [(user, T0 + offset + ts, amount, region, txn) for user, ts, amount, region, txn in events]


def _typed(rows: list[tuple]) -> list[tuple]:
    """Rows with their amount's type: an int amount must come back an int."""
    return [(row, type(row[2])) for row in rows]


@hsettings(max_examples=200, deadline=None)
@given(steps=_STEPS, max_held=st.sampled_from([1, 3, 10, 1000]), resume=st.booleans())
def test_blocks_release_what_the_tuple_runs_released(steps, max_held, resume):
    new, old = EventTimeBuffer(max_held), LegacyEventTimeBuffer(max_held)
    frontier = float("-inf")
    for events, offset, ahead in steps:
        rows = _chunk(events, offset)
        new.add(UserColumns.of_rows(rows))
        old.add(rows)
        if ahead < 0:
            continue
        frontier = max(frontier, T0 + offset + ahead)
        if resume:  # the state pickles and resumes mid-stream
            new = EventTimeBuffer(max_held, pickle.loads(pickle.dumps(new.state())))
        released = new.release(frontier)
        want = old.release(frontier)
        assert _typed([] if released is None else released.rows()) == _typed(want)
        assert (len(new), new.forced) == (len(old), old.forced)
    rest = new.release(math.inf)
    assert _typed([] if rest is None else rest.rows()) == _typed(old.release(math.inf))


def test_columns_pickle_as_they_are_even_when_cut():
    rows = [(f"u{i % 3}", T0 + i / 4, [None, 7, 2.5][i % 3], ["EU", "US"][i % 2], f"t{i}") for i in range(40)]
    block = UserColumns.of_rows(rows)
    part = block.cut(5, 17)  # a view of the numbers
    for columns, want in ((block, rows), (part, rows[5:17])):
        back = pickle.loads(pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL))
        assert _typed(back.rows()) == _typed(want)
        assert back.numbers.shape == (4, len(want)) and back.numbers.dtype == np.float64
    assert np.isnan(block.numbers[AMOUNT, 0]) and block.numbers[WHOLE, 1] == 1.0 and block.numbers[WHOLE, 2] == 0.0


def test_merged_blocks_share_one_region_numbering():
    first = UserColumns.of_rows([("a", T0, 1.0, "EU", "t1"), ("b", T0 + 2, 1.0, "US", "t2")])
    second = UserColumns.of_rows([("c", T0 + 1, 1.0, "AP", "t3"), ("d", T0 + 3, 1.0, "EU", "t4")])
    merged = UserColumns.concat([first, second])
    assert merged.regions == ["EU", "US", "AP"]
    assert [row[3] for row in merged.rows()] == ["EU", "US", "AP", "EU"]


SETTINGS = load_settings(environ={}, overrides={"users": {"shards": 1, "idle_seconds": 3600}})


def test_format_3_snapshots_resume_their_held_tuples_as_blocks():
    """A shard written with held event tuples (format 3) releases them as that release would have."""
    history = [("u1", T0 + i * 100, 20, "EU", f"h{i}") for i in range(5)]  # int amounts: quoted as ints
    later = [("u1", T0 + 700, 400, "US", "s1"), ("u2", T0 + 700, 10.0, "EU", "s0")]
    shard = UserShard(SETTINGS.rules, SETTINGS.users, 10)
    old_held = LegacyEventTimeBuffer(10)
    old_held.add(history)
    old_held.add(later)
    risk = (shard.risk.table.dense_state(), shard.risk.newest, shard.risk.next_sweep)  # format 3's rows: whole
    v3 = pickle.dumps((risk, shard.clock.state(), old_held.state()))
    resumed = UserShard(SETTINGS.rules, SETTINGS.users, 10, USER_RISK_FORMAT.load((MARK, "user_risk", 3, v3)))
    assert len(resumed.held) == 7
    out = resumed.add([UserEvents("p", 1, None, True, False, None)], now=0)
    reference = LegacyUserRisk(SETTINGS.rules, SETTINGS.users)
    want = reference.process(sorted(history + later, key=lambda e: (e[1], e[4])))
    assert out == want and len(resumed.held) == 0
    [spike] = [alert for alert in out if alert["type"] == "AMOUNT_SPIKE"]
    assert type(spike["details"]["amount"]) is int  # the input's 400, not 400.0


def test_large_blocks_with_ties_out_of_transaction_order_leave_as_the_tuple_runs_did():
    """Blocks past the size checked in Python take the numpy checks; ties among them are re-sorted."""
    rng = np.random.default_rng(3)
    rows = [("u", T0 + i // 5, float(i), "EU", f"t{999 - i}") for i in range(400)]  # ids fall within a second
    chunks = [rows[i : i + 130] for i in range(0, 400, 130)]
    chunks = [[chunk[k] for k in rng.permutation(len(chunk))] for chunk in chunks]  # each chunk shuffled
    new, old = EventTimeBuffer(10_000), LegacyEventTimeBuffer(10_000)
    for chunk in chunks:
        new.add(UserColumns.of_rows(chunk))
        old.add(chunk)
    middle = T0 + 41.0
    assert _typed(new.release(middle).rows()) == _typed(old.release(middle))
    rest = old.release(math.inf)
    assert _typed(new.release(math.inf).rows()) == _typed(rest) and len(rest) == 195


def test_blocks_unpickled_from_a_snapshot_are_judged_on_both_paths():
    """A resumed shard's held blocks come back read-only (numbers from bytes): the rules only read them."""
    rows = [(f"u{i % 5}", T0 + i, 20.0 if i < 30 else 900.0, "EU" if i % 7 else "US", f"t{i:02d}") for i in range(60)]
    for path in (0, 10**9):  # rounds only, per-event path only
        shard = UserShard(SETTINGS.rules, SETTINGS.users, 10)
        shard.add([UserEvents("p", 1, None, False, False, UserColumns.of_rows(rows))], now=0)
        resumed = UserShard(SETTINGS.rules, SETTINGS.users, 10, shard.snapshot())
        resumed.risk.scalar_below = path
        [(_, _, block)] = resumed.held.runs
        assert not block.numbers.flags.writeable
        out = resumed.flush()
        assert out == LegacyUserRisk(SETTINGS.rules, SETTINGS.users).process(rows) and out
