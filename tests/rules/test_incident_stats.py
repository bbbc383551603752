"""The statistics of FAILURE_RATE incidents: known counts in, decision out."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.dimension_counts import DimensionCounter, _text
from operators.incident_stats import contributors, log_binomial_tail, percent, wilson_lower, z_for

Z = z_for(0.999)


def test_z_of_the_default_confidence():
    assert Z == pytest.approx(3.0902, abs=1e-4)


@pytest.mark.parametrize(
    ("failures", "events", "opens"),
    [
        (3, 60, False),  # 1 event/s, 3 chance failures (5 %): bound 1.0 %
        (4, 60, False),
        (5, 60, True),  # bound 2.3 %
        (18, 60, True),  # a small region failing 30 %
        (55, 2000, False),  # 2.75 % on 2,000: bound 1.8 %
        (60, 2000, True),  # 3 % on 2,000: bound 2.03 %
        (25, 1000, False),  # 2.5 % is not evidence of > 2 % on 1,000
        (0, 0, False),
    ],
)
def test_wilson_lower_bound_decides_opening(failures, events, opens):
    assert (wilson_lower(failures, events, Z) > 0.02) is opens


def test_wilson_lower_bound_known_values():
    assert wilson_lower(18, 60, Z) == pytest.approx(0.1554, abs=1e-3)
    assert wilson_lower(3, 60, Z) == pytest.approx(0.0101, abs=1e-3)
    assert wilson_lower(0, 100, Z) == 0.0


def test_binomial_tail_matches_the_direct_sum():
    for k, n, p in ((5, 60, 0.009), (2, 300, 0.00025), (40, 100, 0.25), (300, 400, 0.5)):
        direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert math.exp(log_binomial_tail(k, n, p)) == pytest.approx(direct, rel=1e-9)
    assert log_binomial_tail(0, 10, 0.1) == 0.0
    assert log_binomial_tail(900, 1000, 0.01) < -2000  # no underflow to -inf


def test_contributor_selection_keeps_the_significant_and_orders_them():
    found = contributors(
        [
            ("device", "mobile", 500, 88),  # 88 % of failures on 25 % of traffic
            ("device", "web", 1500, 12),
            ("merchant_id", "m7", 100, 9),  # 9 % of failures on 5 % of traffic: not significant
            ("currency", "USD", 2000, 100),  # all traffic: lift 1
            ("merchant_id", "m9", 60, 12),  # 12 % on 3 %: lift 4, significant
        ],
        window_events=2000,
        window_failures=100,
        alpha=0.001,
        min_lift=1.5,
    )
    assert [(c.dimension, c.value) for c in found] == [("device", "mobile"), ("merchant_id", "m9")]
    top = found[0].as_dict()
    assert top == {
        "dimension": "device",
        "value": "mobile",
        "failures": 88,
        "events": 500,
        "failure_share": 0.88,
        "traffic_share": 0.25,
        "lift": 3.52,
    }


def test_a_broad_incident_and_tiny_values_have_no_contributor():
    # Failures in proportion to traffic, plus a merchant with 2 of 3 events failed.
    broad = [("device", "mobile", 500, 27), ("device", "web", 1500, 73), ("merchant_id", "m1", 3, 2)]
    assert contributors(broad, 2000, 100, 0.001, 1.5) == []
    assert contributors(broad, 2000, 0, 0.001, 1.5) == []


def test_lift_floor_hides_a_significant_but_small_excess():
    # 30 % of failures on 25 % of traffic, significant at this volume but lift 1.2.
    assert contributors([("device", "mobile", 250_000, 3_000)], 1_000_000, 10_000, 0.001, 1.5) == []
    assert contributors([("device", "mobile", 250_000, 3_000)], 1_000_000, 10_000, 0.001, 1.1) != []


def test_percent_words():
    assert (percent(2.0), percent(8.14), percent(0.5), percent(34.0)) == ("2 %", "8.1 %", "0.5 %", "34 %")


class _Ev:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_dimension_counts_per_chunk_are_exact_per_hop():
    counter = DimensionCounter(["device", "payment_method"], 10, frozenset({"device"}))
    events = [
        _Ev(device="mobile", payment_method="card"),
        _Ev(device="web", payment_method={"odd": 1}),
        _Ev(device="mobile", payment_method=None),
        _Ev(device=None, payment_method=3),
    ]
    buckets = [("EU", 1000), ("US", 1003), ("EU", 1009), ("EU", 1010)]
    bucket = np.array([0, 1, 2, 3])
    failed = np.array([True, True, False, True])
    columns = {name: [getattr(ev, name) for ev in events] for name in ("device", "payment_method")}
    counts = counter.count(buckets, bucket, failed, columns)
    assert set(counts) == {("EU", 1000), ("US", 1000), ("EU", 1010)}
    assert counts[("EU", 1000)]["device"] == ({"mobile": 2}, {"mobile": 1})
    assert counts[("US", 1000)]["device"] == ({"web": 1}, {"web": 1})
    assert counts[("EU", 1010)]["device"] == ({}, {})
    assert counts[("EU", 1000)]["payment_method"] == ({"card": 1}, {"card": 1})
    assert counts[("US", 1000)]["payment_method"][0] == {"{'odd': 1}": 1}
    assert counts[("EU", 1010)]["payment_method"] == ({"3": 1}, {"3": 1})
    assert DimensionCounter([], 10, frozenset()).count(buckets, bucket, failed, columns) == {}


def test_dimension_counts_group_events_by_hop_in_event_order():
    """Events of one hop, interleaved with another's, are counted together, in the order they came."""
    counter = DimensionCounter(["device"], 10, frozenset({"device"}))
    devices = {"device": ["a", "b", "c", "a", "b"]}
    buckets = [("EU", 1000), ("EU", 1011), ("EU", 1005)]
    counts = counter.count(buckets, np.array([0, 1, 2, 1, 0]), np.array([False, True, True, True, False]), devices)
    assert list(counts) == [("EU", 1000), ("EU", 1010)]
    assert list(counts[("EU", 1000)]["device"][0].items()) == [("a", 1), ("c", 1), ("b", 1)]
    assert counts[("EU", 1000)]["device"][1] == {"c": 1}
    assert counts[("EU", 1010)]["device"] == ({"b": 1, "a": 1}, {"b": 1, "a": 1})


