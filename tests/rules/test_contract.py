"""The event contract: the fast path and the slow path agree, limits and details hold."""

import json
import time

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.events.contract import FUTURE, INVALID_FIELD, MISSING_FIELD, TOO_LARGE, Contract
from operators.parse import ChunkParser
from tests.support.events import T0, chunk, event, iso, line

# Lateness and skew far beyond any generated time: here only the contract decides.
SETTINGS = load_settings(
    environ={"PAYWATCH__WINDOWS__ALLOWED_LATENESS_SECONDS": "1e12", "PAYWATCH__WINDOWS__MAX_SKEW_SECONDS": "1e12"}
)
CONTRACT = Contract(SETTINGS.validation)
YEAR = 365 * 86400


def _text(lengths):
    return st.one_of(st.text(max_size=6), *(st.text(alphabet="ab", min_size=n, max_size=n) for n in lengths))


_IDS = _text((127, 128, 129))
_ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.lists(st.integers(), max_size=2))
FIELDS = {
    "transaction_id": st.one_of(_IDS, _ANY_JSON),
    "timestamp": st.one_of(
        st.sampled_from(
            [
                iso(T0),
                iso(T0 + 0.5).replace("Z", "+02:00"),
                "2099-01-01T00:00:00Z",
                "1999-12-31T23:59:59Z",
                "2101-01-01T00:00:00Z",
                "2025-07-09T19:00:00",
                "2025-13-09T19:00:00Z",
                "x" * 70,
            ]
        ),
        st.sampled_from([T0 * 1000, (T0 + 10 * YEAR) * 1000, 2**53, 2**53 + 1, -1, 2**64, T0 * 1000.5]),
        _ANY_JSON,
        st.text(max_size=30),
    ),
    "payment_status": st.one_of(
        st.sampled_from(["FAIL", "fail", " Declined ", "SUCCESS", "ok", "x", "", "Ok"]), _ANY_JSON
    ),
    "region": st.one_of(_IDS, _ANY_JSON),
    "amount": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0, 10**12, 10**12 + 1, 1e12, 2**53, 10**30, -0.0, 5000, 6000.0]),
        _ANY_JSON,
        st.text(max_size=3),
    ),
    "currency": st.one_of(st.sampled_from(["USD", "usd", "JPY", "US1", "EURO", "ÄÖÜ", ""]), _ANY_JSON),
    "user_id": st.one_of(_IDS, _ANY_JSON, st.sampled_from([2**53, 2**53 + 1, -(2**53)])),
    "merchant_id": st.one_of(_text((128, 129)), _ANY_JSON),
    "merchant_name": st.one_of(_text((256, 257)), st.sampled_from(["Test Shop", "FAKE"]), _ANY_JSON),
    "device": st.one_of(_text((128, 129)), _ANY_JSON),
    "fraud_score": st.integers(0, 100),
    "extra": st.one_of(st.text(max_size=5), st.just("x" * 70_000)),
}
VALID = event("v", T0, device="web", merchant_id="m")


def _serialise(ev, pretty):
    if pretty:
        return json.dumps(ev, indent=1, ensure_ascii=False).encode()
    return json.dumps(ev, separators=(",", ":")).encode()


lines_strategy = st.lists(
    st.one_of(
        st.builds(
            _serialise,
            st.fixed_dictionaries({}, optional=FIELDS).map(lambda changes: {**VALID, **changes}),
            st.booleans(),
        ),
        st.fixed_dictionaries({}, optional=FIELDS).map(lambda ev: _serialise(ev, False)),
        st.binary(max_size=40),
        st.sampled_from([b"", b"[]", b"1", b'{"a":1},{"b":2}', b'{"timestamp":NaN}', b"{" * 2000 + b"}" * 2000]),
    ),
    max_size=25,
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines_strategy)
def test_the_fast_path_accepts_exactly_what_the_contract_allows(lines):
    now = time.time()
    _, out = ChunkParser(SETTINGS).parse(None, chunk(lines))
    expected = [(i, CONTRACT.line_violation(raw, now)) for i, raw in enumerate(lines)]
    rejected = [(i, v) for i, v in expected if v is not None]
    assert out.n_transactions == len(lines) - len(rejected)

    def verdict(position, reason, field, detail):  # a `future` detail quotes the wall clock
        return position, reason, field, detail if reason != FUTURE else None

    assert [verdict(d["position"], d["reason"], d["field"], d["detail"]) for d in out.dead_letters] == [
        verdict(i, *v) for i, v in rejected
    ]
    # every line alone gets the same verdict as in the chunk
    for i, raw in enumerate(lines):
        _, alone = ChunkParser(SETTINGS).parse(None, chunk([raw]))
        assert alone.n_transactions == (expected[i][1] is None)


def _dead(raw, settings=SETTINGS):
    _, out = ChunkParser(settings).parse(None, chunk([line(event("ok", T0)), raw]))
    assert out.n_transactions == 1
    [dead] = out.dead_letters
    return dead["reason"], dead["field"], dead["detail"]


@pytest.mark.parametrize(
    "name, limit", [("transaction_id", 128), ("region", 128), ("user_id", 128), ("merchant_id", 128), ("device", 128)]
)
def test_identifiers_have_a_maximum_length_and_are_never_truncated(name, limit):
    ok = line({**VALID, name: "i" * limit})
    _, out = ChunkParser(SETTINGS).parse(None, chunk([ok]))
    assert out.n_transactions == 1 and ("i" * limit).encode() in out.transactions
    reason, field, detail = _dead(line({**VALID, name: "i" * (limit + 1)}))
    assert (reason, field) == (INVALID_FIELD, name)
    assert f"at most {limit} characters" in detail and "(129 characters)" in detail


