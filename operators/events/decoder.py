"""Decoding and type-checking a chunk of raw events in one C call.

``orjson.loads`` per line builds a dict per event, and checking it then
costs as long again in ``dict.get`` and ``type(x) is str`` bytecode.
msgspec decodes straight into the typed struct of the event contract
(``operators/events/contract.py``) and checks types, lengths and ranges while
it decodes, so the parse step reads the fields as columns and only checks
what a type cannot say (timestamp syntax, status spellings, alphabetic currency
codes).

A chunk is decoded as one JSON array (``[line,line,...]``): one call for a
thousand events. When that fails, msgspec's error names the element
(``$[12].amount``) or the byte where it stopped; the lines before it are
decoded as one array again, the culprit alone, and the rest resumes as an
array. So one poison line costs a chunk one more array decode, not a
line-by-line pass. When the culprit cannot be told, or an array yields a
different number of events than lines (a line holding two objects
separated by a comma), the lines are decoded one by one: a rejected line
never depends on its neighbours, the same line is accepted or rejected in
every chunk it could land in.

The array decoder also refuses the fields Paywatch adds (an input that
already carries ``fraud_score``, say, must be rewritten before it is
enriched); such a line is decoded alone, where those fields decode as
anything. A chunk with no such line and no raw newline is *plain*: the
parser then skips its per-event rewrite checks.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate
from typing import Any, Optional

import msgspec

from operators.events.contract import Contract

DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)

#: Lines per array decode. A chunk is decoded a block at a time so that a poison line
#: costs its block, not its chunk, one more decode (see docs/performance.md).
BLOCK = 32

_ELEMENT = re.compile(r"at `\$\[(\d+)\]")
_BYTE = re.compile(r"\(byte (\d+)\)")


def json_array(lines: list[bytes]) -> bytes:
    """``b"[" + b",".join(lines) + b"]"`` in one copy: the form the decoder reads a chunk in.

    Line ``i`` starts at offset ``1 + sum(len(lines[j]) + 1 for j < i)``; the
    brackets and commas between lines are no digits, so no run crosses a line
    (the privacy scan relies on it).
    """
    if len(lines) < 2:
        return b"[" + (lines[0] if lines else b"") + b"]"
    return b",".join([b"[" + lines[0], *lines[1:-1], lines[-1] + b"]"])


class EventDecoder:
    """Decodes chunks of lines into event structs."""

    def __init__(self, contract: Contract, extra_fields: tuple[str, ...] = ()) -> None:
        """:arg extra_fields: fields besides the contract's that the flow reads (see
        :meth:`~operators.events.contract.Contract.event_struct`)."""
        self._one = msgspec.json.Decoder(contract.event_struct(True, extra_fields))
        # The struct is built at run time, which a static checker cannot follow.
        self._many = msgspec.json.Decoder(list[contract.event_struct(False, extra_fields)])  # type: ignore[misc]
        self._max_bytes = contract.max_event_bytes

    def decode(
        self, lines: list[bytes], array: Optional[bytes] = None
    ) -> tuple[list[Any], Optional[list[int]], list[int], bool]:
        """Decode ``lines``, one array of up to ``BLOCK`` lines at a time.

        :arg array: ``lines`` as one JSON array (``b"[l0,l1,...]"``) when the
            caller built it already (the privacy redaction scans it); each
            block is decoded from a slice of it, its first and last separator
            turned into brackets for the call.
        :returns: the events, the line index of each (None when every line
            decoded, so index ``i`` is line ``i``), the indices of the
            rejected lines (in order), and whether the chunk is plain (see
            above).
        """
        if not lines:
            return [], None, [], True
        n = len(lines)
        # Line i spans bytes [ends[i] + i + 1, ends[i + 1] + i + 1) of the array.
        ends = [0, *accumulate(map(len, lines))]
        if array is None or len(array) != ends[-1] + n + 1:
            array = json_array(lines)
        plain = b"\n" not in array
        many = self._many.decode
        max_bytes = self._max_bytes
        buffer = bytearray(array)
        view = memoryview(buffer)
        events: list[Any] = []
        partial: Optional[_Partial] = None
        for start in range(0, n, BLOCK):
            end = min(start + BLOCK, n)
            error: Optional[Exception] = None
            lo, hi = ends[start] + start, ends[end] + end  # the separators around the block
            if hi - lo - 1 <= max_bytes or max(map(len, lines[start:end])) <= max_bytes:
                before, after = buffer[lo], buffer[hi]
                buffer[lo], buffer[hi] = 91, 93  # "[" and "]"
                try:
                    decoded = many(view[lo : hi + 1])
                except DECODE_ERRORS as exc:
                    error = exc
                else:
                    if len(decoded) == end - start:
                        if partial is None:
                            events += decoded
                        else:
                            partial.add(decoded, start, end)
                        continue
                finally:
                    buffer[lo], buffer[hi] = before, after
            if partial is None:
                partial = _Partial(self, lines, events)
            partial.decode_block(start, end, error)
        view.release()
        if partial is None:
            return events, None, [], plain
        return partial.events, partial.indices, partial.rejected, plain and partial.plain


class _Partial:
    """The decoding of a chunk that did not decode in one piece."""

    def __init__(self, decoder: EventDecoder, lines: list[bytes], events: list[Any]) -> None:
        """:arg events: the events of ``lines[:len(events)]``, decoded before the first problem."""
        self._decoder = decoder
        self._lines = lines
        self.events = events
        self.indices: list[int] = list(range(len(events)))
        self.rejected: list[int] = []
        self.plain = True

    def add(self, events: list[Any], start: int, end: int) -> None:
        """The events of ``lines[start:end]``, decoded as one array."""
        self.events += events
        self.indices += range(start, end)

    def decode_block(self, start: int, end: int, error: Optional[Exception]) -> None:
        """A block that did not decode in one piece: too-large lines apart, then by culprit."""
        max_bytes = self._decoder._max_bytes
        for index in range(start, end):
            if len(self._lines[index]) > max_bytes:
                self.decode_span(start, index, None)
                self.rejected.append(index)
                start, error = index + 1, None
        self.decode_span(start, end, error)

    def decode_span(self, start: int, end: int, error: Optional[Exception]) -> None:
        """Decode ``lines[start:end]``; ``error`` is what decoding the whole span raised, if known."""
        many = self._decoder._many
        while start < end:
            span = self._lines[start:end]
            if error is None:
                try:
                    events = many.decode(json_array(span))
                except DECODE_ERRORS as exc:
                    error = exc
                else:
                    if len(events) == len(span):
                        self.add(events, start, end)
                    else:
                        self._one_by_one(start, end)
                    return
            culprit = _culprit(error, span)
            error = None
            if culprit is None:
                self._one_by_one(start, end)
                return
            if culprit:
                self.decode_prefix(start, start + culprit)
            self._one_by_one(start + culprit, start + culprit + 1)
            start += culprit + 1

    def decode_prefix(self, start: int, end: int) -> None:
        """Lines that came before the culprit: normally valid together; checked anyway."""
        span = self._lines[start:end]
        try:
            events = self._decoder._many.decode(json_array(span))
        except DECODE_ERRORS as exc:
            self.decode_span(start, end, exc)
            return
        if len(events) != len(span):
            self._one_by_one(start, end)
            return
        self.add(events, start, end)

    def _one_by_one(self, start: int, end: int) -> None:
        decode_one = self._decoder._one.decode
        for index in range(start, end):
            try:
                event = decode_one(self._lines[index])
            except DECODE_ERRORS:
                self.rejected.append(index)
            else:
                self.events.append(event)
                self.indices.append(index)
                self.plain = False


def _culprit(error: Exception, span: list[bytes]) -> Optional[int]:
    """The index in ``span`` of the line the error points at, if it can be told."""
    text = str(error)
    match = _ELEMENT.search(text)
    if match is not None:
        index = int(match.group(1))
        return index if index < len(span) else None
    match = _BYTE.search(text)
    if match is not None:
        # Line i starts at byte 1 + sum(len(previous lines)) + i in "[a,b,...]".
        starts = [0, *(end + i + 1 for i, end in enumerate(accumulate(map(len, span))))]
        index = bisect_right(starts, int(match.group(1)) - 1) - 1
        return index if 0 <= index < len(span) else None
    return None
