"""Per-user rules: velocity, amount spike, impossible travel, cooldowns, bounded state."""

import pickle

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.records import UserColumns
from operators.state.snapshots import MARK, SnapshotError
from operators.steps import USER_RISK_FORMAT
from operators.users.user_risk import UserEvents, UserRisk, UserShard
from tests.support.events import T0
from tests.support.legacy_user_risk import UserRisk as LegacyUserRisk

S = load_settings(environ={})


def risk(**users):
    s = load_settings(environ={}, overrides={"users": users}) if users else S
    return UserRisk(s.rules, s.users)


def ev(i, at, user="u1", amount=50.0, region="EU"):
    return (user, T0 + at, amount, region, f"t{i}")


def types(alerts):
    return [a["type"] for a in alerts]


def test_velocity_by_count_fires_once_per_burst():
    r = risk()
    out = r.process([ev(i, i * 2) for i in range(10)])  # 10 in 20 s: at the limit, not above
    assert out == []
    out = r.process([ev(i, 20 + i) for i in range(10, 30)])  # keeps going
    assert types(out) == ["VELOCITY"]
    alert = out[0]
    assert (alert["key"], alert["transaction_id"], alert["value"], alert["threshold"]) == ("u1", "t10", 11.0, 10.0)
    assert alert["alert_id"] == "VELOCITY:u1:t10:OPEN"


def test_velocity_fires_again_after_a_quiet_cooldown():
    r = risk()
    first = r.process([ev(i, i) for i in range(11)])
    second = r.process([ev(100 + i, 1000 + i) for i in range(11)])
    assert types(first) == types(second) == ["VELOCITY"]


def test_velocity_window_slides():
    r = risk()
    out = r.process([ev(i, i * 7) for i in range(30)])  # one every 7 s: 9 per minute at most
    assert out == []


def test_velocity_by_amount():
    r = risk()
    out = r.process([ev(0, 0, amount=6000.0), ev(1, 30, amount=4000.0)])
    assert out == []  # exactly 10,000: not above
    out = r.process([ev(2, 40, amount=0.01)])
    assert types(out) == ["VELOCITY"] and out[0]["details"]["limit"] == "amount"


def test_amount_spike_needs_history_and_factor():
    r = risk()
    assert r.process([ev(0, 0, amount=10.0), ev(1, 100, amount=500.0)]) == []  # no history yet
    r = risk()
    history = [ev(i, i * 100, amount=20.0) for i in range(5)]
    assert r.process(history) == []
    assert r.process([ev(5, 600, amount=199.0)]) == []  # 9.95x
    out = r.process([ev(6, 700, amount=200.0)])  # 10x the median of 20
    assert types(out) == ["AMOUNT_SPIKE"]
    assert out[0]["value"] == 10.0 and out[0]["details"]["typical_amount"] == 20.0


def test_amount_spike_cooldown_and_median_robustness():
    r = risk()
    r.process([ev(i, i * 100, amount=20.0) for i in range(5)])
    out = r.process([ev(5, 600, amount=400.0), ev(6, 650, amount=400.0)])
    assert types(out) == ["AMOUNT_SPIKE"]  # the second spike is in the cooldown


def test_impossible_travel_within_window_only():
    r = risk()
    out = r.process([ev(0, 0, region="EU"), ev(1, 1799, region="US")])
    assert types(out) == ["IMPOSSIBLE_TRAVEL"]
    assert out[0]["details"] == {"from_region": "EU", "to_region": "US", "seconds_between": 1799.0}
    r = risk()
    assert r.process([ev(0, 0, region="EU"), ev(1, 1801, region="US")]) == []


def test_travel_burst_raises_one_alert():
    r = risk()
    out = r.process([ev(i, i * 60, region="EU" if i % 2 else "US") for i in range(10)])
    assert types(out) == ["IMPOSSIBLE_TRAVEL"]


def test_users_are_isolated():
    r = risk()
    out = r.process([ev(i, i, user=f"u{i}") for i in range(50)])
    assert out == []


def test_idle_users_expire_in_event_time():
    r = risk(idle_seconds=100)
    r.process([ev(0, 0, user="old"), ev(1, 50, user="new")])
    r.process([ev(2, 130, user="new")])
    assert list(r.users) == ["new"]


