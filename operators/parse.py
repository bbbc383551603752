"""Parse, validate, enrich and pre-aggregate one chunk of raw events.

This is the only place that touches every event, so it works a column at a
time, not an event at a time: msgspec decodes the whole chunk into typed
structs (``operators/events/decoder.py``), their fields become columns, and
C-level maps and numpy expressions over the columns check what a type cannot
say, score, and build the outputs in bulk (docs/architecture.md, "Parsing by
column"); only flagged rows, rewrites and dead letters take a per-row path:

- the transactions JSONL blob, written from the raw bytes with the
  enrichment appended (no re-serialisation of the input);
- per (region, second) counts, so that the windows downstream see a few
  dozen items per chunk instead of a thousand events;
- per user-shard lists of the few fields the user-risk rules need;
- dead letters (with a machine-readable reason) and FRAUD_SUSPECTED alerts.

What a valid event is lives in ``operators/events/contract.py``; this step only
decides accept or reject, and every rejected line is explained by the
contract's slow path, so a dead letter's reason and detail are the same
whichever path found the problem. Lateness is judged here, per source
partition (``operators/events/partition_time.py``). The region windows close on the
minimum of the partitions' watermarks, so an event accepted here can never
find its window closed (see docs/architecture.md, "Event time").
"""

from __future__ import annotations

import base64
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import attrgetter, is_, is_not, itemgetter
from typing import Any, Optional, Union
from zlib import crc32

import msgspec
import numpy as np
import orjson
from msgspec import UNSET

from config.settings import Settings
from operators import alerts
from operators.codes import codes
from operators.dimension_counts import DimensionCounter
from operators.events.contract import (
    ADDED_FIELDS,
    FAIL_STATUSES,
    INVALID_JSON,
    LATE,
    STRING_FIELDS,
    SUCCESS_STATUSES,
    Contract,
    Violation,
    status_failed,
)
from operators.events.decoder import DECODE_ERRORS, EventDecoder, json_array
from operators.events.partition_time import EventTimeRule, PartitionTime
from operators.events.timestamps import TimestampParser, iso_utc
from operators.privacy import Redactor
from operators.records import AMOUNT, REGION, TIME, WHOLE, LakeChunk, RawChunk, UserColumns
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import NOT_LOADED, STATUS_NAMES
from operators.scoring import CATEGORIES, FRAUD_SUSPECTED, FraudScorer

# orjson and msgspec disagree on a line (e.g. nesting deeper than one allows).
UNDECODABLE = "the event could not be decoded"

_STATUS_CACHE_LIMIT = 10_000


_STATUS_CODES = {True: 1, False: 0, None: -1}
#: Integers from here on may not be exact as floats: their amount checks are made on the int.
_EXACT_FLOATS = 2.0**53
_before_brace = itemgetter(slice(None, -1))
_last_byte = itemgetter(-1)
_BRACE = {125}  # "}"


def _float_column(values: Sequence) -> np.ndarray:
    """Numbers (or None) as float64, None as NaN; an integer beyond any float as inf (over every limit)."""
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:
        return np.array(
            [math.inf if type(value) is int and value > _EXACT_FLOATS else value for value in values], dtype=np.float64
        )


def _head(raw: bytes) -> bytes:
    """The raw object up to its closing brace (the usual line ends with it: no search needed)."""
    return raw[:-1] if raw[-1] == 125 else raw[: raw.rindex(b"}")]


def _needs_rewrite(ev: Any, raw: bytes) -> bool:
    """The input already carries a field Paywatch adds, or a raw newline: its line is rewritten."""
    return any(getattr(ev, name) is not UNSET for name in ADDED_FIELDS) or b"\n" in _head(raw)


_NO_ROWS = np.zeros(0, dtype=np.int64)  # shared by every chunk without rows: read-only
_NO_ROWS.flags.writeable = False


def _picker(rows: list[int], whole: bool) -> Callable[[Sequence], Sequence]:
    """Selects the valid rows from a column (the column itself when every row is valid)."""
    if whole:
        return lambda column: column
    return lambda column: list(map(column.__getitem__, rows))


