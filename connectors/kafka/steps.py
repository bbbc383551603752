"""A chunk of Kafka records taken in steps, keeping only the values: shared by both clients.

A grown chunk (up to ``source.max_batch_size``) asked of a client in one call
hands back that many record objects (and their payloads) at once, which are
then walked out of cache: librdkafka's ``consume(20000)`` cost 0.81-0.93 us
of the reading thread per message against 0.57-0.60 in steps of 2,000, and
kafka-python's ``poll(max_records=20000)`` 5.34 us against 5.00 (1,000-record
chunks: 0.47 and 4.89). So a chunk is taken in steps of :data:`STEP` records,
of which only the values stay, while the offsets stay exact: contiguous
offsets across steps are implied by the first one, a gap within or between
steps lists every offset, and a bounded read stops at its end mid-chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, cast

#: Records per client call while a chunk is taken.
STEP = 2000


@dataclass
class Taken:
    """What one chunk took: ``first`` is its first offset (the start position when empty)."""

    first: int
    lines: list[bytes]
    #: every line's offset when they are not contiguous; None: ``first``, ``first + 1``, ...
    positions: Optional[list[int]]
    #: the offset after the last record taken (the partition's next snapshot)
    next_offset: int


def take(
    fetch: Callable[[int], list[Any]],
    pending: list[Any],
    asked: int,
    offset: int,
    end: Optional[int],
    offset_of: Callable[[Any], Any],
    value_of: Callable[[Any], Optional[bytes]],
) -> Taken:
    """Up to ``asked`` lines from ``offset`` (more when ``pending`` holds more), below ``end`` if set.

    :arg fetch: the client's read of at most n records, in offset order, never waiting.
    :arg pending: records the start-up probe read, taken first (the caller clears them).
    :arg offset_of: a record's offset, an int (a C-level accessor: ``attrgetter`` or the client's method).
    :arg value_of: a record's value; None (a tombstone) becomes ``b""``, which the parse step dead-letters.
    """
    first = offset
    lines: list[bytes] = []
    positions: Optional[list[int]] = None
    while len(lines) < asked and (end is None or offset < end):
        if pending:
            records, pending = pending, []
        else:
            records = fetch(min(STEP, asked - len(lines)))
        if records and (offset_of(records[0]) < offset or (end is not None and offset_of(records[-1]) >= end)):
            stop = end if end is not None else float("inf")
            records = [r for r in records if offset <= offset_of(r) < stop]
        if not records:
            break
        low, high = offset_of(records[0]), offset_of(records[-1])
        if not lines:
            first = low
        # Offsets only grow within a partition: low..high holding exactly
        # len(records) offsets, right after the previous step's, means every one is there.
        if positions is None and (high - low != len(records) - 1 or (lines and low != offset)):
            positions = list(range(first, first + len(lines)))
        if positions is not None:
            positions += map(offset_of, records)  # rare: compacted or transactional topics
        values = list(map(value_of, records))
        lines += [b"" if v is None else v for v in values] if None in values else cast(list[bytes], values)
        offset = high + 1
    return Taken(first, lines, positions, offset)
