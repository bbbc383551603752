"""The simulator: deterministic, resumable, partitioned by user, valid, labelled."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from config.settings import Settings, SimulatorSettings
from connectors.simulator.scenarios import SCENARIOS
from connectors.simulator.source import MERCHANTS, SimulatorSource, iter_events, scenario_labels
from operators.parse import ChunkParser

START = datetime(2025, 7, 9, 19, 0, tzinfo=UTC)


def _settings(**overrides) -> SimulatorSettings:
    base = dict(scenario="mixed", events=30_000, rate=0, seed=3, start=START, event_rate=50, users=2_000)
    base.update(overrides)
    return SimulatorSettings(**base)


def _drain(source: SimulatorSource, part: str, resume=None, max_batches=None):
    """Chunks of one partition until its end (or ``max_batches``), and its snapshot."""
    partition = source.build_part("sim", part, resume)
    chunks = []
    try:
        while max_batches is None or len(chunks) < max_batches:
            chunks.extend(partition.next_batch())
    except StopIteration:
        pass
    return chunks, partition.snapshot()


def _lines(chunks) -> list[bytes]:
    return [line for chunk in chunks for line in chunk.lines]


def test_same_seed_same_events_other_seed_other_events():
    first = list(iter_events(_settings(events=5_000)))
    assert first == list(iter_events(_settings(events=5_000)))
    assert first != list(iter_events(_settings(events=5_000, seed=4)))


def test_partitions_are_disjoint_complete_and_keyed_by_user():
    settings = _settings(partitions=3)
    source = SimulatorSource(settings, batch_size=500)
    assert source.list_parts() == ["simulator/0", "simulator/1", "simulator/2"]
    everything = [payload for _user, payload in iter_events(settings)]
    owners: dict[str, str] = {}
    seen: list[bytes] = []
    for part in source.list_parts():
        chunks, _ = _drain(source, part)
        assert chunks[-1].done and not chunks[-1].lines
        assert all(c.n_parts == 3 and c.part == part for c in chunks)
        for chunk in chunks:
            for index, line in enumerate(chunk.lines):
                event = orjson.loads(line)
                assert event["transaction_id"].endswith(f"_{chunk.position(index)}")
                assert owners.setdefault(event["user_id"], part) == part
        seen.extend(_lines(chunks))
    assert sorted(seen) == sorted(everything)
    assert len(set(seen)) == len(seen)


def test_stream_does_not_depend_on_partition_count_or_batch_size():
    one = _lines(_drain(SimulatorSource(_settings(), batch_size=1000), "simulator/0")[0])
    many = []
    source = SimulatorSource(_settings(partitions=4), batch_size=37)
    for part in source.list_parts():
        many.extend(_lines(_drain(source, part)[0]))
    assert sorted(one) == sorted(many)
    assert one == [payload for _u, payload in iter_events(_settings())]


def test_resume_from_snapshot_equals_uninterrupted_run():
    settings = _settings(partitions=2)
    source = SimulatorSource(settings, batch_size=300)
    for part in source.list_parts():
        whole = _lines(_drain(source, part)[0])
        head, snapshot = _drain(source, part, max_batches=7)
        tail, _ = _drain(source, part, resume=snapshot)
        assert _lines(head) + _lines(tail) == whole


def test_every_event_is_valid_except_the_labelled_late_ones():
    settings = _settings(events=40_000)
    late = {label["key"] for label in scenario_labels(settings) if label["type"] == "LATE"}
    assert late
    parser = ChunkParser(Settings())
    source = SimulatorSource(settings, batch_size=1000)
    chunks, _ = _drain(source, "simulator/0")
    clock = None
    dead = []
    valid = 0
    for chunk in chunks:
        clock, parsed = parser.parse(clock, chunk)
        dead.extend(parsed.dead_letters)
        valid += parsed.n_transactions
    assert {d["reason"] for d in dead} == {"late"}
    assert {orjson.loads(d["raw"])["transaction_id"] for d in dead} == late
    assert valid + len(dead) == len(_lines(chunks))


def test_mixed_scenario_labels_every_alert_type():
    labels = scenario_labels(_settings(events=60_000))
    types = Counter(label["type"] for label in labels)
    for alert_type in (
        "FAILURE_RATE",
        "TRAFFIC_DROP",
        "VELOCITY",
        "AMOUNT_SPIKE",
        "IMPOSSIBLE_TRAVEL",
        "FRAUD_SUSPECTED",
        "LATE",
    ):
        assert types[alert_type] >= 1, alert_type
    for label in labels:
        assert label["start"] <= label["end"] and label["start"].endswith("Z")
        # The day-like traffic curve is the one near miss of the mix: it must not alert.
        assert label["expected"] is (label["scenario"] != "day_curve")


def test_hard_scenario_has_near_misses_on_both_sides():
    labels = scenario_labels(_settings(scenario="hard", events=60_000))
    sides = {(label["type"], label["expected"]) for label in labels}
    for alert_type in ("FAILURE_RATE", "VELOCITY", "AMOUNT_SPIKE", "FRAUD_SUSPECTED"):
        assert (alert_type, True) in sides and (alert_type, False) in sides, alert_type


def test_labels_need_a_bounded_run():
    with pytest.raises(ValueError, match="endless"):
        scenario_labels(_settings(events=0))


def test_normal_traffic_stays_inside_every_rule():
    settings = _settings(scenario="normal", events=30_000)
    assert scenario_labels(settings) == []
    per_region = defaultdict(lambda: [0, 0])
    user_times = defaultdict(list)
    user_regions = defaultdict(set)
    for user, payload in iter_events(settings):
        event = orjson.loads(payload)
        per_region[event["region"]][0] += 1
        per_region[event["region"]][1] += event["payment_status"] == "FAIL"
        user_regions[user].add(event["region"])
        user_times[user].append((event["timestamp"], event["amount"]))
        assert event["currency"] in ("USD", "EUR", "GBP")
        assert event["merchant_name"] in MERCHANTS
        assert event["amount"] < 5000
    for count, failures in per_region.values():
        assert failures / count < 0.012
    assert all(len(regions) == 1 for regions in user_regions.values())
    for events in user_times.values():
        amounts = [a for _t, a in events]
        assert max(amounts) < 2 * min(amounts)
    # each user pays once per cycle (users / event_rate = 40 s): at most 3 in any 60 s
    assert max(len(v) for v in user_times.values()) <= 30_000 // 2_000 + 1


def test_merchant_names_never_look_fraudulent():
    words = Settings().rules.fraud.merchant_words
    assert not [m for m in MERCHANTS if any(w in m.lower() for w in words)]


def test_every_scenario_builds():
    for name in SCENARIOS:
        assert sum(1 for _ in iter_events(_settings(scenario=name, events=2_000))) > 1_000


def test_rate_limited_partition_paces_with_next_awake():
    settings = _settings(rate=100.0, events=0)
    partition = SimulatorSource(settings).build_part("sim", "simulator/0", None)
    partition.next_batch()
    awake = partition.next_awake()
    assert awake is not None and awake.tzinfo is not None
    assert partition.snapshot() <= 100


def test_runs_in_a_dataflow_and_ends_by_itself():
    settings = _settings(events=5_000, partitions=2)
    flow = Dataflow("sim")
    chunks = op.input("in", flow, SimulatorSource(settings, batch_size=400))
    lines = op.flat_map("lines", chunks, lambda chunk: chunk.lines)
    out: list[bytes] = []
    op.output("out", lines, TestingSink(out))
    run_main(flow)
    assert sorted(out) == sorted(payload for _u, payload in iter_events(settings))


def test_settings_know_every_scenario_by_name():
    from config.settings import SCENARIO_NAMES

    assert SCENARIO_NAMES == set(SCENARIOS)


@pytest.mark.parametrize("events, rate", [(5_000, 0), (0, 0), (5_000, 200)])
def test_without_a_start_event_time_never_runs_ahead_of_the_wall_clock(events, rate):
    import time

    settings = _settings(events=events, rate=rate, start=None, event_rate=None)
    before = time.time()
    times = []
    for _, payload in iter_events(settings):
        times.append(orjson.loads(payload)["timestamp"])
        if len(times) == 5_000:
            break
    if not rate:  # at full speed the source's first chunk is due at once; none of it is `future`
        [first] = SimulatorSource(settings).build_part("sim", "simulator/0", None).next_batch()
        _, parsed = ChunkParser(Settings()).parse(None, first)
        assert parsed.n_transactions > 0 and parsed.dead_letters == []
    latest = max(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in times)
    assert latest <= time.time() + (5_000 / 200 if rate else 0)
    if events and not rate:
        assert latest >= before - 2  # a bounded run at full speed ends now, not a week ago


def test_chunks_grow_at_full_speed_and_shrink_once_the_rate_is_met():
    full_speed = SimulatorSource(_settings(events=5_000, partitions=1), batch_size=100, max_batch_size=800)
    chunks, _ = _drain(full_speed, "simulator/0")
    assert [len(c.lines) for c in chunks] == [100, 200, 400, 800, 800, 800, 800, 800, 300, 0]
    assert _lines(chunks) == [payload for _u, payload in iter_events(_settings(events=5_000))]

    paced = SimulatorSource(_settings(events=0, rate=50), batch_size=100, max_batch_size=800)
    part = paced.build_part("sim", "simulator/0", None)
    part._wall0 -= 100  # as if built 100 s ago: 5,000 events are due at once
    asked: list[int] = []
    sizes: list[int] = []
    while not sizes or sizes[-1] == asked[-1]:  # until a chunk comes out short of what it asked for
        asked.append(part._sizes.size)
        sizes.append(sum(len(c.lines) for c in part.next_batch()))
    assert sizes[:4] == [100, 200, 400, 800] and max(asked) == 800
    assert sum(sizes) >= 5_000  # the whole backlog came in grown chunks
    assert part._sizes.size == 100  # so the next one asks for batch_size again
    part.close()
