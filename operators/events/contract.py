"""The event contract: what an input event must look like, written once.

Three things are derived from :class:`Contract`, so they cannot drift apart:

- the msgspec struct the fast path decodes whole chunks into
  (:meth:`Contract.event_struct`): types, string lengths and number ranges
  are checked in C while decoding (``operators/events/decoder.py``);
- the few checks a type cannot express, which the hot loop makes with this
  module's constants (timestamp syntax, year range and the wall-clock limit,
  status spellings, alphabetic currency codes; ``operators/parse.py``);
- the exact dead-letter reason, field and detail of a rejected line
  (:meth:`Contract.violation`): the slow path, run only for lines the fast
  path rejected, in the order a person would fix them.

``tests/rules/test_contract.py`` checks with hypothesis that the fast path accepts
exactly the lines in which :meth:`Contract.violation` finds nothing wrong.
Limits come from ``validation.*`` in the settings; a value over its limit is
dead-lettered naming the field, never truncated or clamped, so that no
accepted event can break a sink's limits later (DynamoDB items 400 KB, SNS
messages 256 KB, CloudWatch values finite).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

import msgspec
import orjson

from config.settings import ValidationSettings
from operators.events.timestamps import TimestampParser, iso_utc

# Dead-letter reasons (machine-readable; each one explained in docs/bad-input.md).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
FUTURE = "future"
TOO_LARGE = "too_large"
LATE = "late"

#: Every reason the parse step writes, with what it means.
REASONS = {
    INVALID_JSON: "the payload is not one JSON value",
    NOT_AN_OBJECT: "the payload is JSON but not an object",
    MISSING_FIELD: "a required field is absent or null",
    INVALID_FIELD: "a field has the wrong type, length or range",
    FUTURE: "the event time is further ahead of the wall clock than validation.max_future_seconds",
    TOO_LARGE: "the payload is longer than validation.max_event_bytes",
    LATE: "the event time is behind its partition's watermark by more than the allowed lateness",
}

#: Integers beyond 2^53 are not exact as floats, where amounts are compared and summed.
MAX_EXACT_INT = 2**53

FAIL_STATUSES = ("FAIL", "FAILED", "FAILURE", "DECLINED", "DENIED", "REJECTED", "ERROR")
SUCCESS_STATUSES = ("SUCCESS", "SUCCEEDED", "SUCCESSFUL", "OK", "APPROVED", "COMPLETED", "PAID")

#: The fields Paywatch adds to an event; an input that carries one is rewritten, not duplicated.
ADDED_FIELDS = (
    "category",
    "fraud_score",
    "fraud_status",
    "processed_at",
    "merchant_status",
    "over_merchant_limit",
    "rules_version",
)

#: Fields the struct declares; STRING_FIELDS decode as str or None only.
DECLARED_FIELDS = frozenset(
    ("transaction_id", "timestamp", "payment_status", "region", "amount", "currency", "user_id")
    + ("merchant_id", "merchant_name", "device")
    + ADDED_FIELDS
)
STRING_FIELDS = frozenset(("transaction_id", "region", "currency", "merchant_id", "merchant_name", "device"))

#: Longest timestamp string worth parsing (an ISO-8601 one is at most 35 characters).
MAX_TIMESTAMP_LENGTH = 64

#: A detail quotes at most this many characters of the offending value.
_QUOTE = 80

# No string matches the empty negative lookahead, and no other type is a
# string: a field of this type makes any event that has it invalid.
_ABSENT = Annotated[str, msgspec.Meta(pattern="(?!)")]

Violation = tuple[str, Optional[str], str]  # (reason, field, detail)


def status_failed(status: object) -> Optional[bool]:
    """True for a failure spelling, False for a success one, None for anything else.

    Case and surrounding blanks are ignored (``" declined "`` is a failure).
    """
    if type(status) is not str:
        return None
    name = status.strip().upper()
    if name in FAIL_STATUSES:
        return True
    if name in SUCCESS_STATUSES:
        return False
    return None


def decode_object(raw: bytes) -> Any:
    """The payload as Python values, for the slow path; raises ``ValueError`` if it is not JSON.

    orjson first; the standard library where orjson's limits are not JSON's
    (numbers beyond a double, which are then judged by their field's range,
    not called invalid JSON). ``NaN``/``Infinity`` literals are not JSON.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first = exc
    try:
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise first from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class _Text:
    """A string field: its limits and how a person would say them."""

    name: str
    min_length: int
    max_length: int

    @property
    def expected(self) -> str:
        least = "a non-empty string" if self.min_length else "a string"
        return f"{least} of at most {self.max_length} characters"