def test_a_five_megabyte_merchant_name_is_too_large_and_a_long_one_an_invalid_field():
    assert _dead(line({**VALID, "merchant_name": "m" * 257}))[:2] == (INVALID_FIELD, "merchant_name")
    reason, field, detail = _dead(line({**VALID, "merchant_name": "m" * 5_000_000}))
    assert (reason, field) == (TOO_LARGE, None)
    assert "validation.max_event_bytes" in detail and len(detail) < 200
    _, out = ChunkParser(SETTINGS).parse(None, chunk([line({**VALID, "merchant_name": "m" * 256})]))
    assert out.n_transactions == 1


def test_timestamp_details_say_what_is_expected():
    expected = "epoch milliseconds or ISO-8601 with a zone, years 2000-2100"
    for value in ("2025-07-09T19:00:00", "yesterday", "1999-01-01T00:00:00Z", True):
        reason, field, detail = _dead(line({**VALID, "timestamp": value}))
        assert (reason, field) == (INVALID_FIELD, "timestamp") and expected in detail
    missing = {k: v for k, v in VALID.items() if k != "timestamp"}
    assert _dead(line(missing)) == (MISSING_FIELD, "timestamp", f"timestamp is required: {expected}")


def test_an_event_ahead_of_the_wall_clock_is_future_and_moves_no_watermark():
    now = time.time()
    parser = ChunkParser(load_settings(environ={}))
    lines = [
        line(event("a", T0)),
        line(event("far", now + 3600)),
        line(event("2099", 4070908800)),
        line(event("near", now + 200)),  # within validation.max_future_seconds
        line(event("b", T0 + 1)),
    ]
    clock, out = parser.parse(None, chunk(lines))
    assert [(d["position"], d["reason"]) for d in out.dead_letters] == [(1, FUTURE), (2, FUTURE)]
    assert "validation.max_future_seconds" in out.dead_letters[0]["detail"]
    assert out.n_transactions == 3
    # "near" is far ahead of the partition (an outlier), so the high mark stays with the replay
    assert clock.high == T0 + 1 and out.n_late == 0


def test_max_future_seconds_is_a_setting():
    settings = load_settings(environ={"PAYWATCH__VALIDATION__MAX_FUTURE_SECONDS": "7200"})
    _, out = ChunkParser(settings).parse(None, chunk([line(event("far", time.time() + 3600))]))
    assert out.n_transactions == 1


def test_every_reason_is_documented():
    from pathlib import Path

    from operators.events.contract import REASONS

    page = (Path(__file__).resolve().parents[2] / "docs" / "bad-input.md").read_text()
    for reason in REASONS:
        assert f"`{reason}`" in page, reason


def test_the_contract_serialises_what_it_accepts_under_the_sinks_limits():
    """The longest valid event stays far under a DynamoDB item (400 KB) and an SNS message (256 KB)."""
    assert CONTRACT.max_event_bytes <= 256 * 1024 // 2
    ev = {**VALID, "merchant_name": "m" * 256, "transaction_id": "t" * 128, "user_id": "u" * 128}
    assert len(orjson.dumps(ev)) < CONTRACT.max_event_bytes


def test_poison_across_decode_blocks_gets_the_verdict_each_line_gets_alone():
    """Chunks are decoded 32 lines at a time: culprits at block edges, several per block, oversized ones."""
    now = time.time()
    lines = [line(event(f"t{i}", T0 + i)) for i in range(100)]
    poison = {
        0: line({**VALID, "transaction_id": "t" * 200}),
        31: line({**VALID, "region": ""}),
        32: b"{not json",
        33: line({**VALID, "amount": 1e300}),
        40: line({**VALID, "note": "x" * 70_000}),
        41: line({**VALID, "fraud_score": 3}),  # valid, decoded alone
        63: line({**VALID, "timestamp": "2099-01-01T00:00:00Z"}),
        64: b'{"a":1},{"b":2}',
        65: line({**VALID, "merchant_name": "m" * 300}),
        99: b"",
    }
    for i, raw in poison.items():
        lines[i] = raw
    _, out = ChunkParser(SETTINGS).parse(None, chunk(lines))
    expected = [(i, CONTRACT.line_violation(raw, now)) for i, raw in enumerate(lines)]
    assert [(d["position"], d["reason"], d["field"]) for d in out.dead_letters] == [
        (i, v[0], v[1]) for i, v in expected if v is not None
    ]
    assert out.n_transactions == sum(v is None for _, v in expected) == 91
    ids = [orjson.loads(raw)["transaction_id"] for raw in out.transactions.splitlines()]
    assert ids == [orjson.loads(lines[i])["transaction_id"] for i, v in expected if v is None]


@pytest.mark.parametrize("amount", [2**64, 10**30, -(2**63) - 1, 10**400])
def test_integers_beyond_64_bits_get_the_same_detail_from_either_path(amount):
    """Found by hypothesis: orjson reads 2^64 as a double, the typed decoder keeps the integer."""
    line = _serialise({**VALID, "amount": amount}, False)
    _, out = ChunkParser(SETTINGS).parse(None, chunk([line]))
    [letter] = out.dead_letters
    assert (letter["reason"], letter["field"], letter["detail"]) == CONTRACT.line_violation(line, time.time())
    assert letter["detail"].endswith(f"got {float(amount)!r}" if amount < 10**308 else "characters)")
