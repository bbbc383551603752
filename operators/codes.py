"""A column's values as small integer codes, in one C-level pass over the column.

The parse step and the dimension counts judge or count a column by its
distinct values (a currency code, a region, a device): a handful per chunk
of 20,000 events. Each pass over a column touches one Python object per
event, and in a running flow those objects are out of the cache, so what
counts is the number of passes, not the bytecode: ``dict.fromkeys`` to find
the distinct values and then ``map(dict.__getitem__)`` to code every row
touched every value twice. :func:`codes` does it once with
``dict.setdefault`` (each row gets the index of its value's first row) and
renumbers those indices with one numpy lookup.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import count

import numpy as np


def codes(values: Sequence[Hashable]) -> tuple[np.ndarray, list]:
    """Each value's code and the distinct values, numbered in order of first appearance.

    ``distinct[codes[i]] == values[i]`` for every row (values that compare
    equal, such as ``1`` and ``True``, share the first one's code, as in a
    dict).

    :arg values: hashable values (strings, None, numbers).
    :returns: ``(codes, distinct)``: an int64 array of ``len(values)`` and a list.
    :raises TypeError: a value is not hashable.
    """
    n = len(values)
    first_of: dict = {}
    first = np.fromiter(map(first_of.setdefault, values, count()), np.int64, n)
    distinct = list(first_of)
    if len(distinct) == n:
        return first, distinct  # every value distinct: its first row is itself
    renumber = np.empty(n, dtype=np.int64)
    renumber[np.fromiter(first_of.values(), np.int64, len(distinct))] = np.arange(len(distinct))
    return renumber[first], distinct
