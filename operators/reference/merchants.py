"""The merchant configuration table in memory, and its per-chunk join.

The brief's transaction system validates every payment against a merchant
table (``merchant_id``, ``name``, ``active``, ``max_transaction_amount``).
Here the table is columns indexed by an interned slot: one dict from
merchant id to slot, a ``bytes`` of status codes, an ``array('d')`` of limits
and a list of names. The last slot is a sentinel row (status ``unknown``, or
``not_loaded`` for the empty table used when no table is configured; no
limit; no name), so a miss needs no branch: the join of a chunk is one
``map(dict.get, ids, repeat(sentinel))`` call that runs in C, and the parse
loop reads the columns by slot.

The table is immutable once built: a refresh builds a new one and swaps it in
whole (operators/reference/live.py), so a chunk sees one version from start to end.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from itertools import repeat
from typing import Optional

ACTIVE = 0
INACTIVE = 1
UNKNOWN = 2
NOT_LOADED = 3
STATUS_NAMES = ("active", "inactive", "unknown", "not_loaded")

# (merchant_id, name, active, max_transaction_amount or None for no limit)
MerchantRow = tuple[str, Optional[str], bool, Optional[float]]


class MerchantTable:
    """Merchants by interned slot; see the module docstring.

    :ivar slot_of: merchant id -> slot.
    :ivar status: status code per slot (:data:`ACTIVE` / :data:`INACTIVE`),
        the sentinel slot last.
    :ivar limit: max_transaction_amount per slot (``inf`` = no limit).
    :ivar names: the merchant's name per slot (None when the table has none).
    """

    __slots__ = ("slot_of", "status", "limit", "names", "sentinel", "loaded")

    def __init__(self, rows: Iterable[MerchantRow] = (), loaded: bool = True) -> None:
        """:arg rows: the table; a repeated merchant_id keeps its last row.
        :arg loaded: False builds the table used when none is configured
            (every merchant ``not_loaded``)."""
        slot_of: dict[str, int] = {}
        status = bytearray()
        limit = array("d")
        names: list[Optional[str]] = []
        for merchant_id, name, active, max_amount in rows:
            code = ACTIVE if active else INACTIVE
            cap = math.inf if max_amount is None else float(max_amount)
            slot = slot_of.get(merchant_id)
            if slot is None:
                slot_of[merchant_id] = len(names)
                status.append(code)
                limit.append(cap)
                names.append(name or None)
            else:
                status[slot] = code
                limit[slot] = cap
                names[slot] = name or None
        self.sentinel = len(names)
        status.append(UNKNOWN if loaded else NOT_LOADED)
        limit.append(math.inf)
        names.append(None)
        self.slot_of = slot_of
        self.status = bytes(status)
        self.limit = limit
        self.names = names
        self.loaded = loaded

    def __len__(self) -> int:
        return self.sentinel

    def suspicious_names(self, words: list[str]) -> bytes:
        """Per slot (sentinel included), 1 when the name holds one of the lower-case ``words``."""
        return bytes(
            1 if name is not None and any(word in name.lower() for word in words) else 0 for name in self.names
        )

    def slots(self, merchant_ids: Iterable[Optional[str]]) -> list[int]:
        """The slot of each id (the sentinel for an absent or unknown id), in one C-level pass."""
        return list(map(self.slot_of.get, merchant_ids, repeat(self.sentinel)))  # type: ignore[arg-type]

    def status_of(self, merchant_id: Optional[str]) -> str:
        """The status name of one merchant (tests, tools; the flow joins per chunk)."""
        return STATUS_NAMES[self.status[self.slot_of.get(merchant_id, self.sentinel)]]  # type: ignore[arg-type]


NOT_CONFIGURED = MerchantTable(loaded=False)
