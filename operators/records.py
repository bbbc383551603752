"""The contract between every source and the flow: a batch of raw lines.

Sources hand the flow whole batches as one item (a :class:`RawChunk`) rather
than one item per event, because Bytewax's per-item cost (routing, Python
call per step) is several microseconds while parsing one event costs about
one. A chunk also carries what event time needs to know about its partition:
how many partitions exist (so no partition is forgotten when the watermark
takes their minimum), whether the partition has ended, or is idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from operators.codes import codes


@dataclass(slots=True)
class RawChunk:
    """A batch of raw event payloads read from one source partition.

    :ivar part: the partition's stable name (``file:/data/a.jsonl``,
        ``kafka:payments/3``, ``kinesis:shardId-0001``); keys the parse step.
    :ivar n_parts: how many partitions the source has in total.
    :ivar lines: raw payloads, one event each, without line terminators.
    :ivar origin: where the lines came from, for dead letters (file path,
        ``topic/partition``, shard id).
    :ivar first_position: position of ``lines[0]`` (file line number,
        Kafka offset); with ``positions`` None, line ``i`` is at
        ``first_position + i``.
    :ivar positions: explicit positions when they are not contiguous
        (Kafka offsets after compaction, Kinesis sequence numbers).
    :ivar done: the partition has ended; no more chunks will follow.
    :ivar idle: the partition has had no data for a while; it must not hold
        the watermark back until it has data again.
    :ivar skip_blank: a blank line separates records and carries no event
        (JSONL files); where each line is a message (a Kafka record), an
        empty one is still a message and is dead-lettered.
    """

    part: str
    n_parts: int
    lines: list[bytes]
    origin: str = ""
    first_position: int = 0
    positions: Optional[list] = None
    done: bool = False
    idle: bool = False
    skip_blank: bool = False

    def position(self, index: int):
        """Source position of ``lines[index]``."""
        if self.positions is not None:
            return self.positions[index]
        return self.first_position + index


@dataclass(slots=True)
class TransactionBatch:
    """The scored transactions of one chunk.

    :ivar jsonl: every valid transaction as JSONL (input fields + category,
        fraud_score, fraud_status, processed_at), one line each.
    :ivar count: number of lines in ``jsonl``.
    :ivar flagged: the REVIEW_REQUIRED / FRAUD_SUSPECTED ones as dicts.
    """

    jsonl: bytes
    count: int
    flagged: list


@dataclass(slots=True)
class LakeChunk:
    """What the lake sink needs from one parsed chunk (built only when the lake is on).

    :ivar part, origin, first_position, positions: as in :class:`RawChunk`.
    :ivar lines: every line as the parse step saw it (after masking), valid or not.
    :ivar received_at: epoch seconds when the parse step received the chunk.
    :ivar line_times: event time (epoch seconds) of each line, NaN where it
        could not be read; a list or a numpy array (the parse step hands its
        array: the lake reads it with numpy).
    :ivar valid: indices into ``lines`` of the valid transactions, in the
        order of ``transactions``; a list or a numpy array.
    :ivar transactions: the scored transactions as JSONL (the same bytes the
        transactions output gets); empty when no output wants every transaction
        (the lake reads ``lines`` and the enrichment keys instead).
    :ivar enrichment_keys: per valid transaction (in the order of ``valid``),
        the key of its enrichment suffix in ``enrichment_suffixes``; a list or
        a numpy array.
    :ivar enrichment_suffixes: key -> the bytes the transactions line has
        after the event's own fields (``,"category":...,"processed_at":"..."}``
        and its newline). With both, the lake reads the event's fields from
        ``lines`` and the added ones from these few suffixes instead of
        parsing the whole JSONL again; None (both optional): it reads
        ``transactions``.
    :ivar array: ``lines`` as the JSON array ``[l0,l1,...]`` the parse step
        decoded them from (optional): the lake keeps it as its buffer of the
        lines instead of joining them again.
    """

    part: str
    origin: str
    lines: list[bytes]
    first_position: int
    positions: Optional[list]
    received_at: float
    line_times: Union[Sequence[float], np.ndarray]
    valid: Union[Sequence[int], np.ndarray]
    transactions: bytes
    enrichment_keys: Union[Sequence[int], np.ndarray, None] = None
    enrichment_suffixes: Optional[dict[int, bytes]] = None
    array: Optional[bytes] = None

    def position(self, index: int):
        """Source position of ``lines[index]``."""
        if self.positions is not None:
            return self.positions[index]
        return self.first_position + index


# Rows of UserColumns.numbers.
TIME, AMOUNT, REGION, WHOLE = 0, 1, 2, 3


def _user_columns(users: list[str], txns: list[str], regions: list[str], numbers: bytes) -> UserColumns:
    """Unpickle :class:`UserColumns` (its numbers travel as one bytes object)."""
    block = np.frombuffer(numbers, dtype=np.float64).reshape(4, len(users))
    return UserColumns(users, txns, regions, block)


@dataclass(slots=True, eq=False)
class UserColumns:
    """Events for the user rules, as columns: one user shard's events of a chunk, or a batch released to the rules.

    The strings stay Python lists (the rules look user ids up in a dict, and
    quote ids in alerts); the numbers are one float64 block, so that a batch
    is cut, merged and reordered by numpy calls, never per event in Python,
    and crosses processes as one bytes object: a pickled numpy array costs
    3-4 us each way whatever its size, which a shard's share of a
    1,000-line chunk (about 16 events) cannot afford, while a block of bytes
    costs what a list of tuples did at 16 events and 0.6-0.7 of it at 300.

    :ivar users: user id per event (str).
    :ivar txns: transaction id per event.
    :ivar regions: the region names the ``REGION`` row numbers (a chunk's distinct ones).
    :ivar numbers: float64, shape (4, n): ``TIME`` (event time, epoch seconds),
        ``AMOUNT`` (NaN: the event had none), ``REGION`` (index into ``regions``),
        ``WHOLE`` (1.0: the amount was an integer in the input, and alerts quote it as one).
    """

    users: list[str]
    txns: list[str]
    regions: list[str]
    numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def __reduce__(self) -> tuple:
        return (_user_columns, (self.users, self.txns, self.regions, self.numbers.tobytes()))

    def __eq__(self, other: object) -> bool:
        """Same events in the same order, amounts of the same type; for tests and references."""
        if not isinstance(other, UserColumns):
            return NotImplemented
        return [(row, type(row[2])) for row in self.rows()] == [(row, type(row[2])) for row in other.rows()]

    __hash__ = None  # type: ignore[assignment]

    @property
    def times(self) -> np.ndarray:
        return self.numbers[TIME]

    def amount(self, e: int) -> Union[int, float, None]:
        """Event ``e``'s amount as the input had it (None, an int or a float)."""
        amount = float(self.numbers[AMOUNT, e])
        if amount != amount:
            return None
        return int(amount) if self.numbers[WHOLE, e] else amount

    def region(self, e: int) -> str:
        return self.regions[int(self.numbers[REGION, e])]

    def rows(self) -> list[tuple]:
        """The events as ``(user_id, ts, amount, region, transaction_id)`` tuples (tests, references)."""
        return [
            (user, float(self.numbers[TIME, e]), self.amount(e), self.region(e), txn)
            for e, (user, txn) in enumerate(zip(self.users, self.txns, strict=True))
        ]

    @classmethod
    def of_rows(cls, events: Sequence[tuple]) -> UserColumns:
        """``(user_id, ts, amount, region, transaction_id)`` tuples as columns (tests, benchmarks, old snapshots)."""
        if not events:
            return cls([], [], [], np.zeros((4, 0)))
        users, times, amounts, regions, txns = zip(*events, strict=True)
        region_codes, names = codes(regions)
        numbers = np.empty((4, len(users)))
        numbers[TIME] = times
        numbers[AMOUNT] = np.array(amounts, dtype=np.float64)  # None -> NaN
        numbers[REGION] = region_codes
        numbers[WHOLE] = [type(amount) is int for amount in amounts]
        return cls(list(users), list(txns), names, numbers)

    def take(self, order: np.ndarray) -> UserColumns:
        """The events at ``order`` (indices), in that order."""
        picked = order.tolist()
        return UserColumns(
            list(map(self.users.__getitem__, picked)),
            list(map(self.txns.__getitem__, picked)),
            self.regions,
            self.numbers[:, order],
        )

    def cut(self, start: int, stop: int) -> UserColumns:
        """Events ``start:stop`` (a view of the numbers)."""
        return UserColumns(self.users[start:stop], self.txns[start:stop], self.regions, self.numbers[:, start:stop])

    @classmethod
    def concat(cls, blocks: Sequence[UserColumns]) -> UserColumns:
        """The blocks' events one after the other, their region numbers made one numbering."""
        if len(blocks) == 1:
            return blocks[0]
        names = list(dict.fromkeys(name for block in blocks for name in block.regions))
        numbers = np.concatenate([block.numbers for block in blocks], axis=1)
        if any(block.regions != names[: len(block.regions)] for block in blocks):
            code = {name: float(i) for i, name in enumerate(names)}
            start = 0
            for block in blocks:
                stop = start + len(block)
                renumber = np.array([code[name] for name in block.regions] or [0.0])
                numbers[REGION, start:stop] = renumber[block.numbers[REGION].astype(np.intp)]
                start = stop
        users: list[str] = []
        txns: list[str] = []
        for block in blocks:
            users += block.users
            txns += block.txns
        return cls(users, txns, names, numbers)