def _buckets(
    regions: Sequence[str], names: list[str], region_codes: np.ndarray, seconds: np.ndarray
) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Each event's (region, second) bucket, numbered in order of first appearance, and the buckets.

    Regions are interned to small codes per chunk (:func:`~operators.codes.codes`), so a
    bucket is one int64 key. The keys of a chunk span a few seconds of a few
    regions: each key's first row is found with ``np.minimum.at`` over that
    small range, with no sort of the chunk; a chunk whose seconds spread far
    (an event far ahead) is grouped by ``np.unique`` instead.
    """
    n = len(regions)
    low = int(seconds.min())
    span = int(seconds.max()) - low + 1
    keys = region_codes * span + (seconds - low)
    size = len(names) * span
    if size <= 4 * n + 64:
        first = np.full(size, n, dtype=np.int64)
        np.minimum.at(first, keys, np.arange(n))
        firsts = np.sort(first[first < n])
        number = np.empty(size, dtype=np.int64)
        number[keys[firsts]] = np.arange(firsts.size)
        bucket = number[keys]
    else:
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        firsts = first[order]
        bucket = rank[inverse.ravel()]
    keys_in_order = zip(map(regions.__getitem__, firsts.tolist()), seconds[firsts].tolist(), strict=True)
    return bucket, list(keys_in_order)


@dataclass(slots=True)
class ParsedChunk:
    """Everything the flow needs from one chunk, already grouped by consumer."""

    part: str
    n_parts: int
    done: bool
    idle: bool
    watermark: Optional[float]
    transactions: bytes = b""
    n_transactions: int = 0
    flagged: list = field(default_factory=list)
    dead_letters: list = field(default_factory=list)
    alerts: list = field(default_factory=list)
    # {(region, epoch_second): [count, failures, fraud_suspected, review_required]}
    region_counts: dict = field(default_factory=dict)
    # {(region, hop_start): {field: (events Counter, failures Counter)}} (operators/dimension_counts.py)
    dimension_counts: dict = field(default_factory=dict)
    # {shard: UserColumns}: the events with a user, per user shard, in event order
    user_events: dict = field(default_factory=dict)
    n_late: int = 0
    # Built only when the lake is on (sinks.lake.enabled).
    lake: Optional[LakeChunk] = None


def _status_table() -> dict[str, bool]:
    """Exact spellings first (the fast path); the contract's normalising check only on a miss."""
    table: dict[str, bool] = {}
    for names, failed in ((FAIL_STATUSES, True), (SUCCESS_STATUSES, False)):
        for name in names:
            for spelling in (name, name.lower(), name.capitalize()):
                table[spelling] = failed
    return table