class Contract:
    """The field rules and limits of one event, from ``validation.*``.

    ================ ======== ==============================================
    field            required rule
    ================ ======== ==============================================
    transaction_id   yes      non-empty string, <= max_id_length characters
    timestamp        yes      epoch milliseconds or ISO-8601 with a zone,
                              years min_year..max_year, at most
                              max_future_seconds ahead of the wall clock
    payment_status   yes      a success or failure spelling (any case)
    region           yes      non-empty string, <= max_id_length
    amount           no       number, 0 <= amount <= max_amount; integers
                              also <= 2^53
    currency         no       three letters (ISO-4217)
    user_id          no       non-empty string <= max_id_length, or an
                              integer within +-2^53
    merchant_id      no       string <= max_id_length
    merchant_name    no       string <= max_name_length
    device           no       string <= max_id_length
    (whole payload)           <= max_event_bytes bytes
    ================ ======== ==============================================

    Unknown fields are kept as they are (they count towards the byte limit).

    Two limits are checked by the parse step rather than by the struct, because
    they are what poison most often breaks, and a line the struct rejects
    costs its block of lines a second decode: amount's maximum (one comparison
    where the amount is read anyway) and merchant_name's length (only when the
    name misses the merchant-verdict cache, which holds checked names only).
    """

    def __init__(self, validation: ValidationSettings) -> None:
        self.max_id_length = validation.max_id_length
        self.max_name_length = validation.max_name_length
        self.max_amount = float(validation.max_amount)
        self.max_int_amount = min(MAX_EXACT_INT, math.floor(self.max_amount))
        self.max_future_seconds = validation.max_future_seconds
        self.max_event_bytes = validation.max_event_bytes
        self.years = (validation.min_year, validation.max_year)
        bounds = TimestampParser(*self.years)
        self._earliest = float(bounds.min_seconds)
        self._latest = math.nextafter(bounds.max_seconds, -math.inf)
        #: The last accepted instant of ``validation.max_year`` (the wall-clock limit aside).
        self.latest_timestamp = self._latest
        self.timestamp_expected = (
            f"epoch milliseconds or ISO-8601 with a zone, years {validation.min_year}-{validation.max_year}"
        )
        self._now_text = (math.nan, "")
        self.amount_expected = f"a number from 0 to {self.max_amount:g} (integers up to 2^53)"
        self._ids = {name: _Text(name, 1, self.max_id_length) for name in ("transaction_id", "region")}
        self._user_id_text = _Text("user_id", 1, self.max_id_length)
        self._optional_text = (
            _Text("merchant_id", 0, self.max_id_length),
            _Text("merchant_name", 0, self.max_name_length),
            _Text("device", 0, self.max_id_length),
        )
        self._optional_by_name = {rule.name: rule for rule in self._optional_text}

    # -- the fast path's struct ---------------------------------------------

    def event_struct(self, added_fields: bool = True, extra_fields: tuple[str, ...] = ()) -> type[msgspec.Struct]:
        """The struct one event decodes into; unknown fields are ignored.

        ``ADDED_FIELDS`` (``category``, ``fraud_score``, ... ``rules_version``) are
        the fields Paywatch adds; they are declared (default UNSET) only so the
        parser can see that an input already carries one: as anything with
        ``added_fields``, else as a type no value has, so that such an event
        fails to decode (and is decoded alone, see ``decoder.py``).
        ``extra_fields`` are other fields the flow reads
        (``rules.failure_rate.explain_by``, e.g. ``payment_method``), declared as
        anything (default None) so that they never make an event invalid.
        """

        def text(rule: _Text) -> Any:
            return Annotated[str, msgspec.Meta(min_length=rule.min_length, max_length=rule.max_length)]

        ident = text(self._ids["transaction_id"])
        # The upper bounds of amount and merchant_name are the loop's (see the class doc).
        amount = Union[Annotated[int, msgspec.Meta(ge=0)], Annotated[float, msgspec.Meta(ge=0)], None]
        timestamp = Union[
            Annotated[str, msgspec.Meta(max_length=MAX_TIMESTAMP_LENGTH)],
            Annotated[int, msgspec.Meta(ge=-MAX_EXACT_INT, le=MAX_EXACT_INT)],
            float,
            None,
        ]
        user_id: Any = Union[
            text(self._user_id_text), Annotated[int, msgspec.Meta(ge=-MAX_EXACT_INT, le=MAX_EXACT_INT)], None
        ]
        added = Any if added_fields else _ABSENT
        return msgspec.defstruct(
            "Event",
            [
                ("transaction_id", ident),
                ("timestamp", timestamp, None),
                ("payment_status", Optional[str], None),
                ("region", ident),
                ("amount", amount, None),
                ("currency", Optional[Annotated[str, msgspec.Meta(min_length=3, max_length=3)]], None),
                ("user_id", user_id, None),
                *(
                    (rule.name, Optional[str] if rule.name == "merchant_name" else Optional[text(rule)], None)
                    for rule in self._optional_text
                ),
                *((name, added, msgspec.UNSET) for name in ADDED_FIELDS),
                *((name, Any, None) for name in extra_fields if name not in DECLARED_FIELDS),
            ],
            gc=False,
            kw_only=True,
        )

    def timestamp_bounds(self, now: float) -> tuple[float, float]:
        """The accepted event times, inclusive, for a chunk parsed at wall-clock ``now``."""
        return self._earliest, min(self._latest, now + self.max_future_seconds)

    # -- the slow path: why a line was rejected -----------------------------

    def line_violation(
        self, raw: bytes, now: float, timestamps: Optional[TimestampParser] = None
    ) -> Optional[Violation]:
        """What is wrong with one payload, or None if it is a valid event.

        Lateness is not judged here: it depends on the partition's history.
        :arg timestamps: a parser whose caches to use (the caller's partition's:
            its ``error`` is per call, so it must not be shared between threads).
        """
        if len(raw) > self.max_event_bytes:
            detail = f"the payload is {len(raw)} bytes; at most {self.max_event_bytes} (validation.max_event_bytes)"
            return TOO_LARGE, None, detail
        try:
            ev = decode_object(raw)
        except ValueError as exc:
            return INVALID_JSON, None, str(exc)
        if type(ev) is not dict:
            return NOT_AN_OBJECT, None, "an event must be a JSON object"
        return self.violation(ev, now, timestamps)

    def violation(self, ev: dict, now: float, timestamps: Optional[TimestampParser] = None) -> Optional[Violation]:
        """The first broken rule of a decoded event, in the order a person would fix them."""
        problem = self._required_text(ev, "transaction_id") or self._timestamp(ev.get("timestamp"), now, timestamps)
        if problem is None:
            status = ev.get("payment_status")
            if status_failed(status) is None:
                problem = self._missing_or(
                    "payment_status", status, "SUCCESS or FAIL (or a synonym such as FAILED, DECLINED, OK)"
                )
        return (
            problem
            or self._required_text(ev, "region")
            or self._amount(ev.get("amount"))
            or self._currency(ev.get("currency"))
            or self._user_id(ev.get("user_id"))
            or self._optional_texts(ev)
        )

    @staticmethod
    def _missing_or(name: str, value: object, expected: str) -> Violation:
        if value is None:
            return MISSING_FIELD, name, f"{name} is required: {expected}"
        return INVALID_FIELD, name, f"{name} must be {expected}, got {_quote(value)}"

    def _required_text(self, ev: dict, name: str) -> Optional[Violation]:
        rule = self._ids[name]
        value = ev.get(name)
        if type(value) is str and rule.min_length <= len(value) <= rule.max_length:
            return None
        return self._missing_or(name, value, rule.expected)

    def _timestamp(self, value: object, now: float, parser: Optional[TimestampParser]) -> Optional[Violation]:
        if type(value) is str and len(value) > MAX_TIMESTAMP_LENGTH:
            return self._missing_or("timestamp", value, self.timestamp_expected)
        if parser is None:
            parser = TimestampParser(*self.years)
        ts = parser.parse(value)
        if ts is None:
            if value is None:
                return MISSING_FIELD, "timestamp", f"timestamp is required: {self.timestamp_expected}"
            return (
                INVALID_FIELD,
                "timestamp",
                f"{parser.error}; expected {self.timestamp_expected}, got {_quote(value)}",
            )
        if ts > now + self.max_future_seconds:
            return self.future_violation(value, ts, now)
        return None

    # -- what the parse step knows without the slow path -----------------------
    # The parse step uses these answers only for an event whose earlier fields
    # are valid, so each is the first broken rule: the same answer as violation().

    def future_violation(self, value: object, ts: float, now: float) -> Violation:
        """An event time within the years but too far ahead of the wall clock."""
        return (
            FUTURE,
            "timestamp",
            f"event time {_quote(value)} is {ts - now:,.0f} s ahead of the wall clock ({self._clock_text(now)}); "
            f"at most {self.max_future_seconds:g} s ahead is accepted (validation.max_future_seconds)",
        )

    def amount_violation(self, amount: object) -> Violation:
        """An amount out of range."""
        return INVALID_FIELD, "amount", f"amount must be {self.amount_expected}, got {_quote(amount)}"

    def text_violation(self, name: str, value: object) -> Violation:
        """An optional text field (merchant_id, merchant_name, device) of the wrong type or length."""
        rule = self._optional_by_name[name]
        return INVALID_FIELD, name, f"{name} must be {rule.expected}, got {_quote(value)}"

    def _clock_text(self, now: float) -> str:
        """``now`` in ISO-8601, cached: every future-dated line of a chunk shares its ``now``."""
        cached = self._now_text
        if cached[0] != now:
            cached = self._now_text = (now, iso_utc(now))
        return cached[1]

    def _amount(self, amount: object) -> Optional[Violation]:
        if amount is None:
            return None
        if type(amount) is int and 0 <= amount <= self.max_int_amount:
            return None
        if type(amount) is float and 0 <= amount <= self.max_amount:
            return None
        return self.amount_violation(amount)

    @staticmethod
    def _currency(currency: object) -> Optional[Violation]:
        if currency is None or (type(currency) is str and len(currency) == 3 and currency.isalpha()):
            return None
        return INVALID_FIELD, "currency", f"currency must be an ISO-4217 code (three letters), got {_quote(currency)}"

    def _user_id(self, user_id: object) -> Optional[Violation]:
        rule = self._user_id_text
        if user_id is None or (type(user_id) is int and abs(user_id) <= MAX_EXACT_INT):
            return None
        if type(user_id) is str and rule.min_length <= len(user_id) <= rule.max_length:
            return None
        expected = f"{rule.expected} or an integer within +-2^53"
        return INVALID_FIELD, "user_id", f"user_id must be {expected}, got {_quote(user_id)}"

    def _optional_texts(self, ev: dict) -> Optional[Violation]:
        for rule in self._optional_text:
            value = ev.get(rule.name)
            if value is not None and (type(value) is not str or len(value) > rule.max_length):
                return self.text_violation(rule.name, value)
        return None


def _quote(value: object) -> str:
    """The offending value, shortened: a detail never carries a 5 MB string.

    An integer beyond 64 bits is quoted as the double the slow path's decoder
    (orjson) reads it as, so that the typed decoder, which keeps it exact, gives
    the same detail for the same line.
    """
    if type(value) is int and not -(2**63) <= value < 2**64:
        with contextlib.suppress(OverflowError):  # beyond a double, orjson refuses it and json keeps the int
            value = float(value)
    if type(value) is str and len(value) > _QUOTE:
        return f"{value[:_QUOTE]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= _QUOTE else f"{text[:_QUOTE]}... ({len(text)} characters)"
