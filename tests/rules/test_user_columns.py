"""User rules on columns (issue 14): the same alerts, whole records, as the per-user implementation.

The reference is the implementation the columns replaced, kept verbatim in
tests/support/legacy_user_risk.py. Both judging paths (rounds of numpy across
users, and per event over the same rows) are forced in turn, on streams built to
stress them: many events of one user per batch, equal and out-of-order times,
missing amounts, idle resets, the cap on users, bursts beyond the velocity ring,
rules changed between batches, and resumes from snapshots (of either format).
"""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.state.snapshots import MARK
from operators.steps import USER_RISK_FORMAT
from operators.users.user_risk import UserRisk, UserShard
from operators.users.user_table import HISTORY, HISTORY_LEN, HISTORY_POS, LAST_REGION, UserTable
from tests.support.events import T0
from tests.support.legacy_user_risk import UserRisk as LegacyUserRisk

RULES = {
    "velocity": {"window_seconds": 60, "max_count": 3, "max_amount": 10000, "cooldown_seconds": 30},
    "amount_spike": {"factor": 3, "min_history": 2, "history_size": 4, "cooldown_seconds": 100},
    "impossible_travel": {"window_seconds": 600, "cooldown_seconds": 300},
}
# Four users per shard at most, 1,800 s idle: the streams below hit both sweeps.
TIGHT = load_settings(
    environ={}, overrides={"rules": RULES, "users": {"idle_seconds": 1800, "max_users": 4, "shards": 1}}
)
# What a live rules file may change between batches (thresholds, not window lengths).
LOOSER = load_settings(
    environ={},
    overrides={
        "rules": {
            **RULES,
            "velocity": {**RULES["velocity"], "max_count": 6, "max_amount": 500, "cooldown_seconds": 5},
            "amount_spike": {**RULES["amount_spike"], "factor": 2, "min_history": 1, "cooldown_seconds": 0},
            "impossible_travel": {"window_seconds": 600, "cooldown_seconds": 10},
        },
        "users": {"idle_seconds": 1800, "max_users": 4, "shards": 1},
    },
)

ALWAYS_VECTOR, ALWAYS_SCALAR = 0, 10**9

_steps = st.lists(
    st.tuples(
        st.sampled_from("aaabbcdef"),  # one busy user: many events of one user per batch
        st.sampled_from([0, 0, 0, 1, 2, 5, 30, 70, 900, 2000]),  # seconds after the previous event
        st.sampled_from([0, 0, 0, 3, 15, 100]),  # seconds out of order
        st.sampled_from([None, 0.0, 0.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 400.0, 3000.0, 9000.0]),
        st.sampled_from(["EU", "EU", "EU", "US", "AP"]),
    ),
    min_size=1,
    max_size=160,
)


def _events(steps):
    now, events = float(T0), []
    for i, (user, gap, behind, amount, region) in enumerate(steps):
        now += gap
        events.append((user, now - behind, amount, region, f"t{i}"))
    return events


def _risk(settings, path, state=None):
    r = UserRisk(settings.rules, settings.users, state)
    r.scalar_below = path
    return r


@hsettings(max_examples=200, deadline=None)
@given(
    steps=_steps,
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=20),
    path=st.sampled_from([ALWAYS_VECTOR, ALWAYS_SCALAR, 2, 8]),
    changes=st.lists(st.booleans(), min_size=20, max_size=20),
    resumes=st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_columns_raise_the_alerts_of_the_per_user_implementation(steps, sizes, path, changes, resumes):
    """Whole alert records in order, and the users held (which, in what order), batch after batch."""
    events = _events(steps)
    new, old = _risk(TIGHT, path), LegacyUserRisk(TIGHT.rules, TIGHT.users)
    rules = TIGHT.rules
    start, batch = 0, 0
    while start < len(events):
        size = sizes[batch % len(sizes)]
        if changes[batch % 20]:
            rules = (LOOSER if batch % 2 else TIGHT).rules
            new.use_rules(rules)
            old.use_rules(rules)
        if resumes[batch % 20]:
            new = _risk(TIGHT, path, new.snapshot())
            new.use_rules(rules)  # as the flow does: the live rules are applied to a resumed shard
        got, want = new.process(events[start : start + size]), old.process(events[start : start + size])
        assert got == want
        assert list(new.users) == list(old.users)
        start += size
        batch += 1