_VALUES = st.sampled_from(["a", "b", "c", None, 3, 2.5, True, {"x": 1}])


@given(
    rows=st.lists(st.tuples(st.integers(0, 5), _VALUES, st.booleans()), min_size=1, max_size=60),
    seconds=st.lists(st.integers(1000, 1060), min_size=6, max_size=6),
)
def test_dimension_counts_equal_counting_each_event_in_order(rows, seconds):
    """Per hop, the values in the order they first came (failures: first failed), None left out."""
    buckets = list(dict.fromkeys(("EU" if i % 2 else "US", second) for i, second in enumerate(seconds)))
    bucket = np.array([b % len(buckets) for b, _, _ in rows])
    failed = np.array([f for _, _, f in rows])
    values = [v for _, v, _ in rows]
    counts = DimensionCounter(["pm"], 10, frozenset()).count(buckets, bucket, failed, {"pm": values})
    expected: dict = {}
    for region, second in buckets:
        expected.setdefault((region, second - second % 10), {"pm": (Counter(), Counter())})
    for b, value, fail in rows:
        region, second = buckets[b % len(buckets)]
        seen, fails = expected[(region, second - second % 10)]["pm"]
        text = _text(value)
        if text is not None:
            seen[text] += 1
            if fail:
                fails[text] += 1
    as_lists = {key: [list(c.items()) for c in v["pm"]] for key, v in counts.items()}
    assert as_lists == {key: [list(c.items()) for c in v["pm"]] for key, v in expected.items()}
    assert list(counts) == list(expected)


def test_contributors_reach_dynamodb_as_a_list_of_maps():
    from connectors.sinks.dynamodb import to_item

    alert = {"alert_id": "a", "details": {"contributors": [{"dimension": "device", "value": "mobile", "lift": 3.52}]}}
    item = to_item(alert)
    [entry] = item["details"]["M"]["contributors"]["L"]
    assert entry["M"]["value"] == {"S": "mobile"} and entry["M"]["lift"] == {"N": "3.52"}
