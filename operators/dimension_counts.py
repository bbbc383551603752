"""Per-chunk counts that let a FAILURE_RATE incident name its contributors.

The parse step calls :meth:`DimensionCounter.count` once per chunk with the
chunk's valid events: for every field in ``rules.failure_rate.explain_by``
it returns the compact counts ``value -> events`` and ``value -> failures``
of each ``(region, hop_start)`` of the chunk, as ``Counter`` objects.
``hop_start`` is the event second rounded down to ``hop_seconds``: every
sliding window starts and ends on a hop, so a window is an exact sum of hops
and the counts stay ten times smaller than per second.

The counting is per chunk, not per event: ``map(attrgetter(field))`` reads a
column of values, one sort of small ints groups it by (region, hop), and
``collections.Counter`` counts each group in C, so each field costs a few
tens of nanoseconds per event (bench/dimension_counts_bench.py,
docs/performance.md). A value that is missing (``None``) is not counted; a
value that is not a string (a number, or a JSON object in a field the
producer added) is counted by its JSON-like text, so it is hashable and
reads the same in an alert.
"""

from __future__ import annotations

from collections import Counter
from itertools import compress
from operator import attrgetter
from typing import Any

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
        self._getters = [(name, attrgetter(name), name in typed_fields) for name in fields]
        self._hop = hop_seconds

    def count(
        self, region_counts: dict[tuple[str, int], list[int]], owners: list[list[int]], failed: list[bool], events: list
    ) -> dict[tuple[str, int], dict[str, tuple[Counter, Counter]]]:
        """Counts for one chunk: ``{(region, hop_start): {field: (events, failures)}}``.

        The events are grouped by (region, hop) with one sort of small ints,
        so each group's values are counted by ``Counter`` over plain strings
        (whose hashes Python caches), and the region windows can keep a hop's
        counts apart without looking at its entries.

        :arg region_counts: the chunk's ``(region, second)`` buckets.
        :arg owners: for every valid event, its bucket (a value of ``region_counts``).
        :arg failed: whether each of those events failed.
        :arg events: the decoded events (attributes named like the fields).
        """
        if not self._getters or not owners:
            return {}
        hop = self._hop
        slot_keys: list[tuple[str, int]] = []
        slot_of_key: dict[tuple[str, int], int] = {}
        slot_of_bucket: dict[int, int] = {}
        for (region, second), bucket in region_counts.items():
            key = (region, second - second % hop)
            slot = slot_of_key.get(key)
            if slot is None:
                slot = slot_of_key[key] = len(slot_keys)
                slot_keys.append(key)
            slot_of_bucket[id(bucket)] = slot
        slots = list(map(slot_of_bucket.__getitem__, map(id, owners)))
        if len(slot_keys) == 1:
            order = None
            bounds = [(0, len(slots))]
        else:
            order = sorted(range(len(slots)), key=slots.__getitem__)
            sizes = Counter(slots)
            bounds, start = [], 0
            for slot in range(len(slot_keys)):
                bounds.append((start, start + sizes[slot]))
                start += sizes[slot]
            failed = list(map(failed.__getitem__, order))
        any_failed = any(failed)
        out: dict[tuple[str, int], dict[str, tuple[Counter, Counter]]] = {key: {} for key in slot_keys}
        for name, getter, typed in self._getters:
            values = list(map(getter, events))
            if not typed:
                values = [_text(v) for v in values]
            if order is not None:
                values = list(map(values.__getitem__, order))
            for slot, (begin, end) in enumerate(bounds):
                group = values[begin:end]
                seen = Counter(group)
                fails = Counter(compress(group, failed[begin:end])) if any_failed else Counter()
                if None in seen:
                    del seen[None]
                    fails.pop(None, None)
                out[slot_keys[slot]][name] = (seen, fails)
        return out
