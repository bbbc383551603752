"""Parse, validate, enrich, score: every rule and every kind of bad input."""

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.parse import ChunkParser
from tests.support.events import T0, chunk, event, line

SETTINGS = load_settings(environ={})


def parse(events, max_ts=None, settings=SETTINGS):
    return ChunkParser(settings).parse(max_ts, chunk(events))


def transactions(parsed):
    return [orjson.loads(line) for line in parsed.transactions.splitlines()]


def test_valid_event_is_enriched_and_keeps_its_fields():
    ev = event("t1", T0 + 1.5, amount=150.0, device="mobile", merchant_id="m1")
    clock, out = parse([ev])
    assert clock.high == T0 + 1.5
    [record] = transactions(out)
    assert {k: record[k] for k in ev} == ev
    assert record["category"] == "medium_value"
    assert (record["fraud_score"], record["fraud_status"]) == (0, "APPROVED")
    assert record["processed_at"].endswith("Z")
    assert out.dead_letters == []
    assert out.region_counts == {("US-WEST", T0 + 1): [1, 0, 0, 0]}
    assert {shard: events.rows() for shard, events in out.user_events.items()} == {
        out_shard(out): [("u1", T0 + 1.5, 150.0, "US-WEST", "t1")]
    }


def out_shard(out):
    [shard] = out.user_events
    return shard


@pytest.mark.parametrize(
    "amount, category",
    [
        (None, "standard"),
        (0, "standard"),
        (99.99, "standard"),
        (100, "medium_value"),
        (999.99, "medium_value"),
        (1000, "high_value"),
        (50000, "high_value"),
    ],
)
def test_amount_categories(amount, category):
    _, out = parse([event("t", T0, amount=amount)])
    assert transactions(out)[0]["category"] == category


@pytest.mark.parametrize(
    "fields, score, status",
    [
        ({"amount": 5000.0}, 10, "APPROVED"),  # not > 5000, but a multiple of 1000
        ({"amount": 5000.01}, 30, "REVIEW_REQUIRED"),
        ({"amount": 6000.0}, 40, "REVIEW_REQUIRED"),
        ({"merchant": "TeSt Merchant"}, 40, "REVIEW_REQUIRED"),
        ({"merchant": "FAKE shop"}, 40, "REVIEW_REQUIRED"),
        ({"merchant": "dummy"}, 40, "REVIEW_REQUIRED"),
        ({"currency": "JPY"}, 20, "APPROVED"),
        ({"currency": "usd"}, 0, "APPROVED"),
        ({"amount": 2000.0}, 10, "APPROVED"),
        ({"amount": 0.0}, 0, "APPROVED"),
        ({"amount": 7000.0, "merchant": "fake"}, 80, "FRAUD_SUSPECTED"),
        ({"amount": 6000.0, "currency": "JPY"}, 60, "FRAUD_SUSPECTED"),
        ({"merchant": "test", "amount": 3000.0}, 50, "FRAUD_SUSPECTED"),  # exactly the threshold
        ({"currency": "JPY", "amount": 3000.0}, 30, "REVIEW_REQUIRED"),  # exactly the review threshold
        ({"currency": "JPY", "amount": 2999.0}, 20, "APPROVED"),
    ],
)
def test_fraud_rules_and_thresholds(fields, score, status):
    _, out = parse([event("t9", T0, **fields)])
    record = transactions(out)[0]
    assert (record["fraud_score"], record["fraud_status"]) == (score, status)
    assert len(out.alerts) == (1 if status == "FRAUD_SUSPECTED" else 0)
    assert len(out.flagged) == (0 if status == "APPROVED" else 1)
    if status == "FRAUD_SUSPECTED":
        alert = out.alerts[0]
        assert (alert["type"], alert["state"], alert["key"]) == ("FRAUD_SUSPECTED", "OPEN", "t9")
        assert alert["alert_id"] == "FRAUD_SUSPECTED:t9:OPEN"
        assert out.region_counts[("US-WEST", T0)][2] == 1


def test_fraud_weights_come_from_settings():
    custom = load_settings(environ={}, overrides={"rules": {"fraud": {"currency_points": 55}}})
    _, out = parse([event("t", T0, currency="JPY")], settings=custom)
    assert transactions(out)[0]["fraud_status"] == "FRAUD_SUSPECTED"


