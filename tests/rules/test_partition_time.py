"""A partition's high mark and lateness: the parse loop against the reference, and clock skew."""

import math

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.events.partition_time import EventTimeRule, PartitionTime
from operators.parse import ChunkParser
from tests.support.events import T0, chunk, event, line

SETTINGS = load_settings(environ={"PAYWATCH__WINDOWS__SKEW_CONFIRM_EVENTS": "5"})
RULE = EventTimeRule(SETTINGS.windows)


def _parse_all(chunks, state=None):
    parser = ChunkParser(SETTINGS)
    late, watermarks = [], []
    for part in chunks:
        state, out = parser.parse(state, chunk([line(event(f"t{ts}", ts)) for ts in part]))
        late += [d["raw"] for d in out.dead_letters if d["reason"] == "late"]
        watermarks.append(out.watermark)
    return state, late, watermarks


steps = st.one_of(
    st.floats(-30, 30),
    st.sampled_from([-3600.0, 599.0, 601.0, 3600.0, 7200.0, 86400.0]),
)


@hsettings(max_examples=150, deadline=None)
@given(st.lists(steps, min_size=1, max_size=60), st.lists(st.integers(1, 12), min_size=1, max_size=60))
def test_the_parse_loop_follows_the_reference_rule(step_list, sizes):
    times, t = [], float(T0)
    for step in step_list:
        t = max(float(T0), t + step)
        times.append(round(t, 3))
    chunks, i = [], 0
    for size in sizes * len(times):
        if i >= len(times):
            break
        chunks.append(times[i : i + size])
        i += size
    state, late, _ = _parse_all(chunks)
    ref, ref_late = PartitionTime(), []
    for ts in times:
        ref, is_late = RULE.observe(ref, ts)
        if is_late:
            ref_late.append(ts)
    assert state == ref
    assert len(late) == len(ref_late)


def test_one_event_hours_ahead_does_not_make_the_rest_of_its_partition_late():
    times = [T0 + s for s in range(50)] + [T0 + 3 * 3600] + [T0 + 50 + s for s in range(50)]
    state, late, watermarks = _parse_all([times])
    assert late == []
    assert state.high == T0 + 99 and watermarks[-1] == T0 + 99 - 10


def test_a_burst_shorter_than_the_confirmation_is_an_outlier_too():
    times = [T0, T0 + 1] + [T0 + 7200 + s for s in range(4)] + [T0 + 2, T0 + 3]
    state, late, _ = _parse_all([times[:3], times[3:]])
    assert late == [] and state.high == T0 + 3


def test_a_real_jump_is_followed_after_the_confirmation():
    times = [T0, T0 + 1] + [T0 + 7200 + s for s in range(5)] + [T0 + 2]
    state, late, watermarks = _parse_all([times])
    assert state.high == T0 + 7204  # the run's earliest, then the rest of it
    assert len(late) == 1 and watermarks == [T0 + 7204 - 10]


def test_a_normal_advance_ends_a_run():
    times = [T0] + [T0 + 7200] * 4 + [T0 + 1] + [T0 + 7200] * 4 + [T0 + 2]
    state, late, _ = _parse_all([times])
    assert state == PartitionTime(T0 + 2) and late == []


def test_state_from_an_older_snapshot_is_the_high_mark_alone():
    assert PartitionTime.restore(None) == PartitionTime(-math.inf)
    assert PartitionTime.restore(T0 + 5.0) == PartitionTime(T0 + 5.0)
    assert PartitionTime.restore(PartitionTime(T0, 2, T0 + 900)) == PartitionTime(T0, 2, T0 + 900)
    _, late, _ = _parse_all([[T0 - 11, T0 - 9]], state=T0)
    assert len(late) == 1


def test_a_version_1_source_snapshot_resumes_with_its_high_mark():
    from connectors.sources.parsing import SOURCE_FORMAT
    from operators.state.snapshots import SnapshotFormat

    old = SnapshotFormat("source", 1).save(((1234, 56), T0 + 5.0))
    inner, clock = SOURCE_FORMAT.load(old)
    assert inner == (1234, 56) and PartitionTime.restore(clock) == PartitionTime(T0 + 5.0)
    fresh = SnapshotFormat("source", 1).save((None, None))
    assert PartitionTime.restore(SOURCE_FORMAT.load(fresh)[1]) == PartitionTime()
