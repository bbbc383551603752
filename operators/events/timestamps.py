"""Event-time parsing off the hot path.

``datetime.fromisoformat`` plus ``timestamp()`` costs close to a microsecond,
as much as parsing the whole JSON event. Events of the same second share the
first 19 characters (``2025-07-09T19:03:10``) and the sub-second/zone suffixes
repeat (``.123Z``), so both halves are parsed once and cached. This module
judges a timestamp on its own (parseable, year in range); the event
contract (``operators/events/contract.py``) adds the one wall-clock rule, an event
time at most ``validation.max_future_seconds`` ahead, so last month's file
still replays.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import and_, is_, is_not, itemgetter
from typing import Optional

import numpy as np

_CACHE_LIMIT = 20_000  # per partition: 5.5 hours of distinct seconds
_SUFFIX = re.compile(r"^(?:[.,](\d{1,9}))?(?:(Z|z)|([+-])(\d{2}):?(\d{2}))$")
_prefix = itemgetter(slice(None, 19))
_suffix = itemgetter(slice(19, None))
_NUMBERS = frozenset((int, float))

# The form producers write, parsed by column in numpy: 2025-07-09T19:03:10.123Z.
_ISO_MS_LENGTHS = {24}
_PUNCTUATION_COLUMNS = np.array([4, 7, 10, 13, 16, 19, 23])
_PUNCTUATION = np.frombuffer(b"--T::.Z", dtype=np.uint8)
_DIGIT_COLUMNS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22])
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _iso_millis(values: Sequence[str]) -> Optional[np.ndarray]:
    """Epoch seconds of 24-character strings ``YYYY-MM-DDTHH:MM:SS.mmmZ``, or None if any is not one.

    The same numbers :meth:`TimestampParser.parse` gives: the prefix as
    ``calendar.timegm`` of ``datetime.fromisoformat`` (days from the civil
    date, so an impossible date such as February 30 makes the column take the
    general path), plus ``float("0.mmm")``, which is ``mmm / 1000`` correctly
    rounded, as numpy's division is.
    """
    try:
        blob = "".join(values).encode("ascii")
    except UnicodeEncodeError:
        return None
    chars = np.frombuffer(blob, dtype=np.uint8).reshape(len(values), 24)
    if not (chars[:, _PUNCTUATION_COLUMNS] == _PUNCTUATION).all():
        return None
    digits = chars[:, _DIGIT_COLUMNS].astype(np.int64) - 48
    if not ((digits >= 0) & (digits <= 9)).all():
        return None
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    hour = digits[:, 8] * 10 + digits[:, 9]
    minute = digits[:, 10] * 10 + digits[:, 11]
    second = digits[:, 12] * 10 + digits[:, 13]
    millis = digits[:, 14] * 100 + digits[:, 15] * 10 + digits[:, 16]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 0, 12)] + (leap & (month == 2))
    valid = (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    if not (valid & (hour < 24) & (minute < 60) & (second < 60)).all():
        return None
    # Days since 1970-01-01 of the civil date (H. Hinnant's days_from_civil; years from 1 on).
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    return seconds.astype(np.float64) + millis / 1000.0


class TimestampParser:
    """Parses event timestamps to float epoch seconds, or returns None.

    Accepts ISO-8601 strings with a zone (``Z`` or ``+hh:mm``) and epoch
    milliseconds (int or float). Naive ISO strings are rejected: guessing a
    zone would silently shift every window.
    """

    # prefixes/suffixes are the caches parse_many maps over a column; parse() is
    # the complete (slower) path for one value.
    __slots__ = ("prefixes", "suffixes", "min_seconds", "max_seconds", "error")

    def __init__(self, min_year: int = 2000, max_year: int = 2100) -> None:
        self.prefixes: dict[str, Optional[int]] = {}
        self.suffixes: dict[str, Optional[float]] = {}
        self.min_seconds = calendar.timegm((min_year, 1, 1, 0, 0, 0))
        self.max_seconds = calendar.timegm((max_year + 1, 1, 1, 0, 0, 0))
        self.error = ""

    def parse(self, value: object) -> Optional[float]:
        """Epoch seconds for ``value``; None with ``self.error`` set if invalid."""
        if type(value) is str:
            base = self.prefixes.get(value[:19], -1)
            if base == -1:
                base = self._parse_prefix(value[:19])
            if base is None:
                self.error = "not an ISO-8601 timestamp"
                return None
            suffix = value[19:]
            shift = self.suffixes.get(suffix)
            if shift is None:
                shift = self._parse_suffix(suffix)
                if shift is None:
                    self.error = (
                        "timestamp needs a zone (Z or +hh:mm)" if suffix == "" else "bad timestamp fraction or zone"
                    )
                    return None
            ts = base + shift
        elif type(value) is float:
            if not math.isfinite(value):
                self.error = "epoch milliseconds must be finite"
                return None
            ts = value / 1000.0
        elif type(value) is int:
            ts = value / 1000.0 if abs(value) < 2**63 else math.inf  # beyond any year; and no OverflowError
        else:
            self.error = "timestamp has the wrong type"
            return None
        if ts < self.min_seconds or ts >= self.max_seconds:
            self.error = "timestamp outside the accepted years"
            return None
        return ts

    def parse_many(self, values: Sequence) -> np.ndarray:
        """Epoch seconds of a column of timestamps (float64), NaN where :meth:`parse` says None.

        Not range-checked where both cached halves hit: it leaves the year
        range to the caller's bounds (``Contract.timestamp_bounds``), which
        judge a time outside the years as :meth:`parse` does. A column all
        in the form producers write (``2025-07-09T19:03:10.123Z``) is parsed
        in numpy at once (:func:`_iso_millis`). Another column of strings
        whose halves are both cached costs two C-level
        ``map(dict.get)`` over sliced strings and one numpy addition (``int +
        float`` in Python is the same IEEE addition). The halves the caches
        miss (a new second, a new fraction) are parsed once per distinct
        half, and the column is looked up again; a column of epoch
        milliseconds is one numpy division; only values that stay unreadable,
        and the values of a mixed column that are not strings, go through
        :meth:`parse` one by one.
        """
        try:
            lengths = set(map(len, values))
        except TypeError:  # not only strings: epoch milliseconds, null
            return self._mixed(values)
        if lengths == _ISO_MS_LENGTHS:
            times = _iso_millis(values)
            if times is not None:
                return times
        prefixes = list(map(_prefix, values))
        suffixes = list(map(_suffix, values))
        bases = list(map(self.prefixes.get, prefixes))
        shifts = list(map(self.suffixes.get, suffixes))
        if None in bases or None in shifts:
            self._learn(prefixes, bases, suffixes, shifts)
            bases = list(map(self.prefixes.get, prefixes))
            shifts = list(map(self.suffixes.get, suffixes))
            if None in bases or None in shifts:
                return self._partly(values, bases, shifts)
        return np.array(bases, dtype=np.float64) + np.array(shifts, dtype=np.float64)

    def _learn(self, prefixes: list[str], bases: list, suffixes: list[str], shifts: list) -> None:
        """Parse each distinct half the caches missed, once."""
        for prefix in set(compress(prefixes, map(is_, bases, repeat(None)))):
            if prefix not in self.prefixes:  # a prefix known to be bad is cached as None
                self._parse_prefix(prefix)
        for suffix in set(compress(suffixes, map(is_, shifts, repeat(None)))):
            self._parse_suffix(suffix)  # only good suffixes are cached

    def _partly(self, values: Sequence, bases: list, shifts: list) -> np.ndarray:
        """A column where some values are unreadable: those one by one."""
        both = list(map(and_, map(is_not, bases, repeat(None)), map(is_not, shifts, repeat(None))))
        known = np.array(both, dtype=bool)
        times = np.full(len(values), math.nan)
        times[known] = np.array(list(compress(bases, both)), dtype=np.float64) + np.array(
            list(compress(shifts, both)), dtype=np.float64
        )
        for row in np.flatnonzero(~known).tolist():
            times[row] = self._parse_or_nan(values[row])
        return times

    def _mixed(self, values: Sequence) -> np.ndarray:
        """A column that is not all strings: numbers at once, strings as a column, the rest one by one."""
        if set(map(type, values)) <= _NUMBERS:
            return self._millis(values)
        text = list(map(is_, map(type, values), repeat(str)))
        strings = np.array(text, dtype=bool)
        times = np.full(len(values), math.nan)
        if strings.any():
            times[strings] = self.parse_many(list(compress(values, text)))
        for row in np.flatnonzero(~strings).tolist():
            times[row] = self._parse_or_nan(values[row])
        return times

    def _parse_or_nan(self, value: object) -> float:
        """:meth:`parse` with the cached fast path first, NaN for None."""
        if type(value) is str:
            base = self.prefixes.get(value[:19])
            shift = self.suffixes.get(value[19:])
            if base is not None and shift is not None:
                return base + shift
        ts = self.parse(value)
        return math.nan if ts is None else ts

    def _millis(self, values: Sequence) -> np.ndarray:
        """A column of epoch milliseconds (ints within +-2^53, or floats), as :meth:`parse` reads each."""
        try:
            ts = np.array(values, dtype=np.float64) / 1000.0
        except OverflowError:  # an integer beyond any float (the struct bounds them; parse() would say inf)
            return np.fromiter(map(self._parse_or_nan, values), np.float64, len(values))
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(ts) | (ts < self.min_seconds) | (ts >= self.max_seconds)
        if bad.any():
            ts[bad] = math.nan
        return ts

    def _parse_prefix(self, prefix: str) -> Optional[int]:
        base: Optional[int]
        if len(prefix) != 19 or prefix[10] not in "Tt ":
            base = None
        else:
            try:
                parsed = datetime.fromisoformat(prefix)
                base = calendar.timegm(parsed.timetuple())
            except ValueError:
                base = None
        if len(self.prefixes) >= _CACHE_LIMIT:
            self.prefixes.clear()
        self.prefixes[prefix] = base
        return base

    def _parse_suffix(self, suffix: str) -> Optional[float]:
        match = _SUFFIX.match(suffix)
        if match is None:
            return None
        frac, _z, sign, hh, mm = match.groups()
        shift = float("0." + frac) if frac else 0.0
        if sign:
            hours, minutes = int(hh), int(mm)
            if hours > 23 or minutes > 59:
                return None
            offset = hours * 3600 + minutes * 60
            shift -= offset if sign == "+" else -offset
        if len(self.suffixes) >= _CACHE_LIMIT:
            self.suffixes.clear()
        self.suffixes[suffix] = shift
        return shift


def iso_utc(epoch_seconds: float) -> str:
    """ISO-8601 UTC with ``Z``; whole seconds print without a fraction."""
    whole = int(epoch_seconds // 1)
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = epoch_seconds - whole
    if frac > 1e-9:
        millis = int(round(frac * 1000))
        if millis >= 1000:
            return iso_utc(whole + 1)
        text += f".{millis:03d}"
    return text + "Z"