@pytest.mark.parametrize("path", [ALWAYS_VECTOR, ALWAYS_SCALAR, 4, 16])
def test_seeded_random_streams_match_the_per_user_implementation(path):
    """Hypothesis favours small, simple streams; these are long and busy (thousands of alerts)."""
    rng = random.Random(path)
    seen = 0
    for _ in range(60):
        steps = [
            (
                rng.choice("aaabbcdef"),
                rng.choice([0, 0, 0, 1, 2, 5, 30, 70, 900, 2000]),
                rng.choice([0, 0, 0, 3, 15, 100]),
                rng.choice([None, 0.0, 0.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 400.0, 3000.0, 9000.0]),
                rng.choice(["EU", "EU", "EU", "US", "AP"]),
            )
            for _ in range(rng.randint(20, 200))
        ]
        events = _events(steps)
        new, old = _risk(TIGHT, path), LegacyUserRisk(TIGHT.rules, TIGHT.users)
        start = 0
        while start < len(events):
            size = rng.randint(1, 80)
            want = old.process(events[start : start + size])
            assert new.process(events[start : start + size]) == want
            assert list(new.users) == list(old.users)
            seen += len(want)
            start += size
    assert seen > 500


def test_both_paths_leave_the_same_rows():
    """Rounds across users and the per-event path follow one set of rules for every field,
    so whichever judged an event, the state after it is the same (a ring that never grows)."""
    roomy = load_settings(
        environ={},
        overrides={"rules": {**RULES, "velocity": {**RULES["velocity"], "max_count": 60}}, "users": {"shards": 1}},
    )
    rng = random.Random(5)
    for _ in range(20):
        steps = [
            (
                rng.choice("aaabbcdef"),
                rng.choice([0, 0, 1, 2, 5, 30, 70, 900]),
                rng.choice([0, 0, 0, 3, 15, 100]),
                rng.choice([None, 0.5, 5.0, 20.0, 400.0, 9000.0]),
                rng.choice(["EU", "EU", "US"]),
            )
            for _ in range(rng.randint(20, 200))
        ]
        events = _events(steps)
        vector, scalar = _risk(roomy, ALWAYS_VECTOR), _risk(roomy, ALWAYS_SCALAR)
        start = 0
        while start < len(events):
            size = rng.randint(1, 50)
            assert vector.process(events[start : start + size]) == scalar.process(events[start : start + size])
            start += size
        assert vector.table.ring == scalar.table.ring == 62
        assert vector.users == scalar.users
        used = vector.table.used
        assert np.array_equal(vector.table.rows[:used], scalar.table.rows[:used], equal_nan=True)


def test_a_burst_beyond_the_velocity_ring_is_counted_exactly():
    """Forty payments in a minute with a ring of five: the ring grows, every count is the true one."""
    rules = {**RULES, "velocity": {**RULES["velocity"], "cooldown_seconds": 0}}
    eager = load_settings(environ={}, overrides={"rules": rules, "users": {"shards": 1}})
    events = [("a", float(T0) + i, 1.0, "EU", f"t{i}") for i in range(40)]
    for path in (ALWAYS_VECTOR, ALWAYS_SCALAR):
        new, old = _risk(eager, path), LegacyUserRisk(eager.rules, eager.users)
        assert new.table.ring == 5  # max_count + 2
        got = []
        for start in range(0, len(events), 20):
            out = new.process(events[start : start + 20])
            assert out == old.process(events[start : start + 20])
            got += out
        assert new.table.ring >= 40
        assert [a["details"]["count"] for a in got] == list(range(4, 41))


