"""The columnar parse step gives the same ParsedChunk as the per-event loop it replaced.

``tests/support/parse_reference.py`` is the parser as it was (one Python loop
per event). Both parse the same sequence of chunks, mixing clean lines with
every kind of bad line (future, late, far ahead of the partition, bad status,
huge amount, long merchant name, fields Paywatch adds, a raw newline,
non-UTF-8, blank, not JSON, epoch milliseconds, integer user ids, flagged
events), under several configurations, carrying their event-time state from
chunk to chunk; every output must be equal, byte for byte. The wall clock is
frozen so that ``processed_at`` and ``future`` details are comparable.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators import parse as columnar
from operators.codes import codes
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import MerchantTable
from tests.support import parse_reference as reference
from tests.support.events import T0, chunk, event, iso, line

NOW = time.time()


class _Clock:
    """``time`` and ``datetime`` as the two parsers see them: frozen at NOW."""

    @staticmethod
    def time() -> float:
        return NOW

    @staticmethod
    def now(tz=None) -> datetime:
        return datetime.fromtimestamp(NOW, tz or UTC)


CONFIGS = {
    "default": {},
    "lake and dimensions": {
        "sinks": {"lake": {"enabled": True, "uri": "/nonexistent/lake"}},  # the parse step writes nothing
        "rules": {"failure_rate": {"explain_by": ["currency", "device", "payment_method"]}},
    },
    "quick skew confirm": {"windows": {"skew_confirm_events": 2, "max_skew_seconds": 60}},
    "no lateness": {"windows": {"allowed_lateness_seconds": 0}, "users": {"shards": 3}},
}
MERCHANTS = MerchantTable(
    [("m1", "Corner Shop", True, 500.0), ("m2", "Fake Store", True, None), ("m3", "Closed Ltd", False, 100.0)]
)


def _event(txn: str, offset: float, **fields) -> dict:
    return event(txn, T0 + offset, **fields)


_CLEAN = st.builds(
    lambda n, offset, amount, currency, user, merchant, merchant_id, status, region, method: _event(
        f"t{n}",
        offset,
        amount=amount,
        currency=currency,
        user=user,
        merchant=merchant,
        status=status,
        region=region,
        merchant_id=merchant_id,
        device="web",
        payment_method=method,
    ),
    st.integers(0, 10**6),
    st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 3)),
    st.one_of(st.none(), st.sampled_from([0, 5.5, 100, 999.99, 1000, 2000.0, 5000, 6000.0, 7000.5])),
    st.sampled_from([None, "USD", "usd", "JPY", "eur"]),
    st.sampled_from([None, "u1", "u2", "u3", "someone"]),
    st.sampled_from([None, "", "Corner Shop", "FAKE shop", "dummy", "Test Merchant"]),
    st.sampled_from([None, "m1", "m2", "m3", "m9"]),
    st.sampled_from(["SUCCESS", "FAIL", "declined", " ok "]),
    st.sampled_from(["US-WEST", "EU", "APAC"]),
    st.sampled_from(["card", "wallet", 3, None, True]),
)


def _bad(kind: str, ev: dict) -> bytes:
    """One line of the given kind of bad (or unusual) input, built from a clean event."""
    if kind == "future":
        return line({**ev, "timestamp": iso(NOW + 3600)})
    if kind == "late":
        return line({**ev, "timestamp": iso(T0 - 120)})
    if kind == "far ahead":
        return line({**ev, "timestamp": iso(T0 + 5000)})
    if kind == "bad status":
        return line({**ev, "payment_status": "MAYBE"})
    if kind == "huge amount":
        return line({**ev, "amount": 1e13})
    if kind == "huge integer amount":
        without = {k: v for k, v in ev.items() if k != "amount"}
        return line(without)[:-1] + b',"amount":' + b"9" * 400 + b"}"
    if kind == "long name":
        return line({**ev, "merchant_name": "n" * 300})
    if kind == "added field":
        return line({**ev, "fraud_score": 3, "category": "x"})
    if kind == "newline":
        return orjson.dumps(ev, option=orjson.OPT_INDENT_2)
    if kind == "non-utf8":
        return line(ev)[:-1] + b',"note":"\xff\xfe"}'
    if kind == "blank":
        return b""
    if kind == "not json":
        return b"{not json"
    if kind == "epoch ms":
        ts = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()
        return line({**ev, "timestamp": int(ts * 1000)})
    if kind == "integer user":
        return line({**ev, "user_id": 42})
    if kind == "bad currency":
        return line({**ev, "currency": "U1D"})
    if kind == "trailing space":
        return line(ev) + b"  "
    if kind == "offset zone":
        return line({**ev, "timestamp": ev["timestamp"].replace("Z", "+00:00")})
    if kind == "fraud":
        return line({**ev, "amount": 7000.0, "merchant_name": "fake", "currency": "JPY"})
    raise AssertionError(kind)


KINDS = [
    "future",
    "late",
    "far ahead",
    "bad status",
    "huge amount",
    "huge integer amount",
    "long name",
    "added field",
    "newline",
    "non-utf8",
    "blank",
    "not json",
    "epoch ms",
    "integer user",
    "bad currency",
    "trailing space",
    "offset zone",
    "fraud",
]

_LINE = st.one_of(
    _CLEAN.map(line),
    _CLEAN.map(line),
    st.tuples(st.sampled_from(KINDS), _CLEAN).map(lambda pair: _bad(*pair)),
)
_CHUNKS = st.lists(st.lists(_LINE, max_size=40), min_size=1, max_size=4)


SETTINGS = {name: load_settings(environ={}, overrides=config) for name, config in CONFIGS.items()}


def _parsers(config: str, merchants: bool, lines: bool = True):
    settings = SETTINGS[config]
    made = []
    for module in (reference, columnar):
        holder = ReferenceHolder(LiveReference.of(settings.rules, MERCHANTS)) if merchants else None
        made.append(module.ChunkParser(settings, transaction_lines=lines, reference=holder))
    return made


def _comparable(parsed) -> dict:
    fields = {name: getattr(parsed, name) for name in parsed.__slots__ if name != "lake"}
    if parsed.lake is not None:
        lake = parsed.lake
        fields["lake"] = (
            lake.part,
            lake.origin,
            lake.lines,
            lake.first_position,
            lake.positions,
            lake.received_at,
            [None if math.isnan(t) else t for t in lake.line_times],
            [int(i) for i in lake.valid],
            lake.transactions,
            None if lake.enrichment_keys is None else [int(key) for key in lake.enrichment_keys],
            lake.enrichment_suffixes,
        )
    return fields


def _run(config: str, merchants: bool, chunks: list[list[bytes]], skip_blank: bool, lines: bool = True) -> None:
    old, new = _parsers(config, merchants, lines)
    old_state = new_state = None
    with ExitStack() as stack:
        for module in (reference, columnar):
            stack.enter_context(mock.patch.object(module, "time", _Clock))
            stack.enter_context(mock.patch.object(module, "datetime", _Clock))
        for lines in chunks:
            old_state, old_out = old.parse(old_state, chunk(lines, skip_blank=skip_blank))
            new_state, new_out = new.parse(new_state, chunk(lines, skip_blank=skip_blank))
            assert tuple(new_state) == tuple(old_state)
            assert _comparable(new_out) == _comparable(old_out)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(CONFIGS)), st.booleans(), _CHUNKS, st.booleans(), st.booleans())
def test_the_columnar_parser_equals_the_per_event_loop(config, merchants, chunks, skip_blank, lines):
    _run(config, merchants, chunks, skip_blank, lines)


def test_every_kind_of_bad_line_in_one_chunk():
    lines = [line(_event(f"c{i}", i / 10, merchant_id="m1")) for i in range(50)]
    for i, kind in enumerate(KINDS):
        lines.insert(2 * i + 1, _bad(kind, _event(f"b{i}", i / 5, merchant_id="m3", amount=150)))
    for config in CONFIGS:
        for merchants in (False, True):
            _run(config, merchants, [lines, lines[::-1]], skip_blank=True)


def test_a_run_far_ahead_is_confirmed_as_in_the_per_event_loop():
    """Enough events far ahead move the high mark (the exact loop); a late one after it is judged against it."""
    ahead = [line(_event(f"a{i}", 4000 + i)) for i in range(3)]
    lines = [line(_event("x", 0)), *ahead, line(_event("y", 1)), line(_event("z", 4003))]
    _run("quick skew confirm", False, [lines, lines], skip_blank=False)


def test_a_clean_chunk_is_valid_whole_and_judged_the_same():
    lines = [line(_event(f"t{i}", i / 100, user=f"u{i % 7}", amount=float(i))) for i in range(2000)]
    _run("default", True, [lines[:1000], lines[1000:]], skip_blank=False)
    _, out = _parsers("default", False)[1].parse(None, chunk(lines))
    assert out.n_transactions == 2000 and not out.dead_letters
    assert sum(len(v) for v in out.user_events.values()) == 2000


_TIMESTAMPS = st.one_of(
    st.integers(-5, 5).map(lambda k: iso(T0 + k * 0.37)),
    st.integers(-5, 5).map(lambda k: iso(T0 + k).replace("Z", "+02:00")),
    st.sampled_from(
        [
            "2025-07-09T19:00:00Z",
            "2025-07-09t19:00:00.5z",
            "2025-07-09 19:00:00,25Z",
            "2025-07-09T19:00:00",
            "2025-02-30T19:00:00Z",
            "1999-12-31T23:59:59Z",
            "2101-01-01T00:00:00Z",
            "2025-07-09T19:00:00+24:00",
            "yesterday",
            "",
        ]
    ),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False),
    st.none(),
)


# The form parsed in numpy (YYYY-MM-DDTHH:MM:SS.mmmZ), with impossible dates and times among them.
_PRODUCER_FORM = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z".format,
    st.one_of(st.integers(0, 9999), st.sampled_from([1900, 2000, 2024, 2025, 2100])),
    st.one_of(st.integers(0, 13), st.just(2)),
    st.one_of(st.integers(0, 32), st.integers(28, 31)),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 999),
)


@hsettings(max_examples=200, deadline=None)
@given(
    st.one_of(st.lists(_TIMESTAMPS, max_size=30), st.lists(_PRODUCER_FORM, max_size=30)),
    st.lists(_TIMESTAMPS, max_size=10),
)
def test_timestamps_by_column_read_as_the_per_event_loop_reads_them(values, warm):
    """``parse_many`` against the loop's reading (cached halves, else ``parse``), as the contract's bounds judge it."""
    from operators.events.timestamps import TimestampParser

    old, new = TimestampParser(1, 9998), TimestampParser(1, 9998)  # every generated year counts
    for parser in (old, new):
        for value in warm:
            parser.parse(value)
    expected = []
    for value in values:
        if type(value) is str and old.prefixes.get(value[:19]) is not None and old.suffixes.get(value[19:]) is not None:
            expected.append(old.prefixes[value[:19]] + old.suffixes[value[19:]])
        else:
            ts = old.parse(value)
            expected.append(math.nan if ts is None else ts)

    def bounded(times):
        return [t if old.min_seconds <= t < old.max_seconds else None for t in times]

    assert bounded(new.parse_many(values).tolist()) == bounded(expected)


@pytest.mark.parametrize(
    "value",
    [
        "1900-02-29T00:00:00.000Z",
        "2000-02-29T12:00:00.999Z",
        "2100-02-29T00:00:00.000Z",
        "2024-02-29T23:59:59.999Z",
        "2025-02-29T00:00:00.000Z",
        "2025-04-31T00:00:00.000Z",
        "2025-12-31T23:59:59.999Z",
        "0000-01-01T00:00:00.000Z",
        "0001-01-01T00:00:00.001Z",
        "2025-07-09T24:00:00.000Z",
        "2025-07-09T19:60:00.000Z",
        "2025-07-09T19:03:60.000Z",
        "2025-00-09T19:03:10.123Z",
    ],
)
def test_the_producer_form_in_numpy_reads_as_parse(value):
    from operators.events.timestamps import TimestampParser

    column = TimestampParser(1, 9998).parse_many([value, value])
    expected = TimestampParser(1, 9998).parse(value)
    assert [None if math.isnan(t) else t for t in column.tolist()] == [expected, expected]


def test_the_producer_form_in_numpy_reads_as_parse_over_the_years():
    from operators.events.timestamps import TimestampParser

    rng = random.Random(14)
    values = [
        f"{rng.randrange(1, 9999):04d}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
        f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z"
        for _ in range(5_000)
    ]
    expected = [TimestampParser(1, 9998).parse(value) for value in values]
    assert TimestampParser(1, 9998).parse_many(values).tolist() == expected


@given(st.lists(st.one_of(st.none(), st.sampled_from(["EU-WEST", "US-EAST", "eu-west", ""]), st.text(max_size=3))))
def test_codes_number_values_in_order_of_first_appearance(values):
    rows, distinct = codes(values)
    assert distinct == list(dict.fromkeys(values))
    assert [distinct[code] for code in rows.tolist()] == values
