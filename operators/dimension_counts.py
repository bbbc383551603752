"""Per-chunk counts that let a FAILURE_RATE incident name its contributors.

The parse step calls :meth:`DimensionCounter.count` once per chunk with the
chunk's valid events: for every field in ``rules.failure_rate.explain_by``
it returns the compact counts ``value -> events`` and ``value -> failures``
of each ``(region, hop_start)`` of the chunk, as ``Counter`` objects.
``hop_start`` is the event second rounded down to ``hop_seconds``: every
sliding window starts and ends on a hop, so a window is an exact sum of hops
and the counts stay ten times smaller than per second.

The counting is per chunk, not per event: the parse step hands each field as
a column of values, one stable numpy sort of the events' (region, hop) slots
(from the parse step's bucket numbers) groups it, and
``collections.Counter`` counts each group in C, so each field costs a few
tens of nanoseconds per event (bench/dimension_counts_bench.py,
docs/performance.md). A value that is missing (``None``) is not counted; a
value that is not a string (a number, or a JSON object in a field the
producer added) is counted by its JSON-like text, so it is hashable and
reads the same in an alert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import compress
from typing import Any, Optional

import numpy as np

_SCALARS = (str, int, float, bool)


def _text(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if type(value) in _SCALARS:
        return str(value).lower() if type(value) is bool else str(value)
    return repr(value)[:128]


class DimensionCounter:
    """Counts events and failures per (region, hop, field, value) for one chunk.

    :arg fields: event fields to count (``explain_by``).
    :arg hop_seconds: the sliding windows' hop.
    :arg typed_fields: fields the decoder already types as strings (no
        conversion needed).
    """

    def __init__(self, fields: list[str], hop_seconds: int, typed_fields: frozenset[str]) -> None:
        self.fields = tuple(fields)
        self._typed = [(name, name in typed_fields) for name in fields]
        self._hop = hop_seconds

    def count(
        self, buckets: list[tuple[str, int]], bucket: np.ndarray, failed: np.ndarray, columns: Mapping[str, Sequence]
    ) -> dict[tuple[str, int], dict[str, tuple[Counter, Counter]]]:
        """Counts for one chunk: ``{(region, hop_start): {field: (events, failures)}}``.

        The events are grouped by (region, hop) with one stable numpy sort of
        small ints, so each group's values are counted by ``Counter`` over
        plain strings (whose hashes Python caches), and the region windows
        can keep a hop's counts apart without looking at its entries.

        :arg buckets: the chunk's ``(region, second)`` buckets, in the order
            of the parse step's ``region_counts``.
        :arg bucket: for every valid event, the index of its bucket in ``buckets``.
        :arg failed: whether each of those events failed (bool array).
        :arg columns: each field's values, one per valid event.
        """
        if not self._typed or not len(bucket):
            return {}
        hop = self._hop
        slot_keys: list[tuple[str, int]] = []
        slot_of_key: dict[tuple[str, int], int] = {}
        slot_of_bucket: list[int] = []
        for region, second in buckets:
            key = (region, second - second % hop)
            slot = slot_of_key.get(key)
            if slot is None:
                slot = slot_of_key[key] = len(slot_keys)
                slot_keys.append(key)
            slot_of_bucket.append(slot)
        order: Optional[list[int]] = None
        if len(slot_keys) == 1:
            bounds = [(0, len(bucket))]
            fails = failed.tolist()
        else:
            slots = np.asarray(slot_of_bucket, dtype=np.int64)[bucket]
            sorted_slots = np.argsort(slots, kind="stable")
            ends = np.cumsum(np.bincount(slots, minlength=len(slot_keys))).tolist()
            bounds = list(zip([0, *ends[:-1]], ends, strict=True))
            fails = failed[sorted_slots].tolist()
            order = sorted_slots.tolist()
        any_failed = any(fails)
        out: dict[tuple[str, int], dict[str, tuple[Counter, Counter]]] = {key: {} for key in slot_keys}
        for name, typed in self._typed:
            values = columns[name]
            if not typed:
                values = [_text(v) for v in values]
            if order is not None:
                values = list(map(values.__getitem__, order))
            for slot, (begin, end) in enumerate(bounds):
                group = values[begin:end]
                seen = Counter(group)
                failures = Counter(compress(group, fails[begin:end])) if any_failed else Counter()
                if None in seen:
                    del seen[None]
                    failures.pop(None, None)
                out[slot_keys[slot]][name] = (seen, failures)
        return out
