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
        order of ``transactions``.
    :ivar transactions: the scored transactions as JSONL (the same bytes the
        transactions output gets).
    :ivar enrichment_keys: per valid transaction (in the order of ``valid``),
        the key of its enrichment suffix in ``enrichment_suffixes``; a list or
        a numpy array.
    :ivar enrichment_suffixes: key -> the bytes the transactions line has
        after the event's own fields (``,"category":...,"processed_at":"..."}``
        and its newline). With both, the lake reads the event's fields from
        ``lines`` and the added ones from these few suffixes instead of
        parsing the whole JSONL again; None (both optional): it reads
        ``transactions``.
    """

    part: str
    origin: str
    lines: list[bytes]
    first_position: int
    positions: Optional[list]
    received_at: float
    line_times: Union[Sequence[float], np.ndarray]
    valid: list[int]
    transactions: bytes
    enrichment_keys: Union[Sequence[int], np.ndarray, None] = None
    enrichment_suffixes: Optional[dict[int, bytes]] = None

    def position(self, index: int):
        """Source position of ``lines[index]``."""
        if self.positions is not None:
            return self.positions[index]
        return self.first_position + index