def test_user_count_is_capped():
    r = risk(max_users=64 * 3, shards=64)  # 3 per shard
    r.process([ev(i, i, user=f"u{i}") for i in range(10)])
    assert list(r.users) == ["u7", "u8", "u9"]


def test_snapshot_round_trip_continues_identically():
    events = [ev(i, i * 3, amount=20.0 if i < 8 else 500.0, region="EU" if i < 9 else "US") for i in range(14)]
    whole = risk().process(events)
    first = risk()
    part = first.process(events[:7])
    resumed = UserRisk(S.rules, S.users, first.snapshot())
    part += resumed.process(events[7:])
    assert part == whole
    assert sorted(types(whole)) == ["AMOUNT_SPIKE", "IMPOSSIBLE_TRAVEL", "VELOCITY"]


def _reference_alerts(events, rules, idle_seconds):
    """The three rules written the slow, obvious way: every user's full history, rescanned."""
    users: dict = {}
    out = []
    for user_id, ts, amount, region, txn in events:
        u = users.get(user_id)
        if u is None or ts - u["last_ts"] > idle_seconds:
            u = users[user_id] = {"events": [], "amounts": [], "last_ts": ts, "region": None, "until": {}}
        never = float("-inf")
        if (
            u["region"] is not None
            and region != u["region"]
            and abs(ts - u["last_ts"]) <= rules.impossible_travel.window_seconds
        ):
            if ts > u["until"].get("travel", never):
                out.append(("IMPOSSIBLE_TRAVEL", user_id, txn))
            u["until"]["travel"] = ts + rules.impossible_travel.cooldown_seconds
        if ts >= u["last_ts"] or u["region"] is None:
            u["last_ts"], u["region"] = ts, region
        u["events"].append((ts, amount or 0.0))
        newest = max(t for t, _ in u["events"])
        # An event leaves the window for good once the newest is window_seconds past it.
        u["events"] = [(t, a) for t, a in u["events"] if t > newest - rules.velocity.window_seconds]
        count, total = len(u["events"]), sum(a for _, a in u["events"])
        if count > rules.velocity.max_count or total > rules.velocity.max_amount:
            if ts > u["until"].get("velocity", never):
                out.append(("VELOCITY", user_id, txn))
            u["until"]["velocity"] = ts + rules.velocity.cooldown_seconds
        if amount is not None:
            recent = sorted(u["amounts"][-rules.amount_spike.history_size :])
            if len(recent) >= rules.amount_spike.min_history:
                mid = len(recent) // 2
                typical = recent[mid] if len(recent) % 2 else (recent[mid - 1] + recent[mid]) / 2
                if typical > 0 and amount >= rules.amount_spike.factor * typical:
                    if ts > u["until"].get("spike", never):
                        out.append(("AMOUNT_SPIKE", user_id, txn))
                    u["until"]["spike"] = ts + rules.amount_spike.cooldown_seconds
            u["amounts"].append(amount)
    return out


_steps = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([0, 0, 1, 2, 5, 30, 70, 900, 4000]),  # seconds after the previous event
        st.sampled_from([0, 0, 0, 3, 15]),  # seconds out of order
        st.sampled_from([None, 0.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 400.0, 3000.0, 9000.0]),  # whole: exact sums
        st.sampled_from(["EU", "EU", "EU", "US"]),
    ),
    min_size=30,
    max_size=200,
)


# Small limits, so that short random streams cross every boundary.
TIGHT = load_settings(
    environ={},
    overrides={
        "rules": {
            "velocity": {"window_seconds": 60, "max_count": 3, "max_amount": 10000, "cooldown_seconds": 30},
            "amount_spike": {"factor": 3, "min_history": 2, "history_size": 4, "cooldown_seconds": 100},
            "impossible_travel": {"window_seconds": 600, "cooldown_seconds": 300},
        },
        "users": {"idle_seconds": 3600},
    },
)


@hsettings(max_examples=150, deadline=None)
@given(steps=_steps, batch=st.integers(1, 40))
def test_rules_match_a_naive_reference(steps, batch):
    """The incremental state (sorted window, sliding median, sweeps) decides exactly as rescanning would."""
    now, events = float(T0), []
    for i, (user, gap, behind, amount, region) in enumerate(steps):
        now += gap
        events.append((user, now - behind, amount, region, f"t{i}"))
    r = UserRisk(TIGHT.rules, TIGHT.users)
    got = []
    for start in range(0, len(events), batch):
        r = UserRisk(TIGHT.rules, TIGHT.users, r.snapshot())  # a resume between batches changes nothing
        got += [(a["type"], a["user_id"], a["transaction_id"]) for a in r.process(events[start : start + batch])]
    assert got == _reference_alerts(events, TIGHT.rules, TIGHT.users.idle_seconds)


