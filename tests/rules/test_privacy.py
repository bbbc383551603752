"""Card numbers and configured fields never reach an output readable (operators/privacy.py).

Unit tests of the chunk redactor, the parse step's use of it (dead letters
included), an in-process flow with every sink captured, the settings and the
key check, and a whole-flow subprocess with every local output on (JSONL
files, stdout, stderr, the lake in a local directory).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from config import SettingsError, load_settings
from config.loader import hash_key
from config.settings import PrivacySettings
from connectors.sinks.outputs import Outputs
from dataflow import build_flow
from operators.parse import ChunkParser
from operators.privacy import Redactor, luhn_valid, mask_pans
from tests.support.events import T0, chunk, event

ROOT = Path(__file__).resolve().parents[2]
KEY = b"0123456789abcdef-test-key"


def luhn_complete(prefix: str, length: int) -> str:
    """``prefix`` padded with 1s to ``length`` digits, the last one a valid Luhn check digit."""
    body = (prefix + "1" * length)[: length - 1]
    for check in "0123456789":
        if luhn_valid((body + check).encode()):
            return body + check
    raise AssertionError("unreachable")


VISA = "4111111111111111"
MASTERCARD = "5500000000000004"
AMEX = "378282246310005"
VISA_13 = luhn_complete("4", 13)
CARD_19 = luhn_complete("62", 19)
SPELLINGS = {
    VISA: "4111111111111111",
    MASTERCARD: "5500 0000 0000 0004",
    AMEX: "3782-822463-10005",
    VISA_13: VISA_13,
    CARD_19: " ".join(CARD_19[i : i + 4] for i in range(0, 19, 4)),
}


def digits_of(text: str) -> str:
    return re.sub(r"[ -]", "", text)


def assert_no_card(blob: bytes, cards=tuple(SPELLINGS)) -> None:
    """No card number appears, in any spelling (separators removed) nor base64."""
    flat = re.sub(rb"[ -]", b"", blob)
    for card in cards:
        assert card.encode() not in flat, card
        assert base64.b64encode(card.encode())[:12] not in blob


def redact(lines: list[bytes], **privacy) -> list[bytes]:
    key = KEY if privacy.get("hash_fields") else None
    return Redactor(PrivacySettings(**privacy), key).redact(lines)


# -- masking -------------------------------------------------------------------


def test_luhn():
    assert luhn_valid(b"4111111111111111")
    assert luhn_valid(b"378282246310005")
    assert not luhn_valid(b"4111111111111112")
    assert all(luhn_valid(card.encode()) for card in SPELLINGS)


@pytest.mark.parametrize("card", list(SPELLINGS))
def test_each_spelling_is_masked_to_its_last_four_digits(card):
    spelled = SPELLINGS[card]
    line = orjson.dumps({"transaction_id": "t1", "card_number": spelled, "amount": 12.5})
    [out] = redact([line])
    assert orjson.loads(out)["card_number"] == "*" * (len(card) - 4) + card[-4:]
    assert orjson.loads(out)["amount"] == 12.5
    assert_no_card(out)


def test_a_card_inside_free_text_is_masked_and_the_text_kept():
    note = f"paid with 4111-1111-1111-1111 exp 12/25 cvv 123, backup {MASTERCARD}; ref 1234 {SPELLINGS[AMEX]} ok"
    [out] = redact([orjson.dumps({"note": note})])
    assert orjson.loads(out)["note"] == (
        "paid with ************1111 exp 12/25 cvv 123, backup ************0004; ref 1234 ***********0005 ok"
    )


def test_a_card_followed_by_more_digit_groups_is_still_found():
    out = redact([b'{"note":"4111 1111 1111 1111 123"}', b'{"note":"1234-4111111111111111"}'])
    assert out == [b'{"note":"************1111 123"}', b'{"note":"1234-************1111"}']


@pytest.mark.parametrize(
    "note",
    [
        "45 34 8-6159 3782-822463-10005 5b",  # a Luhn-valid id takes the card's first group
        "6921816096985 3782-822463-10005 2",  # ... or the id and that group together
        "2141024343287-200082345",  # the kept last four and the next group pass Luhn
    ],
)
def test_a_card_next_to_digits_that_pass_luhn_leaves_nothing_readable(note):
    """Found by hypothesis: masking only the first span left the rest of a card, or made a new one."""
    [out] = redact([orjson.dumps({"note": note})])
    assert_no_card(out)
    assert redact([out]) == [out]
    assert orjson.loads(out)["note"] != note


def test_json_escaped_digits_are_found():
    escaped = "".join(f"\\u{ord(c):04x}" for c in VISA)
    [out] = redact([b'{"card":"' + escaped.encode() + b'"}'])
    assert orjson.loads(out) == {"card": "************1111"}


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn-invalid
        "1752087600000",  # epoch milliseconds
        "1752087600000123",  # epoch microseconds
        luhn_complete("0", 16),
        luhn_complete("1", 16),
        luhn_complete("7", 16),
        luhn_complete("8", 16),
        luhn_complete("9", 16),
        luhn_complete("4", 12),  # too short
        luhn_complete("4", 20),  # too long: not a card number
        "411111111111",  # 12 digits
        "4111  1111  1111  1111",  # two separators between groups: not one number
    ],
)
def test_digit_runs_that_are_not_card_numbers_are_left_alone(text):
    line = orjson.dumps({"ref": text, "timestamp": 1752087600000})
    assert redact([line]) == [line]


def test_a_run_at_the_very_end_of_a_line_is_judged_too():
    assert mask_pans(b"1752087600000") == b"1752087600000"
    assert mask_pans(b"x 4111111111111111") == b"x ************1111"
    assert mask_pans(b"4222222222222") == b"*********2222"


def test_json_numbers_are_never_rewritten():
    lines = [
        b'{"pan":4111111111111111,"amount":5500000000000004.0,"n":[378282246310005]}',
        b'{"a": 4111111111111111, "b": "4111111111111111"}',
    ]
    out = redact(lines)
    assert out[0] == lines[0]
    assert out[1] == b'{"a": 4111111111111111, "b": "************1111"}'


def test_a_line_that_is_json_but_no_object_is_masked_even_as_a_number():
    # Never an event, always a dead letter: its raw payload must not keep the number.
    lines = [b"4111111111111111", b"[4111111111111111, 1]", b'"4111111111111111"']
    assert redact(lines) == [b"************1111", b"[************1111, 1]", b'"************1111"']


def test_an_invalid_line_is_masked_everywhere_and_keeps_the_rest():
    lines = [b"oops 4111111111111111,FAIL,US", b'{"pan": 4111111111111111, "broken"']
    assert redact(lines) == [b"oops ************1111,FAIL,US", b'{"pan": ************1111, "broken"']


def test_lines_without_candidates_are_the_same_objects():
    lines = [orjson.dumps(event(f"t{i}", T0 + i)) for i in range(50)]
    out = redact(lines)
    assert out is lines


def test_a_line_holding_a_raw_newline_does_not_shift_the_others():
    lines = [b'{"a":"x\ny"}', b'{"pan":"4111111111111111"}', b'{"b":"4111111111111112"}']
    out = redact(lines)
    assert out == [lines[0], b'{"pan":"************1111"}', lines[2]]
    assert lines[1] == b'{"pan":"4111111111111111"}'  # the source's list is untouched


def test_masking_off_passes_cards_through():
    line = b'{"pan":"4111111111111111"}'
    assert redact([line], mask_pans=False) == [line]


_TEXT = st.text(alphabet="0123456789 -abc:\u00e9", max_size=40)
_CARD_TEXT = st.sampled_from(list(SPELLINGS.values()))


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.one_of(
            _TEXT,
            st.tuples(_TEXT, _CARD_TEXT, _TEXT).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.integers(min_value=0, max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
    )
)
def test_masked_lines_stay_the_same_json_except_masked_strings(fields):
    line = orjson.dumps(fields)
    [out] = redact([line])
    masked = orjson.loads(out)
    assert masked.keys() == fields.keys()
    for name, value in fields.items():
        if isinstance(value, str):
            assert len(masked[name]) <= len(value)
            assert masked[name] == value or re.search(r"\*{9,15}[0-9]{4}", masked[name])
        else:
            assert masked[name] == value
    assert_no_card(out)
    assert redact([out]) == [out]  # nothing left to mask


# -- drop and hash -------------------------------------------------------------


def _hmac(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


def test_dropped_and_hashed_fields():
    lines = [
        orjson.dumps({"transaction_id": "t1", "card_number": VISA, "cvv": "123", "email": "a@b.c", "n": VISA}),
        b'{"transaction_id": "t2", "card_number": "4111111111111111", "cvv": "987", broken',
        b'{"transaction_id": "t3", "c\\u0076v": "555"}',  # an escaped name is still the name
        b'{"transaction_id": "t4", "note": "cvv"}',  # the name as a value: untouched
    ]
    out = redact(lines, drop_fields=["cvv"], hash_fields=["card_number", "email"])
    first = orjson.loads(out[0])
    assert first == {
        "transaction_id": "t1",
        "card_number": _hmac(VISA),
        "email": _hmac("a@b.c"),
        "n": "************1111",
    }
    assert b"987" not in out[1] and b'"[dropped]"' in out[1] and _hmac(VISA).encode() in out[1]
    assert orjson.loads(out[2]) == {"transaction_id": "t3"}
    assert out[3] == lines[3]


def test_settings_refuse_unusable_fields():
    for bad, key in (
        ({"drop_fields": ["region"]}, r"privacy\.drop_fields: .*region"),
        ({"hash_fields": ["amount"]}, r"privacy\.hash_fields: .*amount"),
        ({"drop_fields": ["x"], "hash_fields": ["x"]}, r"privacy: .*both drop_fields and hash_fields"),
        ({"drop_fields": [""]}, r"privacy\.drop_fields: .*empty"),
        ({"hash_key_env": "not a name"}, r"privacy\.hash_key_env"),
    ):
        with pytest.raises(SettingsError, match=key):
            load_settings(environ={}, overrides={"privacy": bad})


def test_hashing_without_a_key_stops_the_start_naming_the_variable():
    settings = load_settings(environ={}, overrides={"privacy": {"hash_fields": ["card_number"]}})
    with pytest.raises(SettingsError, match="PAYWATCH_HASH_KEY"):
        hash_key(settings, environ={})
    own_variable = load_settings(environ={}, overrides={"privacy": {"hash_fields": ["x"], "hash_key_env": "MY_KEY"}})
    with pytest.raises(SettingsError, match="MY_KEY.*fewer than 16 bytes"):
        hash_key(own_variable, environ={"MY_KEY": "short"})
    with pytest.raises(ValueError, match="PAYWATCH_HASH_KEY"):
        Redactor(settings.privacy)
    assert hash_key(settings, environ={"PAYWATCH_HASH_KEY": KEY.decode()}) == KEY


# -- the parse step and the flow -------------------------------------------------


def test_parse_step_masks_transactions_alerts_and_dead_letters():
    settings = load_settings(environ={})
    events = [
        event("t1", T0, card_number=SPELLINGS[MASTERCARD]),
        # FRAUD_SUSPECTED (amount > 5000, fake merchant): the alert quotes the merchant name.
        event("t2", T0 + 1, amount=9000.0, merchant=f"fake shop {VISA}"),
        b'{"transaction_id":"t3","card":"4111 1111 1111 1111", broken',
        b'{"transaction_id":"t4","card":"378282246310005","timestamp":"x\xff"}',
        event("t5", T0 + 2, region=123, pan=VISA),  # invalid field
    ]
    _, parsed = ChunkParser(settings).parse(None, chunk(events))
    assert parsed.n_transactions == 2 and len(parsed.dead_letters) == 3 and len(parsed.alerts) == 1
    everything = parsed.transactions + orjson.dumps([parsed.alerts, parsed.flagged, parsed.dead_letters])
    assert_no_card(everything)
    assert b"************0004" in parsed.transactions
    non_utf8 = [d for d in parsed.dead_letters if "raw_base64" in d]
    assert len(non_utf8) == 1
    assert b"***********0005" in base64.b64decode(non_utf8[0]["raw_base64"])
    assert "************1111" in parsed.dead_letters[0]["raw"]


def test_in_process_flow_no_dropped_or_hashed_value_reaches_any_sink():
    settings = load_settings(
        environ={},
        overrides={"privacy": {"drop_fields": ["cvv"], "hash_fields": ["card_number", "merchant_id"]}},
    )
    secrets = ["cvv-secret-917", "merchant-secret-42"]
    events = [
        event(
            f"t{i}",
            T0 + i,
            amount=9000.0 if i % 3 == 0 else 20.0,
            merchant="fake store" if i % 3 == 0 else "shop",
            cvv=secrets[0],
            card_number=VISA,
            merchant_id=secrets[1],
        )
        for i in range(30)
    ]
    events += [
        b'{"transaction_id":"x","cvv":"cvv-secret-917","card_number":"4111111111111111","merchant_id":"merchant-secret-42"',
        orjson.dumps(event("y", T0, region=7, cvv=secrets[0], card_number=VISA, merchant_id=secrets[1])),
    ]
    captured: dict[str, list] = {"alerts": [], "metrics": [], "transactions": [], "dead_letters": []}
    outputs = Outputs(**{name: [TestingSink(items)] for name, items in captured.items()})
    source = TestingSource([chunk(events, done=True)])
    os.environ.pop("PAYWATCH_HASH_KEY", None)
    with pytest.raises(SettingsError, match="PAYWATCH_HASH_KEY"):
        build_flow(settings, source=source, outputs=outputs)
    os.environ["PAYWATCH_HASH_KEY"] = KEY.decode()
    try:
        flow = build_flow(settings, source=source, outputs=outputs)
    finally:
        del os.environ["PAYWATCH_HASH_KEY"]
    run_main(flow)
    blob = repr(captured).encode()
    assert captured["transactions"] and captured["alerts"] and len(captured["dead_letters"]) == 2
    for secret in secrets:
        assert secret.encode() not in blob
    assert_no_card(blob)
    assert _hmac(VISA).encode() in blob and _hmac(secrets[1]).encode() in blob
    assert all(b'"cvv"' not in line for line in _transaction_lines(captured["transactions"]))


def _transaction_lines(items) -> list[bytes]:
    return [line for _key, batch in items for line in batch.jsonl.splitlines()]


# -- the whole flow as a process -------------------------------------------------


@pytest.mark.integration
def test_whole_flow_no_card_number_in_any_file_stdout_or_stderr(tmp_path):
    cards = list(SPELLINGS.values())
    lines: list[bytes] = []
    for i in range(20):
        spelled = cards[i % len(cards)]
        extra = {"card_number": spelled} if i % 2 else {"note": f"customer card {spelled} on file"}
        fraud = i % 5 == 0  # FRAUD_SUSPECTED: alerts quote the merchant name
        lines.append(
            orjson.dumps(
                event(
                    f"t{i}",
                    T0 + i,
                    amount=9000.0 if fraud else 25.0,
                    merchant=f"fake {spelled}" if fraud else "Corner Shop",
                    **extra,
                )
            )
        )
    lines += [
        b'{"transaction_id":"b1","card":"4111 1111 1111 1111"',
        b"4111-1111-1111-1111,SUCCESS,US-WEST",
        b'{"transaction_id":"b3","timestamp":"' + b"\xff" + b'","card":"5500000000000004"}',
        orjson.dumps(event("b4", T0, region=42, card_number=AMEX)),
        orjson.dumps(event("b5", T0 + 1e10, card_number=VISA_13)),  # far future / out of range
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out_dir = tmp_path / "out"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH")},
        "PAYWATCH__SOURCE__TYPE": "file",
        "PAYWATCH__SOURCE__PATH": str(source),
        "PAYWATCH__SINKS__JSONL__DIR": str(out_dir),
        "PAYWATCH__SINKS__STDOUT": "{alerts: true, metrics: true, dead_letters: true}",
        "PAYWATCH__SINKS__LAKE__ENABLED": "true",
        "PAYWATCH__SINKS__LAKE__URI": str(tmp_path / "lake"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflow"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    transactions = b"".join(p.read_bytes() for p in files if p.name.startswith("transactions"))
    dead = b"".join(p.read_bytes() for p in files if p.name.startswith("dead_letter"))
    assert len(transactions.splitlines()) == 20 and len(dead.splitlines()) == 5
    assert transactions.count(b"****") >= 20 and b"DEAD-LETTER" in done.stdout and b"ALERT" in done.stdout
    # The lake's Parquet files are compressed: read their rows.
    zones = {p.relative_to(tmp_path / "lake").parts[0]: p for p in (tmp_path / "lake").rglob("*.parquet")}
    assert {"raw", "enriched", "alerts"} <= set(zones)
    lake_rows = [repr(pq.read_table(p).to_pylist()).encode() for p in (tmp_path / "lake").rglob("*.parquet")]
    assert b"************1111" in b"".join(lake_rows)
    for blob in [*(p.read_bytes() for p in files), *lake_rows, done.stdout, done.stderr]:
        assert_no_card(blob, cards=[digits_of(c) for c in cards])


@pytest.mark.integration
def test_the_start_stops_naming_the_missing_hash_key_variable(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH")},
        "PAYWATCH__SOURCE__TYPE": "file",
        "PAYWATCH__SOURCE__PATH": str(tmp_path / "none.jsonl"),
        "PAYWATCH__PRIVACY__HASH_FIELDS": "[card_number]",
        "PAYWATCH__PRIVACY__HASH_KEY_ENV": "PAYWATCH_TEST_HASH_KEY",
    }
    (tmp_path / "none.jsonl").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflow"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "PAYWATCH_TEST_HASH_KEY" in err and "privacy.hash_fields" in err
    assert "Traceback" not in err


def test_spaces_around_a_run_neither_hide_a_card_nor_get_masked():
    lines = [b'{"a": "  4111111111111111  ", "t": 1752087600000 , "b": "- 5500000000000004 -"}']
    assert redact(lines) == [b'{"a": "  ************1111  ", "t": 1752087600000 , "b": "- ************0004 -"}']


_JUNK = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b'"cvv":', b'"card":', b"\\u0034", b"\\", b"4111 1111 1111 1111", b"{", b"}", b'"', b","]),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.lists(_JUNK, max_size=6).map(b"".join), max_size=8))
def test_any_bytes_are_redacted_without_an_error_line_for_line(lines):
    """Junk in, junk out, line for line: no line makes the redaction raise."""
    redactor = Redactor(PrivacySettings(drop_fields=["cvv"], hash_fields=["card"]), KEY)
    out, array = redactor.redact_array(lines)
    assert len(out) == len(lines)
    assert array is None or array == b"[" + b",".join(out) + b"]"
