"""Per-chunk counts that let a FAILURE_RATE incident name its contributors.

The parse step calls :meth:`DimensionCounter.count` once per chunk with the
chunk's valid events: for every field in ``rules.failure_rate.explain_by``
it returns the compact counts ``(region, hop_start, value) -> events`` and
``-> failures`` of the chunk, as two ``Counter`` objects (built in C).
``hop_start`` is the event second rounded down to ``hop_seconds``: every
sliding window starts and ends on a hop, so a window is an exact sum of hops
and the counts stay ten times smaller than per second.

The counting is per chunk, not per event: ``map(attrgetter(field))`` reads a
column of values and ``collections.Counter`` counts ``zip(keys, values)``
in C, so each field costs a few tens of nanoseconds per event (measured in
docs/performance.md). A value that is missing (``None``) is not counted; a
value that is not a string (a number, or a JSON object in a field the
producer added) is counted by its JSON-like text, so it is hashable and
reads the same in an alert.
"""

from __future__ import annotations

from collections import Counter
from itertools import compress
from operator import attrgetter, itemgetter
from typing import Any

_SCALARS = (str, int, float, bool)
_first = itemgetter(0)
_second = itemgetter(1)


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
        self, keys: list[tuple[str, int]], failed: list[bool], events: list
    ) -> dict[str, tuple[Counter, Counter]]:
        """Counts for one chunk: ``{field: (events, failures)}``, each a
        ``Counter`` keyed ``(region, hop_start, value)``.

        :arg keys: ``(region, second)`` of every valid event.
        :arg failed: whether each of those events failed.
        :arg events: the decoded events (attributes named like the fields).
        """
        if not self._getters or not keys:
            return {}
        hop = self._hop
        regions = list(map(_first, keys))
        hop_of = {second: second - second % hop for second in set(map(_second, keys))}
        hops = list(map(hop_of.__getitem__, map(_second, keys)))
        failed_regions = list(compress(regions, failed))
        failed_hops = list(compress(hops, failed))
        out: dict[str, tuple[Counter, Counter]] = {}
        for name, getter, typed in self._getters:
            values = list(map(getter, events))
            if not typed:
                values = [_text(v) for v in values]
            # Flat (region, hop, value) keys: a nested tuple's hash is recomputed on every lookup.
            seen = Counter(zip(regions, hops, values, strict=True))
            fails: Counter = Counter()
            if failed_hops:
                fails = Counter(zip(failed_regions, failed_hops, compress(values, failed), strict=True))
            out[name] = (seen, fails)
        return out
