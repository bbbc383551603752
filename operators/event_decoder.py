"""Decoding and type-checking a chunk of raw events in one C call.

``orjson.loads`` per line builds a dict per event, and the parse loop then
spends as long again on ``dict.get`` and ``type(x) is str`` checks in
bytecode. msgspec decodes straight into a typed struct and checks the
types, lengths and signs while it decodes, so the Python loop reads slots
and only checks what a type cannot say (timestamp syntax, status
spellings, alphabetic currency codes).

A chunk is decoded as one JSON array (``[line,line,...]``): one call for a
thousand events. If that fails, or yields a different number of events
than lines (a line holding two objects separated by a comma), the chunk is
decoded line by line, so a rejected line never depends on its neighbours:
the same line is accepted or rejected in every chunk it could land in.

The array decoder also refuses the fields Paywatch adds (an input that
already carries ``fraud_score``, say, must be rewritten before it is
enriched), so a chunk that decodes in one piece, with no raw newline in
it, is *plain*: the parser then skips its per-event rewrite checks. Such
inputs (a replay of Paywatch's own output) take the line-by-line path,
where those fields decode as anything and the parser looks at each event.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

import msgspec

# Amounts are money: non-negative, and ints small enough to be exact floats
# wherever they are compared or summed.
MAX_INT_AMOUNT = 2**53

ADDED_FIELDS = (
    "category",
    "fraud_score",
    "fraud_status",
    "processed_at",
    "merchant_status",
    "over_merchant_limit",
    "rules_version",
)
# Fields the struct declares; STRING_FIELDS decode as str or None only.
DECLARED_FIELDS = frozenset(
    ("transaction_id", "timestamp", "payment_status", "region", "amount", "currency", "user_id")
    + ("merchant_id", "merchant_name", "device")
    + ADDED_FIELDS
)
STRING_FIELDS = frozenset(("transaction_id", "region", "currency", "merchant_id", "merchant_name", "device"))

# No string matches the empty negative lookahead, and no other type is a
# string: a field of this type makes any event that has it invalid.
_ABSENT = Annotated[str, msgspec.Meta(pattern="(?!)")]

DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


def event_type(
    max_id_length: int, added_fields: bool = True, extra_fields: tuple[str, ...] = ()
) -> type[msgspec.Struct]:
    """The struct one event decodes into; unknown fields are ignored.

    ``category``/``fraud_score``/``fraud_status``/``processed_at`` are the
    fields Paywatch adds; they are declared (default UNSET) only so the
    parser can see that an input already carries one: as anything with
    ``added_fields``, else as a type no value has, so that such an event
    fails to decode. ``extra_fields`` are other fields the flow reads
    (``rules.failure_rate.explain_by``, e.g. ``payment_method``), declared as
    anything (default None) so that they never make an event invalid.
    """
    added = Any if added_fields else _ABSENT
    ident = Annotated[str, msgspec.Meta(min_length=1, max_length=max_id_length)]
    amount = Union[
        Annotated[int, msgspec.Meta(ge=0, le=MAX_INT_AMOUNT)],
        Annotated[float, msgspec.Meta(ge=0)],
        None,
    ]
    return msgspec.defstruct(
        "Event",
        [
            ("transaction_id", ident),
            ("timestamp", Union[str, int, float, None], None),
            ("payment_status", Optional[str], None),
            ("region", ident),
            ("amount", amount, None),
            ("currency", Optional[Annotated[str, msgspec.Meta(min_length=3, max_length=3)]], None),
            ("user_id", Union[ident, int, None], None),
            ("merchant_id", Optional[str], None),
            ("merchant_name", Optional[str], None),
            ("device", Optional[str], None),
            *((name, added, msgspec.UNSET) for name in ADDED_FIELDS),
            *((name, Any, None) for name in extra_fields),
        ],
        gc=False,
        kw_only=True,
    )


class EventDecoder:
    """Decodes chunks of lines into event structs."""

    def __init__(self, max_id_length: int, extra_fields: tuple[str, ...] = ()) -> None:
        self._one = msgspec.json.Decoder(event_type(max_id_length, extra_fields=extra_fields))
        # The struct is built at run time, which a static checker cannot follow.
        self._many = msgspec.json.Decoder(list[event_type(max_id_length, False, extra_fields)])  # type: ignore[misc]

    def decode(self, lines: list[bytes]) -> tuple[list[Any], Optional[list[int]], list[tuple[int, Exception]], bool]:
        """Decode ``lines``.

        :returns: the events, the line index of each (None when every line
            decoded, so index ``i`` is line ``i``), the rejected lines as
            ``(index, error)``, and whether the chunk is plain (see above).
        """
        if lines:
            buffer = b",".join(lines)
            try:
                events = self._many.decode(b"[" + buffer + b"]")
            except DECODE_ERRORS:
                pass
            else:
                if len(events) == len(lines):
                    return events, None, [], b"\n" not in buffer
        decode_one = self._one.decode
        rejected: list[tuple[int, Exception]] = []
        events, indices = [], []
        for index, raw in enumerate(lines):
            try:
                events.append(decode_one(raw))
            except DECODE_ERRORS as exc:
                rejected.append((index, exc))
            else:
                indices.append(index)
        return events, indices, rejected, False
