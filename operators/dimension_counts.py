"""Per-chunk counts that let a FAILURE_RATE incident name its contributors.

The parse step calls :meth:`DimensionCounter.count` once per chunk with the
chunk's valid events: for every field in ``rules.failure_rate.explain_by``
it returns the compact counts ``value -> events`` and ``value -> failures``
of each ``(region, hop_start)`` of the chunk, as ``Counter`` objects.
``hop_start`` is the event second rounded down to ``hop_seconds``: every
sliding window starts and ends on a hop, so a window is an exact sum of hops
and the counts stay ten times smaller than per second.

The counting is per chunk, not per event: each field's values are interned
to small codes in one C-level dict pass, an event's (hop slot, value code)
is one int key, and ``np.bincount`` counts the keys (``np.minimum.at``
finds where each pair first came, to list a hop's values in event order);
only the distinct (hop, value) pairs become Python objects
(bench/dimension_counts_bench.py, docs/performance.md). A value that is
missing (``None``) is not counted; a value that is not a string (a number,
or a JSON object in a field the producer added) is counted by its JSON-like
text, so it is hashable and reads the same in an alert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from operators.codes import codes

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

        Each field's values are interned to small codes once per chunk (one
        C-level dict pass), so an event's (hop slot, value) pair is one int
        key, counted with ``np.bincount``; only the distinct pairs become
        Python objects. Each ``Counter`` lists its values in the order they
        first came in that hop (the failures' in the order they first failed),
        as counting the hop's events one by one would: the windows' cut keeps
        the first of equal counts (``Counter.most_common``).

        :arg buckets: the chunk's ``(region, second)`` buckets, in the order
            of the parse step's ``region_counts``.
        :arg bucket: for every valid event, the index of its bucket in ``buckets``.
        :arg failed: whether each of those events failed (bool array).
        :arg columns: each field's values, one per valid event.
        """
        n = len(bucket)
        if not self._typed or not n:
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
        n_slots = len(slot_keys)
        slots = np.asarray(slot_of_bucket, dtype=np.int64)[bucket] if n_slots > 1 else np.zeros(n, dtype=np.int64)
        failed_rows = np.flatnonzero(failed) if failed.any() else None
        out: dict[tuple[str, int], dict[str, tuple[Counter, Counter]]] = {key: {} for key in slot_keys}
        for name, typed in self._typed:
            values = columns[name]
            if not typed:
                values = [_text(v) for v in values]
            value_codes, distinct = codes(values)
            width = len(distinct)
            none_code = distinct.index(None) if None in distinct else -1
            keys = slots * width + value_codes
            seen = _by_slot(keys, np.arange(n), width, n_slots, none_code, distinct)
            if failed_rows is None:
                fails: list[dict] = [{}] * n_slots
            else:
                fails = _by_slot(keys[failed_rows], failed_rows, width, n_slots, none_code, distinct)
            for slot, key in enumerate(slot_keys):
                out[key][name] = (Counter(seen[slot]), Counter(fails[slot]))
        return out


def _by_slot(
    keys: np.ndarray, rows: np.ndarray, width: int, n_slots: int, none_code: int, distinct: list
) -> list[dict]:
    """Per slot, ``{value: events}`` for the events with (slot * width + value code) ``keys``, at
    ``rows``: values in the order they first came in the slot, the missing value (``none_code``) left out.
    """
    size = n_slots * width
    if size <= 4 * len(keys) + 1024:
        counts = np.bincount(keys, minlength=size)
        present = np.flatnonzero(counts)
        first = np.full(size, rows[-1] + 1 if len(rows) else 0, dtype=np.int64)
        np.minimum.at(first, keys, rows)
        firsts = first[present]
        counts = counts[present]
    else:  # many slots of many values (events far apart in time): sort instead of a sparse table
        present, index, counts = np.unique(keys, return_index=True, return_counts=True)
        firsts = rows[index]
    order = np.lexsort((firsts, present // width))
    present, counts = present[order], counts[order]
    slot_of, code_of = np.divmod(present, width)
    keep = code_of != none_code
    if not keep.all():
        slot_of, code_of, counts = slot_of[keep], code_of[keep], counts[keep]
    ends = np.searchsorted(slot_of, np.arange(1, n_slots + 1)).tolist()
    names = list(map(distinct.__getitem__, code_of.tolist()))
    tallies = counts.tolist()
    out = []
    begin = 0
    for end in ends:
        out.append(dict(zip(names[begin:end], tallies[begin:end], strict=False)))
        begin = end
    return out