# -- event-time order across partitions (UserShard) ---------------------------------

LATENESS = 15  # the steps above put an event at most 15 s behind its predecessors
ORDERED = load_settings(
    environ={},
    overrides={
        "rules": TIGHT.rules.model_dump(),
        "users": {"idle_seconds": 3600, "shards": 1},
        "windows": {"allowed_lateness_seconds": LATENESS},
    },
)


def shard(state=None, **users):
    s = load_settings(environ={}, overrides={"users": {"shards": 1, **users}}) if users else ORDERED
    return UserShard(s.rules, s.users, LATENESS, state)


def chunk(part, events, n_parts=2, done=False, idle=False, lateness=LATENESS, newest=None):
    """A chunk slice as the parse step would send it (the watermark is the newest time minus lateness)."""
    if newest is None:
        newest = max((e[1] for e in events), default=None)
    columns = UserColumns.of_rows(events) if events else None
    return UserEvents(part, n_parts, None if newest is None else newest - lateness, done, idle, columns)


def keys(alerts):
    return [(a["type"], a["user_id"], a["transaction_id"]) for a in alerts]


def test_a_spike_ahead_of_its_history_is_judged_after_it():
    """The issue's case: the spike comes through a partition that is ahead of the one with the history."""
    history = [ev(i, i * 100, amount=20.0) for i in range(5)]
    spike = [ev(9, 700, amount=400.0)]
    s = shard()
    out = s.add([chunk("fast", spike, newest=T0 + 4000)], now=0)
    assert out == [] and len(s.held) == 1  # held: the slow partition has not reported yet
    out = s.add([chunk("slow", history)], now=0)
    assert out == []  # the slow partition's frontier (400 - 15) is still before the spike
    out = s.add([chunk("slow", [], newest=T0 + 1000)], now=0)
    assert keys(out) == [("AMOUNT_SPIKE", "u1", "t9")] and len(s.held) == 0


def test_a_partition_that_ends_stops_holding_events_back():
    s = shard()
    s.add([chunk("a", [ev(0, 0, region="EU")])], now=0)
    out = s.add([chunk("b", [ev(1, 60, region="US")], done=True)], now=0)
    assert out == []  # a's frontier is -15 s: nothing passed
    out = s.add([chunk("a", [], done=True)], now=0)
    assert keys(out) == [("IMPOSSIBLE_TRAVEL", "u1", "t1")]


def test_an_idle_partition_does_not_hold_events_back():
    s = shard()
    s.add([chunk("a", [ev(0, 0, region="EU")])], now=0)
    s.add([chunk("b", [ev(1, 60, region="US")], newest=T0 + 100)], now=0)
    out = s.add([chunk("a", [], idle=True, newest=T0)], now=0)
    assert keys(out) == [("IMPOSSIBLE_TRAVEL", "u1", "t1")]  # b's frontier (85 s) passed both


def test_zero_order_lateness_judges_an_in_order_event_with_the_next_one():
    s = shard(order_lateness_seconds=0)
    out = s.add([chunk("a", [ev(0, 0, region="EU"), ev(1, 1, region="US")], n_parts=1)], now=0)
    assert out == []  # the newest event (1 s) waits for the partition to pass it
    out = s.add([chunk("a", [ev(2, 1.001, user="u2")], n_parts=1)], now=0)
    assert keys(out) == [("IMPOSSIBLE_TRAVEL", "u1", "t1")]
    assert keys(shard(order_lateness_seconds=0).flush()) == []


def test_end_of_input_judges_everything_held():
    s = shard()
    s.add([chunk("a", [ev(0, 0, region="EU"), ev(1, 60, region="US")])], now=0)
    assert keys(s.flush()) == [("IMPOSSIBLE_TRAVEL", "u1", "t1")]


def test_held_events_are_capped_and_leave_in_order():
    s = shard(max_held_events=4)
    s.add([chunk("slow", [], newest=T0)], now=0)
    out = s.add([chunk("fast", [ev(i, 100 + i, region="EU" if i < 5 else "US") for i in range(7)])], now=0)
    assert len(s.held) <= 4 and s.held.forced == 7 - len(s.held)
    out += s.flush()
    assert keys(out) == [("IMPOSSIBLE_TRAVEL", "u1", "t5")]


