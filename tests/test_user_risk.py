"""Per-user rules: velocity, amount spike, impossible travel, cooldowns, bounded state."""

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.user_risk import UserRisk
from tests.events import T0

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