@pytest.mark.parametrize(
    "status, failed",
    [("SUCCESS", 0), ("success", 0), ("FAIL", 1), ("FAILED", 1), ("declined", 1), (" Declined ", 1), ("error", 1)],
)
def test_status_synonyms(status, failed):
    _, out = parse([event("t", T0, status=status)])
    assert out.region_counts[("US-WEST", T0)][1] == failed


def test_epoch_millis_and_offsets():
    a = event("a", T0)
    a["timestamp"] = (T0 + 2) * 1000
    b = event("b", T0)
    b["timestamp"] = "2025-07-09T21:00:03+02:00"
    _, out = parse([a, b])
    assert out.region_counts == {("US-WEST", T0 + 2): [1, 0, 0, 0], ("US-WEST", T0 + 3): [1, 0, 0, 0]}


def _with(**changes):
    ev = event("t", T0)
    for k, v in changes.items():
        if v is KeyError:
            ev.pop(k)
        else:
            ev[k] = v
    return line(ev)


@pytest.mark.parametrize(
    "raw, reason, field",
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "not_an_object", None),
        (b'"text"', "not_an_object", None),
        (_with(transaction_id=KeyError), "missing_field", "transaction_id"),
        (_with(transaction_id=""), "invalid_field", "transaction_id"),
        (_with(transaction_id="x" * 500), "invalid_field", "transaction_id"),
        (_with(transaction_id=12), "invalid_field", "transaction_id"),
        (_with(timestamp=KeyError), "missing_field", "timestamp"),
        (_with(timestamp="yesterday"), "invalid_field", "timestamp"),
        (_with(timestamp="2025-07-09T19:00:00"), "invalid_field", "timestamp"),
        (_with(timestamp="1850-01-01T00:00:00Z"), "invalid_field", "timestamp"),
        (_with(timestamp="9999-01-01T00:00:00Z"), "invalid_field", "timestamp"),
        (_with(timestamp=True), "invalid_field", "timestamp"),
        (_with(payment_status=KeyError), "missing_field", "payment_status"),
        (_with(payment_status="MAYBE"), "invalid_field", "payment_status"),
        (_with(region=KeyError), "missing_field", "region"),
        (_with(region=7), "invalid_field", "region"),
        (_with(amount=-1), "invalid_field", "amount"),
        (_with(amount="12.50"), "invalid_field", "amount"),
        (_with(amount=True), "invalid_field", "amount"),
        (
            b'{"transaction_id":"t","timestamp":"2025-07-09T19:00:00Z","payment_status":"SUCCESS","region":"R","amount":NaN}',
            "invalid_json",
            None,
        ),
        (_with(currency="DOLLAR"), "invalid_field", "currency"),
        (_with(user_id=["u"]), "invalid_field", "user_id"),
        (_with(merchant_name=5), "invalid_field", "merchant_name"),
        (_with(device={"os": "x"}), "invalid_field", "device"),
    ],
)
def test_invalid_input_goes_to_dead_letters_with_a_reason(raw, reason, field):
    _, out = parse([line(event("ok", T0)), raw])
    assert out.n_transactions == 1
    [dead] = out.dead_letters
    assert (dead["reason"], dead["field"]) == (reason, field)
    assert dead["raw"] == raw.decode(errors="replace")
    assert dead["position"] == 1 and dead["source"] == "test/0"


def test_non_utf8_payload_is_kept_losslessly():
    raw = b"\xff\xfe garbage"
    _, out = parse([raw])
    [dead] = out.dead_letters
    import base64

    assert base64.b64decode(dead["raw_base64"]) == raw


def test_blank_file_lines_are_not_events_but_empty_messages_are_dead_letters():
    parser = ChunkParser(SETTINGS)
    _, out = parser.parse(None, chunk([b"", b"   ", line(event("t", T0))], part="file:x.jsonl", skip_blank=True))
    assert out.n_transactions == 1 and out.dead_letters == []
    _, out = parser.parse(None, chunk([b"", line(event("t", T0))], part="kafka:payments/0"))
    assert [d["reason"] for d in out.dead_letters] == ["invalid_json"]


def test_lateness_is_judged_against_the_partitions_own_progress():
    events = [event("a", T0 + 100), event("b", T0 + 95), event("c", T0 + 89.9), event("d", T0 + 90)]
    clock, out = parse(events)
    assert clock.high == T0 + 100
    assert [d["reason"] for d in out.dead_letters] == ["late"]
    assert out.dead_letters[0]["position"] == 2
    assert out.n_late == 1 and out.n_transactions == 3
    assert out.watermark == T0 + 90
    # The state carries over to the next chunk.
    _, later = parse([event("e", T0 + 85)], max_ts=clock)
    assert [d["reason"] for d in later.dead_letters] == ["late"]


