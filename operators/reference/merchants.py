"""The merchant configuration table in memory, and its per-chunk join.

The brief's transaction system validates every payment against a merchant
table (``merchant_id``, ``name``, ``active``, ``max_transaction_amount``).
Here the table is columns indexed by a slot, and the join of a chunk is a
handful of numpy calls, not a Python lookup per event:

- ``hash()`` of every merchant id of the chunk, in one C-level ``map``;
- a bucketed hash index over those 64-bit hashes (buckets of 8, one cache
  line each, half full on average), probed for the whole chunk in one
  vectorised gather and compare, so the cache misses of a million-entry
  table overlap instead of stalling the interpreter one event at a time (a
  ``dict`` of a million ids cost the parse step about a third of its speed;
  see docs/performance.md), and the few ids in a full bucket follow its
  overflow in a loop;
- the merchant's status/name verdict and limit gathered by slot.

Ids are matched by their 64-bit ``hash()`` (salted per process, so equal
within one); two ids of one table with the same hash would be confused, a
chance of about n^2 / 2^65 (3e-8 for a million merchants). The last slot is a
sentinel row (status ``unknown``, or ``not_loaded`` for the empty table used
when no table is configured; no limit; no name), so a miss needs no branch.

The table is immutable once built: a refresh builds a new one and swaps it in
whole (operators/reference.py), so a chunk sees one version from start to end.

Because ``hash()`` differs between processes, a table pickles its ids (one
string) and its columns, never its index: unpickling hashes the ids in the
receiving process and rebuilds the index there (a few hundred milliseconds of
C-level maps and numpy for a million ids). That is how a table read and built
in a child process (connectors/reference/child.py) arrives in the flow's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import numpy as np

ACTIVE = 0
INACTIVE = 1
UNKNOWN = 2
NOT_LOADED = 3
STATUS_NAMES = ("active", "inactive", "unknown", "not_loaded")

# (merchant_id, name, active, max_transaction_amount or None for no limit)
MerchantRow = tuple[str, Optional[str], bool, Optional[float]]

_EMPTY = -1  # CPython's hash() never returns -1
_WIDTH = 8  # hashes per bucket: one 64-byte cache line


class MerchantTable:
    """Merchants by slot; see the module docstring.

    :ivar status: status code per slot (:data:`ACTIVE` / :data:`INACTIVE`),
        the sentinel slot last (uint8).
    :ivar limit: max_transaction_amount per slot (``inf`` = no limit; float64).
    Names are kept as one string (NUL-separated, in slot order) rather than a
    million string objects: they are only read to judge them against
    ``rules.fraud.merchant_words``, once per version.
    :ivar sentinel: the slot of the sentinel row (= the number of merchants).
    """

    __slots__ = (
        "_keys",
        "_slots",
        "_mask",
        "_ids",
        "status",
        "limit",
        "_names",
        "_name_starts",
        "sentinel",
        "loaded",
    )

    def __init__(self, rows: Iterable[MerchantRow] = (), loaded: bool = True) -> None:
        """:arg rows: the table; a repeated merchant_id keeps its last row.
        :arg loaded: False builds the table used when none is configured
            (every merchant ``not_loaded``)."""
        slot_of: dict[str, int] = {}
        status: list[int] = []
        limit: list[float] = []
        names: list[Optional[str]] = []
        inf = float("inf")
        for merchant_id, name, active, max_amount in rows:
            slot = slot_of.setdefault(merchant_id, len(names))
            row = (0 if active else 1, inf if max_amount is None else float(max_amount), name or None)
            if slot == len(names):
                status.append(row[0])
                limit.append(row[1])
                names.append(row[2])
            else:
                status[slot], limit[slot], names[slot] = row
        n = len(names)
        hashes = np.fromiter(map(hash, slot_of), dtype=np.int64, count=n)
        self._ids = _pack(list(slot_of))
        del slot_of
        self.sentinel = n
        self.status = np.array([*status, UNKNOWN if loaded else NOT_LOADED], dtype=np.uint8)
        self.limit = np.array([*limit, inf], dtype=np.float64)
        texts = [name or "" for name in names]
        del names
        self._names = "\0".join(texts)
        # Where each slot's name starts in ``_names`` (the sentinel's: one past the end).
        self._name_starts = np.concatenate(([0], np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n) + 1)))
        del texts
        self.loaded = loaded
        self._build_index(hashes)

    def __getstate__(self) -> dict[str, object]:
        """Everything but the index, which holds this process's ``hash()`` values."""
        return {
            "ids": self._ids,
            "status": self.status,
            "limit": self.limit,
            "names": self._names,
            "name_starts": self._name_starts,
            "loaded": self.loaded,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        """Hash the ids in this process and rebuild the index."""
        ids = state["ids"]
        assert isinstance(ids, (str, list))
        status, limit, name_starts = state["status"], state["limit"], state["name_starts"]
        assert isinstance(status, np.ndarray) and isinstance(limit, np.ndarray) and isinstance(name_starts, np.ndarray)
        names = state["names"]
        assert isinstance(names, str)
        self._ids = ids
        self.status, self.limit, self._names, self._name_starts = status, limit, names, name_starts
        self.loaded = bool(state["loaded"])
        self.sentinel = status.size - 1
        ordered = _unpack(ids, self.sentinel)
        self._build_index(np.fromiter(map(hash, ordered), dtype=np.int64, count=self.sentinel))

    def _build_index(self, hashes: np.ndarray) -> None:
        """Buckets of :data:`_WIDTH` hashes (one cache line each), filled from the left;
        a full bucket overflows into the next one."""
        n = hashes.size
        buckets = 1 << max(2, (n // 4).bit_length())  # on average 2 to 4 of 8 places taken
        mask = buckets - 1
        keys = np.full((buckets, _WIDTH), _EMPTY, dtype=np.int64)
        slots = np.zeros((buckets, _WIDTH), dtype=np.int32)
        fill = np.zeros(buckets, dtype=np.int64)
        bucket = hashes & mask
        pending = np.arange(n)
        while pending.size:
            order = np.argsort(bucket[pending], kind="stable")
            pending = pending[order]
            at = bucket[pending]
            # Rank of each row among the pending rows of its bucket.
            starts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
            rank = np.arange(at.size) - np.repeat(starts, np.diff(np.r_[starts, at.size]))
            column = fill[at] + rank
            fits = column < _WIDTH
            keys[at[fits], column[fits]] = hashes[pending[fits]]
            slots[at[fits], column[fits]] = pending[fits]
            fill += np.bincount(at[fits], minlength=buckets)
            pending = pending[~fits]
            bucket[pending] = (at[~fits] + 1) & mask
        self._keys, self._slots, self._mask = keys, slots, mask

    def __len__(self) -> int:
        return self.sentinel

    def join(self, merchant_ids: Iterable[Optional[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The slot and the limit of each id (the sentinel's for an absent or unknown id), for a whole chunk.

        One vectorised probe of each id's bucket; the few ids whose bucket is
        full and does not hold them follow the overflow in a loop.
        """
        hashes = np.fromiter(map(hash, merchant_ids), dtype=np.int64)
        if not self.sentinel:
            return np.full(hashes.size, self.sentinel, dtype=np.int64), np.full(hashes.size, np.inf)
        keys, table_slots, mask = self._keys, self._slots, self._mask
        bucket = hashes & mask
        rows = keys[bucket]
        equal = rows == hashes[:, None]
        hit = equal.any(axis=1)
        slots = np.where(hit, table_slots[bucket, equal.argmax(axis=1)], self.sentinel)
        for i in np.flatnonzero(~hit & (rows[:, -1] != _EMPTY)).tolist():
            h, b = int(hashes[i]), (int(bucket[i]) + 1) & mask
            while True:
                row = keys[b].tolist()
                if h in row:
                    slots[i] = table_slots[b, row.index(h)]
                    break
                if row[-1] == _EMPTY:
                    break
                b = (b + 1) & mask
        return slots, self.limit[slots]

    def slots(self, merchant_ids: Iterable[Optional[str]]) -> np.ndarray:
        """The slot of each id (the sentinel for an absent or unknown id)."""
        return self.join(merchant_ids)[0]

    def status_of(self, merchant_id: Optional[str]) -> str:
        """The status name of one merchant (tests, tools; the flow joins per chunk)."""
        return STATUS_NAMES[int(self.status[self.slots([merchant_id])[0]])]

    def limit_of(self, merchant_id: Optional[str]) -> float:
        """The max_transaction_amount of one merchant (``inf`` = none)."""
        return float(self.limit[self.slots([merchant_id])[0]])

    def suspicious_names(self, words: list[str]) -> np.ndarray:
        """Per slot (sentinel included), 1 when the name holds one of the lower-case ``words``.

        One ``lower()`` of all names and a ``find`` per occurrence of each word,
        mapped to slots by the name offsets: seconds for a million names.
        """
        flags = np.zeros(self.sentinel + 1, dtype=np.uint8)
        text = self._names.lower()
        starts = self._name_starts
        if len(text) != len(self._names):  # a character whose lower case is longer: judge name by name
            bounds = starts.tolist()
            for slot in range(self.sentinel):
                lowered = self._names[bounds[slot] : bounds[slot + 1] - 1].lower()
                flags[slot] = any(word in lowered for word in words)
            return flags
        found: list[int] = []
        for word in words:
            at = text.find(word)
            while at != -1:
                found.append(at)
                at = text.find(word, at + 1)
        if found:
            flags[np.searchsorted(starts, np.array(found), side="right") - 1] = 1
        flags[self.sentinel] = 0
        return flags


def _pack(ids: list[str]) -> str | list[str]:
    """The ids in slot order as one NUL-separated string (one object to pickle, split in one
    C call), or the list itself when an id holds a NUL."""
    joined = "\0".join(ids)
    return joined if joined.count("\0") == max(len(ids) - 1, 0) else ids


def _unpack(ids: str | list[str], n: int) -> list[str]:
    if isinstance(ids, list):
        return ids
    return ids.split("\0") if n else []


NOT_CONFIGURED = MerchantTable(loaded=False)