def test_one_users_events_in_one_batch_take_one_round_each():
    """A batch of ten distinct users and one with 30 events: exact on the rounds path (no scalar fallback)."""
    events = [(f"u{i}", float(T0) + i, 20.0, "EU", f"x{i}") for i in range(10)]
    events += [
        ("busy", float(T0) + i // 3, 20.0 if i < 20 else 500.0, "EU" if i % 5 else "US", f"b{i}") for i in range(30)
    ]
    events.sort(key=lambda e: (e[1], e[4]))
    new, old = _risk(TIGHT, ALWAYS_VECTOR), LegacyUserRisk(TIGHT.rules, TIGHT.users)
    got = new.process(events)
    assert got == old.process(events)
    assert {a["type"] for a in got} == {"VELOCITY", "AMOUNT_SPIKE", "IMPOSSIBLE_TRAVEL"}


@hsettings(max_examples=60, deadline=None)
@given(steps=_steps, cut=st.integers(0, 160), path=st.sampled_from([ALWAYS_VECTOR, ALWAYS_SCALAR]))
def test_format_2_snapshots_resume_with_their_users(steps, cut, path):
    """A shard written by the per-user release (format 2) resumes as if it had never stopped."""
    events = sorted(_events(steps), key=lambda e: (e[1], e[4]))
    before, after = events[:cut], events[cut:]
    old = LegacyUserRisk(TIGHT.rules, TIGHT.users)
    old.process(before)
    shard = UserShard(TIGHT.rules, TIGHT.users, 10)
    v2 = pickle.dumps((old.state(), shard.clock.state(), shard.held.state()))
    resumed = UserShard(TIGHT.rules, TIGHT.users, 10, USER_RISK_FORMAT.load((MARK, "user_risk", 2, v2)))
    resumed.risk.scalar_below = path
    assert list(resumed.risk.users) == list(old.users)
    assert resumed.risk.process(after) == old.process(after)


def test_a_restart_with_another_history_size_keeps_the_most_recent_amounts():
    table = UserTable(history=4, ring=2)
    slot = table.slots(("u",))[0]
    row = table.rows[slot]
    for amount in range(1, 8):  # a full ring after 1..7: 5, 6, 7 and 4 at positions 0..3
        row[HISTORY + int(row[HISTORY_POS])] = amount
        row[HISTORY_POS] = (row[HISTORY_POS] + 1) % 4
        row[HISTORY_LEN] = min(row[HISTORY_LEN] + 1, 4)
    longer = UserTable.from_state(table.state())
    longer.set_history(6)
    assert longer.rows[slot, HISTORY : HISTORY + 6].tolist()[:4] == [4.0, 5.0, 6.0, 7.0]
    assert np.isnan(longer.rows[slot, HISTORY + 4 : HISTORY + 6]).all()
    assert (longer.rows[slot, HISTORY_LEN], longer.rows[slot, HISTORY_POS]) == (4, 4)
    shorter = UserTable.from_state(table.state())
    shorter.set_history(2)
    assert shorter.rows[slot, HISTORY : HISTORY + 2].tolist() == [6.0, 7.0]
    assert (shorter.rows[slot, HISTORY_LEN], shorter.rows[slot, HISTORY_POS]) == (2, 0)


def test_freed_slots_are_reused_and_start_blank():
    r = _risk(TIGHT, ALWAYS_VECTOR)
    r.process([(f"u{i}", float(T0) + i, 10.0, "EU", f"t{i}") for i in range(6)])  # cap 4: two swept
    assert len(r.users) == 4 and len(r.table.free) == 2
    used = r.table.used
    out = r.process([("new", float(T0) + 10, 20000.0, "US", "t9")])  # first payment: only the amount limit
    assert [a["type"] for a in out] == ["VELOCITY"] and out[0]["details"]["count"] == 1
    assert r.table.used == used  # a freed slot, not a new one


def test_region_names_of_users_gone_are_forgotten():
    """Regions are interned; a stream of distinct names must not grow the table for ever."""
    idle = load_settings(environ={}, overrides={"rules": RULES, "users": {"idle_seconds": 100, "shards": 1}})
    r = _risk(idle, ALWAYS_VECTOR)
    events = [(f"u{i % 3}", float(T0) + i, 10.0, f"R{i}", f"t{i}") for i in range(600)]
    for start in range(0, 600, 50):
        r.process(events[start : start + 50])
    assert len(r.table.regions) <= 256 + 50
    last = {user: r.table.regions[int(r.table.rows[slot, LAST_REGION])] for user, slot in r.users.items()}
    assert last == {"u0": "R597", "u1": "R598", "u2": "R599"}  # renumbered, still the right names
    for name, i in r.table.region_of.items():
        assert r.table.regions[i] == name


def _same_table(got: UserTable, want: UserTable) -> None:
    """Every bit of the used rows, and the interning, as they were."""
    assert (got.history, got.ring, got.used) == (want.history, want.ring, want.used)
    assert np.array_equal(got.rows[: got.used].view(np.int64), want.rows[: want.used].view(np.int64))
    assert list(got.slot_of.items()) == list(want.slot_of.items())
    assert (got.free, got.regions, got.region_of) == (want.free, want.regions, want.region_of)


@hsettings(max_examples=80, deadline=None)
@given(
    steps=_steps,
    cut=st.integers(0, 160),
    path=st.sampled_from([ALWAYS_VECTOR, ALWAYS_SCALAR]),
    old_format=st.booleans(),
)
def test_packed_snapshots_restore_every_bit_and_resume_alike(steps, cut, path, old_format):
    """A shard restored from its packed rows (format 5), or from a format 4 snapshot's whole rows
    migrated, holds the same bits as the one that wrote it and judges the next events alike."""
    events = sorted(_events(steps), key=lambda e: (e[1], e[4]))
    before, after = events[:cut], events[cut:]
    shard = UserShard(TIGHT.rules, TIGHT.users, 10)
    shard.risk.scalar_below = path
    shard.risk.process(before)
    if old_format:  # format 4: the rows whole
        risk = (shard.risk.table.dense_state(), shard.risk.newest, shard.risk.next_sweep)
        v4 = pickle.dumps((risk, shard.clock.state(), shard.held.state()))
        snapshot = (MARK, "user_risk", 4, v4)
    else:
        snapshot = USER_RISK_FORMAT.save(shard.snapshot())
    resumed = UserShard(TIGHT.rules, TIGHT.users, 10, USER_RISK_FORMAT.load(pickle.loads(pickle.dumps(snapshot))))
    resumed.risk.scalar_below = path
    _same_table(resumed.risk.table, shard.risk.table)
    assert (resumed.risk.newest, resumed.risk.next_sweep) == (shard.risk.newest, shard.risk.next_sweep)
    assert resumed.risk.process(after) == shard.risk.process(after)
    _same_table(resumed.risk.table, shard.risk.table)


def test_packed_rows_keep_nan_payloads_negative_zero_and_grown_rings():
    """Fields equal to a blank row's in value but not in bits (-0.0 against 0.0, another NaN) are
    stored; a ring grown past its start and freed slots come back as they were."""
    table = UserTable(history=3, ring=2)
    table.slots([f"u{i}" for i in range(5)])
    table.grow_ring()
    table.sweep(horizon=0.0, max_users=10)  # none has paid: all five freed, rows blank again
    v, w = table.slots(["v", "w"])
    assert len(table.free) == 3
    table.rows[v, table.window_amount] = -0.0
    table.rows[v, HISTORY] = np.array([0x7FF8_0000_0000_0001]).view(np.float64)[0]
    table.rows[w] = np.arange(table.width, dtype=np.float64)
    restored = UserTable.from_state(pickle.loads(pickle.dumps(table.state())))
    _same_table(restored, table)
    assert UserTable.from_dense_state(table.dense_state()).rows.tobytes() == restored.rows.tobytes()


def test_a_snapshot_stores_only_the_fields_that_differ_from_a_blank_row():
    """Users with three payments fill 3 of 20 amounts and 3 of 12 window entries: the packed rows
    take under a third of the whole rows' bytes (53 floats a user with the defaults)."""
    defaults = load_settings(environ={}, overrides={"users": {"shards": 1}})
    risk = UserRisk(defaults.rules, defaults.users)
    risk.process(
        [
            (f"u{u:05d}", float(T0) + r * 600 + u * 0.01, 20.0 + u % 7, "EU", f"t{r}-{u}")
            for r in range(3)
            for u in range(2000)
        ]
    )
    packed, whole = len(risk.snapshot()), len(pickle.dumps(risk.table.dense_state()))
    assert whole > 2000 * 53 * 8
    assert packed < whole / 3


def test_rows_mostly_set_are_stored_whole_and_the_first_packed_bytes_still_read():
    """Users with full rings are stored as whole rows (no mask); the bytes the first release of
    format 5 wrote for the mask and values read as the arrays do."""
    table = UserTable(history=3, ring=2)
    slots = table.slots(["a", "b", "c"])
    table.rows[slots] = np.arange(3 * table.width, dtype=np.float64).reshape(3, table.width)
    n, width, mask, values = state = table.state()[6]
    assert mask is None and len(values) == n * width
    _same_table(UserTable.from_state(pickle.loads(pickle.dumps(table.state()))), table)

    table.rows[slots[:2]] = table.blank  # two of three blank: packed
    history, ring, ids, slots_, free, regions, (n, width, mask, values) = table.state()
    assert mask is not None and len(values) == width
    as_bytes = (history, ring, ids, slots_, free, regions, (n, width, mask.tobytes(), values.tobytes()))
    _same_table(UserTable.from_state(as_bytes), table)
    assert state[:2] == (3, table.width)