def test_input_holding_enrichment_keys_is_rewritten_not_duplicated():
    ev = event("t", T0, category="spoofed", fraud_score=99)
    _, out = parse([ev])
    text = out.transactions.decode()
    assert text.count('"category"') == 1 and text.count('"fraud_score"') == 1
    assert transactions(out)[0]["fraud_score"] == 0


def test_an_escaped_enrichment_key_is_still_found():
    raw = line(event("t", T0)).replace(b'{"', b'{"c\\u0061tegory":"spoofed","', 1)
    assert b"\\u0061" in raw and b'"category"' not in raw
    _, out = parse([line(event("plain", T0)), raw])
    plain, escaped = transactions(out)
    assert escaped["category"] == plain["category"] != "spoofed"
    assert out.transactions.decode().count("category") == 2


def test_a_chunk_enriches_each_line_as_it_would_alone():
    """Plain chunks skip the per-event rewrite checks: a chunk mixing plain events with ones
    carrying enrichment keys or newlines must still come out line for line as they do alone."""
    lines = [
        line(event("a", T0)),
        line(event("b", T0, category="spoofed", fraud_score=99, processed_at="never")),
        orjson.dumps(event("c", T0), option=orjson.OPT_INDENT_2),
        line(event("d", T0)),
    ]

    def without_time(records):
        return [{k: v for k, v in r.items() if k != "processed_at"} for r in records]

    _, whole = parse(lines)
    alone = [transactions(parse([raw])[1])[0] for raw in lines]
    assert len(whole.transactions.splitlines()) == 4
    assert without_time(transactions(whole)) == without_time(alone)
    assert [r["fraud_score"] for r in alone] == [0, 0, 0, 0]
    assert all(text.count(b'"category"') == 1 for text in whole.transactions.splitlines())


def test_whitespace_after_the_closing_brace_is_enriched_inside_the_object():
    raws = [line(event("a", T0)) + b"  \t", line(event("b", T0)) + b"\r", line(event("c", T0))]
    _, out = parse(raws)
    assert [r["transaction_id"] for r in transactions(out)] == ["a", "b", "c"]
    assert all(r["fraud_status"] == "APPROVED" for r in transactions(out))


def test_a_line_holding_two_events_is_one_invalid_line():
    two = line(event("a", T0)) + b"," + line(event("b", T0))
    _, out = parse([line(event("ok", T0)), two, line(event("ok2", T0))])
    assert out.n_transactions == 2
    assert [(d["reason"], d["position"]) for d in out.dead_letters] == [("invalid_json", 1)]


def test_dead_letters_keep_line_order_across_rejection_kinds():
    lines = [line(event("a", T0 + 100)), b"{oops", line(event("late", T0)), _with(region=7)]
    _, out = parse(lines)
    assert [(d["position"], d["reason"]) for d in out.dead_letters] == [
        (1, "invalid_json"),
        (2, "late"),
        (3, "invalid_field"),
    ]


@pytest.mark.parametrize(
    "amount, valid",
    [
        (10**12, True),
        (1e12, True),
        (10**12 + 1, False),
        (1.0000001e12, False),
        (1e300, False),
        (0, True),
        (-0.01, False),
    ],
)
def test_amount_limits(amount, valid):
    _, out = parse([_with(amount=amount)])
    assert out.n_transactions == (1 if valid else 0)
    assert [(d["reason"], d["field"]) for d in out.dead_letters] == ([] if valid else [("invalid_field", "amount")])


@pytest.mark.parametrize("raw_amount", [b"100000000000000000000000000000", b"1e400", b"9007199254740993"])
def test_huge_numbers_are_invalid_amounts_not_invalid_json(raw_amount):
    raw = line(event("t", T0, amount=1)).replace(b'"amount":1', b'"amount":' + raw_amount)
    _, out = parse([raw])
    [dead] = out.dead_letters
    assert (dead["reason"], dead["field"]) == ("invalid_field", "amount")
    assert "from 0 to 1e+12" in dead["detail"]