def _resume(snapshot):
    return UserShard(S.rules, S.users, S.windows.allowed_lateness_seconds, USER_RISK_FORMAT.load(snapshot))


def test_arrival_order_snapshots_migrate_with_their_users():
    """Unversioned (before the envelope) and format 1 snapshots of the rules' state alone."""
    old = LegacyUserRisk(S.rules, S.users)  # the rules' state as those releases wrote it
    old.process([ev(i, i * 100, amount=20.0) for i in range(5)])
    for snapshot in (old.snapshot(), (MARK, "user_risk", 1, old.snapshot())):
        s = _resume(snapshot)
        assert list(s.risk.users) == ["u1"] and len(s.held) == 0 and s.clock.parts == {}
        out = s.add([chunk("a", [ev(5, 600, amount=400.0)], n_parts=1, done=True)], now=0)
        assert keys(out) == [("AMOUNT_SPIKE", "u1", "t5")]


def _held_as_tuples(s):
    """The shard's held events as releases before format 4 held them: runs of event tuples."""
    runs, held, forced, seq = s.held.state()
    return ([(oldest, number, block.rows()) for oldest, number, block in runs], held, forced, seq)


def test_inner_tagged_snapshots_migrate_with_what_they_held():
    """Format 1 of the first event-time release: the shard's triple behind a tag of its own."""
    s = shard()
    s.add([chunk("a", [ev(0, 0, region="EU"), ev(1, 60, region="US")], n_parts=1)], now=0)
    legacy = LegacyUserRisk(ORDERED.rules, ORDERED.users)  # the users as that release held them
    legacy.process([ev(0, 0, region="EU")])
    tagged = pickle.dumps(("paywatch.user_shard", 2, legacy.state(), s.clock.state(), _held_as_tuples(s)))
    resumed = _resume((MARK, "user_risk", 1, tagged))
    assert len(resumed.held) == 1 and set(resumed.clock.parts) == {"a"}  # the first was judged
    assert keys(resumed.flush()) == [("IMPOSSIBLE_TRAVEL", "u1", "t1")]


def test_current_snapshots_round_trip_and_unknown_ones_fail_clearly():
    s = shard()
    s.add([chunk("a", [ev(0, 0)], n_parts=1)], now=0)
    assert len(_resume(USER_RISK_FORMAT.save(s.snapshot())).held) == 1
    with pytest.raises(SnapshotError, match="user_risk"):
        USER_RISK_FORMAT.load((MARK, "user_risk", 1, pickle.dumps(["something", "else"])))


@hsettings(max_examples=150, deadline=None)
@given(
    steps=_steps,
    n_parts=st.integers(1, 4),
    assignment=st.lists(st.integers(0, 3), min_size=200, max_size=200),
    rnd=st.randoms(use_true_random=False),
)
def test_any_arrival_order_matches_the_reference_in_event_time_order(steps, n_parts, assignment, rnd):
    """Events spread over partitions, read interleaved in chunks of any size, with resumes in between:
    the alerts are the naive reference's on the events sorted by (event time, transaction id)."""
    now, events = float(T0), []
    for i, (user, gap, behind, amount, region) in enumerate(steps):
        now += gap
        events.append((user, now - behind, amount, region, f"t{i}"))
    queues = [[e for i, e in enumerate(events) if assignment[i] % n_parts == p] for p in range(n_parts)]
    newest = [None] * n_parts
    s, got = shard(), []
    while any(queues):
        p = rnd.choice([p for p in range(n_parts) if queues[p]])
        size = rnd.randint(1, 25)
        part_events, queues[p] = queues[p][:size], queues[p][size:]
        top = max(e[1] for e in part_events)
        newest[p] = top if newest[p] is None else max(newest[p], top)
        got += keys(s.add([chunk(f"p{p}", part_events, n_parts, done=not queues[p], newest=newest[p])], now=0))
        if rnd.random() < 0.2:
            s = shard(s.snapshot())  # a resume changes nothing
    got += keys(s.flush())  # partitions that never had an event never reported: end of input
    ordered = sorted(events, key=lambda e: (e[1], e[4]))
    assert got == _reference_alerts(ordered, ORDERED.rules, ORDERED.users.idle_seconds)