def _as_dict(raw: bytes) -> Optional[dict]:
    """The event as a dict for the rare paths: orjson's, or msgspec's where
    orjson's limits differ (nesting depth), so that what the typed decoder
    accepted is never rejected here, whatever sinks are configured."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return msgspec.json.decode(raw)
    except DECODE_ERRORS:
        return None


def _without_enrichment(ev: dict) -> dict:
    """The input without the fields Paywatch is about to set."""
    return {k: v for k, v in ev.items() if k not in ADDED_FIELDS}


class _Rows:
    """The rows of a chunk that a check rejected, for the dead letters (line indices)."""

    __slots__ = ("dropped", "known", "late")

    def __init__(self) -> None:
        # Lines a check found invalid, for the contract's slow path to explain.
        self.dropped: list[int] = []
        # Lines a check found invalid and knows the contract's answer for.
        self.known: list[tuple[int, Violation]] = []
        # (line index, event time, horizon)
        self.late: list[tuple[int, float, float]] = []


class ChunkParser:
    """Turns a :class:`RawChunk` into a :class:`ParsedChunk`.

    Holds only settings-derived constants and caches; the partition's
    event-time state is passed in and returned so Bytewax can snapshot it.
    """

    def __init__(
        self,
        settings: Settings,
        transaction_lines: bool = True,
        redactor: Optional[Redactor] = None,
        reference: Optional[ReferenceHolder] = None,
    ) -> None:
        """:arg transaction_lines: build the scored-transactions JSONL blob
        (off when no sink consumes every transaction, e.g. DynamoDB storing
        flagged ones only: it is a quarter of the per-event work).
        :arg redactor: card masking and field redaction (default: the
        ``privacy`` settings, which need no key unless fields are hashed).
        :arg reference: the live rules and merchant table, read once per
            chunk (default: the settings' rules, no merchant table)."""
        # Redacted before decoding, so every output is built from the redacted lines.
        self._redact = (redactor if redactor is not None else Redactor(settings.privacy)).redact_array
        self._lake = settings.sinks.lake.enabled
        self._transaction_lines = transaction_lines
        # The lake reads the event's fields from the lines and the added ones from the suffixes
        # by key: it needs the keys, never the JSONL blob itself.
        self._suffix_keys = transaction_lines or self._lake
        self.contract = Contract(settings.validation)
        explain = settings.rules.failure_rate
        self._decoder = EventDecoder(self.contract, tuple(explain.explain_by))
        # The event's own fields (and the explain_by ones), each read as a column; both structs the
        # decoder yields (operators/events/decoder.py) have them. Paywatch's added fields are never read
        # by column: only the per-row rewrite check looks at them.
        self._columns: tuple[tuple[str, attrgetter], ...] = tuple(
            (name, attrgetter(name))
            for name in self.contract.event_struct(False, tuple(explain.explain_by)).__struct_fields__
            if name not in ADDED_FIELDS
        )
        self._dimensions = DimensionCounter(explain.explain_by, explain.hop_seconds, STRING_FIELDS)
        self._timestamps = TimestampParser(*self.contract.years)
        self._event_time = EventTimeRule(settings.windows)
        self._scorer = FraudScorer(settings.rules.fraud, settings.enrichment)
        self._shards = settings.users.shards
        self._statuses = _status_table()
        self._suffixes: dict[int, bytes] = {}
        self._enrichment = settings.enrichment
        self._reference = reference or ReferenceHolder(LiveReference.of(settings.rules))
        self._live: Optional[LiveReference] = None
        self._named_points = np.zeros(8, dtype=np.int64)
        self._anonymous_points = np.zeros(8, dtype=np.int64)
        self._version_field = ""
        self._use(self._reference.current)

    def _use(self, live: LiveReference) -> None:
        """Take a new version of the rules and merchant table (at a chunk boundary)."""
        self._live = live
        fraud = live.rules.fraud
        self._scorer = FraudScorer(fraud, self._enrichment)
        # Points per merchant variant (LiveReference.variants): status code
        # (active, inactive, unknown, not_loaded) + 4 when the table's name is
        # suspicious, which counts only for an event without a name of its own.
        by_status = (0, fraud.inactive_merchant_points, fraud.unknown_merchant_points, 0)
        self._named_points = np.array(by_status * 2, dtype=np.int64)
        self._anonymous_points = np.array(
            by_status + tuple(points + fraud.merchant_points for points in by_status), dtype=np.int64
        )
        self._version_field = f',"rules_version":"{live.version}"'

    def for_partition(self) -> ChunkParser:
        """A parser for one more source partition of this process.

        It shares the caches that grow with the data (merchant verdicts,
        status spellings), so a process reading many partitions holds them
        once; what changes within a chunk (enrichment suffixes, the
        timestamp parser's last error) stays its own, because partitions are
        parsed by different worker threads. The shared dicts are only read and
        written whole-entry, which the GIL keeps consistent.
        """
        parser = copy.copy(self)
        parser._suffixes = {}
        parser._timestamps = TimestampParser(*self.contract.years)
        return parser

    # -- one chunk -----------------------------------------------------------

    def parse(self, state: Union[PartitionTime, float, None], chunk: RawChunk) -> tuple[PartitionTime, ParsedChunk]:
        """Parse one chunk.

        :arg state: the partition's event-time state (see
            ``operators/events/partition_time.py``), None before its first chunk.
        :returns: the new state and the parsed chunk.
        """
        live = self._reference.current
        if live is not self._live:
            self._use(live)
        now = time.time()
        lines, array = self._redact(chunk.lines)
        if array is None and self._lake and lines:
            array = json_array(lines)  # the decoder would build it anyway; the lake keeps it as its line buffer
        events, indices, rejected, plain = self._decoder.decode(lines, array)
        out = ParsedChunk(chunk.part, chunk.n_parts, chunk.done, chunk.idle, None)
        rows = _Rows()
        lake_times = np.full(len(lines), math.nan) if self._lake else None
        clock, valid_lines, suffix_keys = self._scan(
            PartitionTime.restore(state), lines, events, indices, plain, now, out, rows, lake_times, live
        )
        out.watermark = clock.watermark(self._event_time.lateness)
        out.n_late = len(rows.late)
        if rejected or rows.dropped or rows.known or rows.late:
            out.dead_letters = self._dead_letters(chunk, lines, now, rejected, rows.dropped, rows.known, rows.late)
        if lake_times is not None:
            out.lake = LakeChunk(
                chunk.part,
                chunk.origin,
                lines,
                chunk.first_position,
                chunk.positions,
                now,
                lake_times,  # arrays, not lists: the lake works on them with numpy
                valid_lines,
                out.transactions,
                _NO_ROWS if suffix_keys is None else suffix_keys,
                dict(self._suffixes),
                array,
            )
        return clock, out

    def _scan(
        self,
        clock: PartitionTime,
        lines: list[bytes],
        events: list,
        indices: Optional[list[int]],
        plain: bool,
        now: float,
        out: ParsedChunk,
        rows: _Rows,
        lake_times: Optional[np.ndarray],
        live: LiveReference,
    ) -> tuple[PartitionTime, np.ndarray, Optional[np.ndarray]]:
        """Accept or reject, score, count and write a chunk's events, a column at a time.

        Each field is read as a column (one getter mapped over the structs,
        in C), checked and scored with numpy or a per-chunk dict of its
        distinct values; the
        checks are the contract's, made in the order the per-event reference
        (``tests/support/parse_reference.py``) makes them, so that a row fails
        the same first check there and here. Rejected rows are only noted and
        explained afterwards by the contract: by its slow path
        (``rows.dropped``), or, where the check already knows the first
        broken rule (future, amount, merchant_name), by the contract's answer
        for that rule (``rows.known``). Rows that need the event as a dict
        (flagged ones, inputs that carry an added field) take a per-row path.

        :returns: the partition's new event-time state, the line index of
            every valid event, in order, and each one's enrichment suffix key
            (None when neither the transactions JSONL nor the lake needs them).
        """
        self._suffixes.clear()  # they end with this chunk's processed_at
        n = len(events)
        if n == 0:
            return clock, _NO_ROWS, None
        line_of = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        contract = self.contract
        scorer = self._scorer
        rules = scorer.rules

        # Event time: unreadable (NaN), outside the years, or too far ahead of the wall clock.
        # Every field as a column: one C-level pass of its getter over the structs. (Transposing
        # every struct as a tuple costs 1.4x that at 1,000-line chunks and 3.3x at 20,000, where
        # 17 tuples of 20,000 no longer stay in the cache.)
        column = {name: list(map(get, events)) for name, get in self._columns}
        times = self._timestamps.parse_many(column["timestamp"])
        ts_lo, ts_hi = contract.timestamp_bounds(now)
        with np.errstate(invalid="ignore"):
            ok = (times >= ts_lo) & (times <= ts_hi)
        if lake_times is not None:
            lake_times[line_of[ok]] = times[ok]
        alive = ok
        if not ok.all():
            with np.errstate(invalid="ignore"):
                future = ~ok & (times >= ts_lo) & (times <= contract.latest_timestamp)
            self._reject(rows, line_of, ~ok & ~future)
            for row in np.flatnonzero(future).tolist():
                value = column["timestamp"][row]
                rows.known.append((int(line_of[row]), contract.future_violation(value, float(times[row]), now)))

        # Status spellings, then alphabetic currency codes (their points are judged with them).
        failed = self._failures(column["payment_status"])
        currencies = column["currency"]
        currency_points = self._currency_points(currencies)
        alive = self._check(rows, line_of, alive, (failed >= 0) & (currency_points >= 0))

        # Amounts: over the contract's maximum is known; None is NaN, which no rule matches.
        amounts = column["amount"]
        amount = _float_column(amounts)
        over_max = amount > contract.max_amount
        for row in np.flatnonzero(amount >= _EXACT_FLOATS).tolist():
            over_max[row] = amounts[row] > contract.max_amount  # exactly, for an integer beyond a float's
        for row in np.flatnonzero(alive & over_max).tolist():
            rows.known.append((int(line_of[row]), contract.amount_violation(amounts[row])))
        alive &= ~over_max

        # Merchant names: 0 none, 1 fine, 2 suspicious, 3 too long (a name the verdict cache misses).
        names = column["merchant_name"]
        verdicts = self._merchant_verdicts(names)
        for row in np.flatnonzero(alive & (verdicts == 3)).tolist():
            rows.known.append((int(line_of[row]), contract.text_violation("merchant_name", names[row])))
        alive &= verdicts != 3

        # FraudScorer.score and .category, by column (tests/rules/test_scoring.py compares them).
        merchants = live.merchants
        if merchants.loaded:
            slots, limits = merchants.join(column["merchant_id"])
            variants = live.variants[slots].astype(np.int64)
        else:
            variants, limits = np.full(n, NOT_LOADED, dtype=np.int64), np.full(n, math.inf)
        has_name = verdicts > 0
        score = np.where(has_name, self._named_points[variants], self._anonymous_points[variants])
        over = amount > limits
        score += over * rules.over_limit_points
        score += (amount > rules.high_amount) * rules.high_amount_points
        with np.errstate(invalid="ignore"):
            round_amount = (amount > 0) & (np.fmod(amount, rules.round_amount) == 0)
        score += round_amount * rules.round_amount_points
        score += np.maximum(currency_points, 0)
        score += (verdicts == 2) * rules.merchant_points
        category = np.where(amount >= scorer.high_value, 0, np.where(amount >= scorer.medium_value, 1, 2))
        flagged = score >= scorer.review_score

        # The transaction lines: the raw object up to its closing brace, or a rewrite.
        transaction_lines = self._transaction_lines
        heads: dict[int, bytes] = {}  # rewritten heads, by row
        records: dict[int, dict] = {}  # the event as a dict, by row, where a rare path needs it
        rewrites = set(self._rewrites(lines, events, line_of, alive)) if transaction_lines and not plain else set()
        for row in sorted(rewrites.union(np.flatnonzero(alive & flagged).tolist())):
            record = _as_dict(lines[line_of[row]])
            if record is None:
                rows.dropped.append(int(line_of[row]))
                alive[row] = False
                continue
            records[row] = record
            if row in rewrites:
                heads[row] = orjson.dumps(_without_enrichment(record))[:-1]

        # Event time: late against the partition's high mark, which the accepted events move.
        accepted = np.flatnonzero(alive)
        clock, late, horizons = self._event_time.observe_many(clock, times[accepted])
        if late.any():
            for row, ts, horizon in zip(
                accepted[late].tolist(), times[accepted[late]].tolist(), horizons[late].tolist(), strict=True
            ):
                rows.late.append((int(line_of[row]), ts, horizon))
            accepted = accepted[~late]
        if not accepted.size:
            return clock, _NO_ROWS, None
        valid = accepted.tolist()
        valid_lines = line_of[accepted].tolist()

        processed_tail = (datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + 'Z"}\n').encode()
        merchant = variants & 3
        suffix_keys = None
        if self._suffix_keys:
            suffix_keys = (score * 24 + category * 8 + merchant * 2 + over)[accepted]
            if transaction_lines:
                out.transactions = self._transactions(lines, valid_lines, valid, heads, suffix_keys, processed_tail)
            else:
                for key in dict.fromkeys(suffix_keys.tolist()):
                    self._enrichment_suffix(key, processed_tail)
        out.n_transactions = len(valid)

        # The (region, second) counts, with the failures and flags of each.
        whole = len(valid) == n
        pick = _picker(valid, whole)
        regions = pick(column["region"])
        valid_times = times[accepted]
        seconds = valid_times.astype(np.int64)
        suspected = flagged[accepted] & (score[accepted] >= scorer.suspected_score)
        region_codes, region_names = codes(regions)
        bucket, bucket_keys = _buckets(regions, region_names, region_codes, seconds)
        size = len(bucket_keys)
        valid_failed = failed[accepted] == 1
        columns = (
            np.bincount(bucket, minlength=size),
            np.bincount(bucket, weights=valid_failed, minlength=size).astype(np.int64),
            np.bincount(bucket, weights=suspected, minlength=size).astype(np.int64),
            np.bincount(bucket, weights=flagged[accepted] & ~suspected, minlength=size).astype(np.int64),
        )
        out.region_counts = dict(
            zip(bucket_keys, map(list, zip(*(c.tolist() for c in columns), strict=True)), strict=True)
        )
        if self._dimensions.fields:
            dimensions = {name: pick(column[name]) for name in self._dimensions.fields}
            out.dimension_counts = self._dimensions.count(bucket_keys, bucket, valid_failed, dimensions)

        # The user rules' columns, per shard; flagged rows and their alerts, per row.
        user_ids = pick(column["user_id"])
        transaction_ids = pick(column["transaction_id"])
        numbers = np.empty((4, len(valid)))
        numbers[TIME] = valid_times
        numbers[AMOUNT] = amount[accepted]
        numbers[REGION] = region_codes
        numbers[WHOLE] = 0.0
        # An amount the input wrote as an integer is quoted as one by the alerts: only whole amounts can be.
        whole_amounts = np.flatnonzero(numbers[AMOUNT] == np.trunc(numbers[AMOUNT]))
        if whole_amounts.size:
            written = map(amounts.__getitem__, map(valid.__getitem__, whole_amounts.tolist()))
            integers = np.fromiter(map(is_, map(type, written), repeat(int)), bool, whole_amounts.size)
            numbers[WHOLE, whole_amounts[integers]] = 1.0
        self._user_events(out, user_ids, transaction_ids, region_names, numbers)
        if flagged[accepted].any():
            time_list = valid_times.tolist()
            for k in np.flatnonzero(flagged[accepted]).tolist():
                row = valid[k]
                user_id = user_ids[k]
                self._flag(
                    out,
                    records[row],
                    transaction_ids[k],
                    time_list[k],
                    regions[k],
                    str(user_id) if type(user_id) is int else user_id,
                    int(score[row]),
                    int(category[row]),
                    int(merchant[row]),
                    int(over[row]),
                    processed_tail,
                )
        return clock, line_of[accepted], suffix_keys

    # -- the columns ---------------------------------------------------------

    @staticmethod
    def _reject(rows: _Rows, line_of: np.ndarray, mask: np.ndarray) -> None:
        """Rows for the contract's slow path to explain."""
        if mask.any():
            rows.dropped += line_of[mask].tolist()

    def _check(self, rows: _Rows, line_of: np.ndarray, alive: np.ndarray, passed: np.ndarray) -> np.ndarray:
        """``alive`` narrowed to the rows that pass; the others it held go to the slow path."""
        self._reject(rows, line_of, alive & ~passed)
        return alive & passed

    def _failures(self, statuses: Sequence) -> np.ndarray:
        """1 for a failure spelling, 0 for a success one, -1 for anything else, per row."""
        failed = list(map(self._statuses.get, statuses))
        if None in failed:  # a spelling not seen yet, or none at all: judged once per distinct value
            missed = {
                status: self._status_is_failure(status)
                for status in set(compress(statuses, map(is_, failed, repeat(None))))
            }
            failed = list(map({**self._statuses, **missed}.get, statuses))
        return np.fromiter(map(_STATUS_CODES.__getitem__, failed), np.int8, len(failed))

    def _currency_points(self, currencies: Sequence) -> np.ndarray:
        """The currency rule's points per row (0 for none), -1 for a code that is not alphabetic."""
        scorer = self._scorer
        known, points = scorer.currencies, scorer.rules.currency_points
        rows, distinct = codes(currencies)
        verdicts = [
            0 if code is None else -1 if not code.isalpha() else 0 if code in known or code.upper() in known else points
            for code in distinct
        ]
        return np.array(verdicts, dtype=np.int64)[rows]

    def _merchant_verdicts(self, names: Sequence) -> np.ndarray:
        """Per row: 0 no name, 1 a name, 2 a suspicious name, 3 a name over the contract's length.

        Judged once per distinct name of the chunk; the verdict cache holds
        checked names only, so a name it holds needs no length check.
        """
        scorer = self._scorer
        hits, max_name = scorer.merchant_hits, self.contract.max_name_length
        rows, distinct = codes(names)
        verdicts: list[int] = []
        for name in distinct:
            if not name:
                verdicts.append(0)
                continue
            hit = hits.get(name)
            if hit is None:
                if len(name) > max_name:
                    verdicts.append(3)
                    continue
                hit = scorer.merchant_is_suspicious(name)
            verdicts.append(2 if hit else 1)
        return np.array(verdicts, dtype=np.int8)[rows]

    @staticmethod
    def _rewrites(lines: list[bytes], events: list, line_of: np.ndarray, alive: np.ndarray) -> list[int]:
        """Rows of a chunk that is not plain whose line must be rewritten before it is enriched."""
        return [row for row in np.flatnonzero(alive).tolist() if _needs_rewrite(events[row], lines[line_of[row]])]

    def _transactions(
        self,
        lines: list[bytes],
        valid_lines: list[int],
        valid: list[int],
        rewritten: dict[int, bytes],
        keys: np.ndarray,
        processed_tail: bytes,
    ) -> bytes:
        """The JSONL of the valid events: each raw object up to its brace, then its suffix."""
        suffixes = self._suffixes
        key_list = keys.tolist()
        for key in dict.fromkeys(key_list):
            self._enrichment_suffix(key, processed_tail)
        raws = lines if len(valid_lines) == len(lines) else list(map(lines.__getitem__, valid_lines))
        if set(map(_last_byte, raws)) == _BRACE:
            heads = list(map(_before_brace, raws))
        else:
            heads = list(map(_head, raws))
        if rewritten:
            position = {row: k for k, row in enumerate(valid)}
            for row, head in rewritten.items():
                k = position.get(row)
                if k is not None:
                    heads[k] = head
        parts: list[bytes] = [b""] * (2 * len(heads))
        parts[::2] = heads
        parts[1::2] = map(suffixes.__getitem__, key_list)
        return b"".join(parts)

    def _user_events(
        self,
        out: ParsedChunk,
        user_ids: Sequence,
        txns: Sequence,
        regions: list[str],
        numbers: np.ndarray,
    ) -> None:
        """The events with a user as :class:`UserColumns` per shard, in event order.

        The split is one stable argsort of the shard numbers: each column is
        gathered once in shard order (one C-level ``map`` for a list, one fancy
        index for the numbers) and every shard takes a slice of it.
        """
        kinds = set(map(type, user_ids))
        if int in kinds:
            user_ids = [str(user_id) if type(user_id) is int else user_id for user_id in user_ids]
        if type(None) in kinds:  # events without a user go to no shard (-1)
            shards = np.full(len(user_ids), -1, dtype=np.int64)
            named = list(compress(range(len(user_ids)), map(is_not, user_ids, repeat(None))))
            if named:
                shards[named] = self._shards_of(list(map(user_ids.__getitem__, named)))
        else:
            shards = self._shards_of(user_ids)
        order = np.argsort(shards, kind="stable")
        sizes = np.bincount(shards + 1, minlength=self._shards + 1).tolist()
        order = order[sizes[0] :]  # without the events with no user (shard -1)
        picked = order.tolist()
        users = list(map(user_ids.__getitem__, picked))
        txn_list = list(map(txns.__getitem__, picked))
        block = numbers[:, order]
        start = 0
        for shard, size in enumerate(sizes[1:]):
            if size:
                stop = start + size
                out.user_events[shard] = UserColumns(
                    users[start:stop], txn_list[start:stop], regions, block[:, start:stop]
                )
                start = stop

    # -- helpers kept off the hot path -------------------------------------

    def _status_is_failure(self, status: object) -> Optional[bool]:
        failed = status_failed(status)
        if failed is not None and len(self._statuses) < _STATUS_CACHE_LIMIT:
            self._statuses[status] = failed  # type: ignore[index]
        return failed

    def _enrichment_suffix(self, key: int, processed_tail: bytes) -> bytes:
        """The bytes that close a raw event, cached per (score, category, merchant status,
        over limit) for one chunk; ``key`` is ``score * 24 + category * 8 + status * 2 + over``."""
        score, rest = divmod(key, 24)
        category, rest = divmod(rest, 8)
        merchant, over = divmod(rest, 2)
        status = self._scorer.status(score)
        suffix = (
            f',"category":"{CATEGORIES[category]}","fraud_score":{score},"fraud_status":"{status}",'
            f'"merchant_status":"{STATUS_NAMES[merchant]}","over_merchant_limit":{"true" if over else "false"}'
            f'{self._version_field},"processed_at":"'
        ).encode()
        suffix += processed_tail
        self._suffixes[key] = suffix
        return suffix

    def _shards_of(self, user_ids: Sequence[str]) -> np.ndarray:
        """Each user's shard, ``crc32(user_id.encode()) % users.shards``, by two C-level maps.

        Computed, not cached: under the cache pressure of a whole flow a dict of every
        user seen cost about 240 ns a lookup (a miss on the entry and on the stored key),
        the CRC of the fresh id string about 90 ns.
        """
        return np.fromiter(map(crc32, map(str.encode, user_ids)), np.int64, len(user_ids)) % self._shards

    def _flag(
        self,
        out: ParsedChunk,
        record: dict,
        txn: str,
        ts: float,
        region: str,
        user_id: Optional[str],
        fraud_score: int,
        category: int,
        merchant: int,
        over: int,
        processed_tail: bytes,
    ) -> None:
        """A REVIEW_REQUIRED or FRAUD_SUSPECTED event (counted by column): keep it, alert on suspicion."""
        merchant_status = STATUS_NAMES[merchant]
        if self._scorer.status(fraud_score) == FRAUD_SUSPECTED:
            out.alerts.append(self._fraud_alert(record, txn, ts, region, user_id, fraud_score, merchant_status))
        out.flagged.append(
            self._enriched(record, CATEGORIES[category], fraud_score, processed_tail, merchant_status, over)
        )

    # -- dead letters --------------------------------------------------------

    @staticmethod
    def dead_letter(
        chunk: RawChunk, index: int, raw: bytes, reason: str, field_name: Optional[str], detail: str
    ) -> dict[str, Any]:
        """A dead-letter record that keeps the raw payload losslessly."""
        record: dict[str, Any] = {
            "reason": reason,
            "field": field_name,
            "detail": detail,
            "source": chunk.origin,
            "position": chunk.position(index),
        }
        raw = raw.rstrip(b"\r\n")
        try:
            record["raw"] = raw.decode()
        except UnicodeDecodeError:
            record["raw"] = raw.decode(errors="replace")
            record["raw_base64"] = base64.b64encode(raw).decode()
        return record

    def _dead_letters(
        self,
        chunk: RawChunk,
        lines: list[bytes],
        now: float,
        rejected: list[int],
        dropped: list[int],
        known: list[tuple[int, Violation]],
        late: list[tuple[int, float, float]],
    ) -> list[dict[str, Any]]:
        """The chunk's dead letters in line order (``lines`` as parsed: after redaction)."""
        letters: list[tuple[int, Optional[dict[str, Any]]]] = [
            (index, self._rejected(chunk, index, lines[index], now)) for index in (*rejected, *dropped)
        ]
        for index, violation in known:
            letters.append((index, self.dead_letter(chunk, index, lines[index], *violation)))
        for index, ts, horizon in late:
            detail = f"event time {iso_utc(ts)} is behind the watermark {iso_utc(horizon)}"
            letters.append((index, self.dead_letter(chunk, index, lines[index], LATE, "timestamp", detail)))
        if len(letters) > 1:
            letters.sort(key=itemgetter(0))
        return [letter for _, letter in letters if letter is not None]

    def _rejected(self, chunk: RawChunk, index: int, raw: bytes, now: float) -> Optional[dict[str, Any]]:
        """The dead letter for a line the fast path rejected, or None for a blank line that is no message.

        The contract says why, in the order a person would fix it, with the
        same reason and wording whatever the line's neighbours were.
        """
        if chunk.skip_blank and not raw.strip():
            return None
        violation = self.contract.line_violation(raw, now, self._timestamps)
        if violation is None:
            # The fast and slow decoders disagree (e.g. nesting deeper than msgspec's limit).
            violation = (INVALID_JSON, None, UNDECODABLE)
        return self.dead_letter(chunk, index, raw, *violation)

    # -- rare paths ----------------------------------------------------------

    def _enriched(
        self, ev: dict, category: str, fraud_score: int, processed_tail: bytes, merchant_status: str, over: int
    ) -> dict:
        record = _without_enrichment(ev)
        record["category"] = category
        record["fraud_score"] = fraud_score
        record["fraud_status"] = self._scorer.status(fraud_score)
        record["merchant_status"] = merchant_status
        record["over_merchant_limit"] = bool(over)
        record["rules_version"] = self._live.version if self._live else ""
        record["processed_at"] = processed_tail[:-3].decode()
        return record

    def _fraud_alert(
        self, ev: dict, txn: str, ts: float, region: str, user_id: Optional[str], fraud_score: int, merchant_status: str
    ) -> dict:
        alert = alerts.make_alert(
            alerts.FRAUD_SUSPECTED,
            alerts.OPEN,
            key=txn,
            incident_id=f"{alerts.FRAUD_SUSPECTED}:{txn}",
            event_time=ts,
            value=float(fraud_score),
            threshold=float(self._scorer.suspected_score),
            message=(
                f"transaction {txn} scored {fraud_score} (amount {ev.get('amount')} {ev.get('currency') or ''}, "
                f"merchant {ev.get('merchant_name')!r})"
            ),
            region=region,
            user_id=user_id,
            transaction_id=txn,
            details={
                "amount": ev.get("amount"),
                "currency": ev.get("currency"),
                "merchant_id": ev.get("merchant_id"),
                "merchant_name": ev.get("merchant_name"),
                "merchant_status": merchant_status,
            },
        )
        alert["rules_version"] = self._live.version if self._live else ""
        return alert