def test_integers_up_to_2_53_are_exact_amounts_when_the_maximum_allows():
    settings = load_settings(environ={"PAYWATCH__VALIDATION__MAX_AMOUNT": str(2**53)})
    _, out = parse([_with(amount=2**53), _with(amount=2**53 + 1)], settings=settings)
    assert out.n_transactions == 1
    assert [(d["position"], d["field"]) for d in out.dead_letters] == [(1, "amount")]


def test_pretty_printed_json_stays_on_one_output_line():
    pretty = orjson.dumps(event("t", T0), option=orjson.OPT_INDENT_2)
    _, out = parse([pretty])
    assert len(out.transactions.splitlines()) == 1
    assert transactions(out)[0]["transaction_id"] == "t"


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_never_raise_and_nothing_is_lost(lines):
    parser = ChunkParser(SETTINGS)
    _, out = parser.parse(None, chunk(lines))
    assert out.n_transactions + len(out.dead_letters) == len(lines)


@hsettings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "transaction_id": st.one_of(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), st.none()),
                "timestamp": st.one_of(
                    st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.floats(), st.just("2025-07-09T19:00:00Z")
                ),
                "payment_status": st.one_of(st.sampled_from(["FAIL", "SUCCESS", "x"]), st.integers(0, 9)),
                "region": st.one_of(st.text(max_size=4), st.none(), st.integers(0, 9)),
                "amount": st.one_of(
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-(2**63), 2**63 - 1),
                    st.text(max_size=3),
                ),
                "user_id": st.one_of(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1), st.none()),
            },
        ),
        max_size=20,
    )
)
def test_arbitrary_events_are_either_transactions_or_dead_letters(events):
    _, out = ChunkParser(SETTINGS).parse(None, chunk([line(e) for e in events]))
    assert out.n_transactions + len(out.dead_letters) == len(events)
    assert len(out.transactions.splitlines()) == out.n_transactions


def test_without_transaction_lines_the_verdicts_and_counts_are_the_same():
    lines = [line(event(f"t{i}", T0 + i, amount=6000 if i == 3 else 50)) for i in range(6)]
    lines += [b"{oops", line(event("spoof", T0 + 7, category="x")), line(event("late", T0 - 60))]
    parser = ChunkParser(SETTINGS)
    with_lines = parser.parse(None, chunk(lines))
    without = ChunkParser(SETTINGS, transaction_lines=False).parse(None, chunk(lines))
    assert without[1].transactions == b"" and with_lines[1].transactions != b""
    assert without[0] == with_lines[0]
    for name in ("n_transactions", "n_late", "dead_letters", "region_counts", "user_events", "watermark"):
        assert getattr(without[1], name) == getattr(with_lines[1], name), name

    # flagged records and alerts do not depend on the blob either (processed_at aside)
    def strip(records):
        return [{k: v for k, v in r.items() if k != "processed_at"} for r in records]

    assert strip(without[1].flagged) == strip(with_lines[1].flagged) and len(without[1].flagged) == 1
    assert [a["alert_id"] for a in without[1].alerts] == [a["alert_id"] for a in with_lines[1].alerts]


def test_partitions_share_the_growing_caches_but_not_the_per_chunk_state():
    base = ChunkParser(SETTINGS)
    a, b = base.for_partition(), base.for_partition()
    a.parse(None, chunk([line(event("t1", T0, user="u-shared"))]))
    assert a._scorer is b._scorer  # one merchant-verdict cache per process
    assert a._suffixes is not b._suffixes and a._timestamps is not b._timestamps
    _, out = b.parse(None, chunk([line(event("t2", T0, user="u-shared"))]))
    assert next(iter(out.user_events.values())).users == ["u-shared"]


def test_each_user_goes_to_the_shard_its_id_hashes_to_whatever_the_chunk_holds():
    """crc32 of the id's UTF-8 bytes modulo users.shards: the shard a snapshot of another process keyed it by."""
    from zlib import crc32

    users = ["u1", 42, None, "ü-ñ", "u1", None, 7]
    lines = [line(event(f"t{i}", T0 + i, user=user)) for i, user in enumerate(users)]
    _, out = ChunkParser(SETTINGS).parse(None, chunk(lines))
    got = {(user, shard) for shard, events in out.user_events.items() for user in events.users}
    want = {(str(u), crc32(str(u).encode()) % SETTINGS.users.shards) for u in users if u is not None}
    assert got == want and sum(len(events) for events in out.user_events.values()) == 5
