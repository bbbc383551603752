"""The parse step as it was before the columnar rewrite: the per-event ``_scan`` loop.

Kept as it was (with the per-event ``DimensionCounter`` of that time; the
per-row paths the rewrite left unchanged, dead letters and alerts, are
production's own, bound in the class) as the reference that ``tests/rules/test_parse_columns.py`` compares the columnar
``operators/parse.py`` with, byte for byte, on chunks mixing clean lines with
every kind of bad line; ``bench/parse_bench.py`` times both in one run.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import attrgetter
from typing import Any, Optional, Union
from zlib import crc32

import orjson
from msgspec import UNSET

from config.settings import Settings
from operators.dimension_counts import _text
from operators.events.contract import (
    STRING_FIELDS,
    Contract,
    Violation,
)
from operators.events.decoder import EventDecoder
from operators.events.partition_time import EventTimeRule, PartitionTime
from operators.events.timestamps import TimestampParser
from operators.parse import ChunkParser as _Production
from operators.parse import ParsedChunk, _as_dict, _status_table, _without_enrichment
from operators.privacy import Redactor
from operators.records import LakeChunk, RawChunk, UserColumns
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import NOT_LOADED, STATUS_NAMES
from operators.scoring import CATEGORIES, FRAUD_SUSPECTED, REVIEW_REQUIRED, FraudScorer


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


_merchant_id = attrgetter("merchant_id")


class _Hooks:
    """Per-event lists that only some configurations need (None when off)."""

    __slots__ = ("lake_times", "lake_valid", "lake_keys", "event_keys", "event_failed", "valid_events")

    def __init__(self, n_lines: int, lake: bool, dimensions: bool) -> None:
        # The lake: every line's event time (NaN where it could not be read) and the valid lines.
        self.lake_times: Optional[list[float]] = [math.nan] * n_lines if lake else None
        self.lake_valid: list[int] = []
        # ... and each valid line's enrichment suffix key (LakeChunk.enrichment_keys).
        self.lake_keys: Optional[list[int]] = [] if lake else None
        # The dimension counts: for every valid event, its (region, second) counts list
        # (which names its bucket without hashing a key again), failed, and the event.
        self.event_keys: Optional[list[list[int]]] = [] if dimensions else None
        self.event_failed: list[bool] = []
        self.valid_events: list[Any] = []


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
        self._transaction_lines = transaction_lines  # the lake needs the suffix keys, not the JSONL
        self.contract = Contract(settings.validation)
        explain = settings.rules.failure_rate
        self._decoder = EventDecoder(self.contract, tuple(explain.explain_by))
        self._dimensions = DimensionCounter(explain.explain_by, explain.hop_seconds, STRING_FIELDS)
        self._timestamps = TimestampParser(*self.contract.years)
        self._event_time = EventTimeRule(settings.windows)
        self._scorer = FraudScorer(settings.rules.fraud, settings.enrichment)
        self._shards = settings.users.shards
        self._shard_of: dict[str, int] = {}
        self._statuses = _status_table()
        self._suffixes: dict[int, bytes] = {}
        self._enrichment = settings.enrichment
        self._reference = reference or ReferenceHolder(LiveReference.of(settings.rules))
        self._live: Optional[LiveReference] = None
        self._named_points: tuple[int, ...] = ()
        self._anonymous_points: tuple[int, ...] = ()
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
        self._named_points = by_status * 2
        self._anonymous_points = by_status + tuple(points + fraud.merchant_points for points in by_status)
        self._version_field = f',"rules_version":"{live.version}"'

    def for_partition(self) -> ChunkParser:
        """A parser for one more source partition of this process.

        It shares the caches that grow with the data (user -> shard,
        merchant verdicts, status spellings), so a process reading many partitions holds them
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
        events, indices, rejected, plain = self._decoder.decode(lines, array)
        out = ParsedChunk(chunk.part, chunk.n_parts, chunk.done, chunk.idle, None)
        dropped: list[int] = []  # lines the loop found invalid, for the contract's slow path to explain
        known: list[tuple[int, Violation]] = []  # lines the loop found invalid and knows why
        late: list[tuple[int, float, float]] = []  # (line index, event time, horizon)
        hooks = _Hooks(len(lines), self._lake, bool(self._dimensions.fields))
        clock = self._scan(
            PartitionTime.restore(state),
            lines,
            events,
            range(len(lines)) if indices is None else indices,
            plain,
            now,
            out,
            dropped,
            known,
            late,
            hooks,
            live,
        )
        out.watermark = clock.watermark(self._event_time.lateness)
        out.n_late = len(late)
        if rejected or dropped or known or late:
            out.dead_letters = self._dead_letters(chunk, lines, now, rejected, dropped, known, late)
        if hooks.event_keys is not None:
            out.dimension_counts = self._dimensions.count(
                out.region_counts, hooks.event_keys, hooks.event_failed, hooks.valid_events
            )
        if hooks.lake_times is not None:
            out.lake = LakeChunk(
                chunk.part,
                chunk.origin,
                lines,
                chunk.first_position,
                chunk.positions,
                now,
                hooks.lake_times,
                hooks.lake_valid,
                out.transactions,
                hooks.lake_keys,
                dict(self._suffixes),
            )
        return clock, out

    def _scan(
        self,
        clock: PartitionTime,
        lines: list[bytes],
        events: list,
        indices: Any,
        plain: bool,
        now: float,
        out: ParsedChunk,
        dropped: list[int],
        known: list[tuple[int, Violation]],
        late: list[tuple[int, float, float]],
        hooks: _Hooks,
        live: LiveReference,
    ) -> PartitionTime:
        """The per-event loop: accept or reject, score, count, write.

        It inlines the cached fast paths of timestamp parsing, scoring
        (:meth:`FraudScorer.score`, with the merchant table joined per chunk),
        the partition's high mark
        (:meth:`EventTimeRule.observe`) and the shard lookup: at well under
        a microsecond per event for decoding, a Python call (~0.1 us) per
        helper would be a visible share of the budget. Every rare case calls
        out. Rejected lines are only noted here and explained after the loop
        by the contract: by its slow path (``dropped``), or, where the loop
        already knows the first broken rule (future, amount, merchant_name),
        by the contract's answer for that rule (``known``).
        """
        timestamps = self._timestamps
        parse_ts = timestamps.parse
        ts_prefixes, ts_suffixes = timestamps.prefixes, timestamps.suffixes
        ts_lo, ts_hi = self.contract.timestamp_bounds(now)
        statuses = self._statuses
        scorer = self._scorer
        rules = scorer.rules
        high_amount, high_points = rules.high_amount, rules.high_amount_points
        round_amount, round_points = rules.round_amount, rules.round_amount_points
        currencies, currency_points = scorer.currencies, rules.currency_points
        merchant_hits, merchant_points = scorer.merchant_hits, rules.merchant_points
        high_value, medium_value = scorer.high_value, scorer.medium_value
        contract = self.contract
        max_amount, max_name = contract.max_amount, contract.max_name_length
        ts_latest = contract.latest_timestamp
        flag_score = scorer.review_score
        suffixes = self._suffixes
        suffixes.clear()  # they end with this chunk's processed_at
        shard_of = self._shard_of
        event_time = self._event_time
        lateness = event_time.lateness
        max_skew = event_time.max_skew
        high, ahead, ahead_min = clock
        horizon = high - lateness
        skew_limit = event_time.skew_limit(high)
        unset = UNSET
        transaction_lines = self._transaction_lines
        lake_times = hooks.lake_times
        lake_valid = hooks.lake_valid if lake_times is not None else None
        lake_keys = hooks.lake_keys
        event_keys, event_failed, valid_events = hooks.event_keys, hooks.event_failed, hooks.valid_events

        # The merchant join, per chunk (operators/reference/merchants.py): slots, then columns.
        merchants = live.merchants
        variants: Iterable[int]
        limits: Iterable[float]
        if merchants.loaded:
            slots, limit_column = merchants.join(map(_merchant_id, events))
            variants = live.variants[slots].tolist()
            limits = limit_column.tolist()
        else:
            variants, limits = repeat(NOT_LOADED), repeat(math.inf)
        named_points, anonymous_points = self._named_points, self._anonymous_points
        over_points = rules.over_limit_points

        processed_tail = (datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + 'Z"}\n').encode()
        out_lines: list[bytes] = []
        append_line = out_lines.append
        region_counts: dict[tuple[str, int], list[int]] = out.region_counts
        by_shard: list[list] = [[] for _ in range(self._shards)]
        n_valid = 0

        for index, ev, variant, limit in zip(indices, events, variants, limits, strict=False):
            raw = lines[index]
            # Types, lengths and ranges are checked; what remains is syntax and the clock.
            ts_value = ev.timestamp
            if type(ts_value) is str:
                base = ts_prefixes.get(ts_value[:19])
                shift = ts_suffixes.get(ts_value[19:])
                ts = base + shift if base is not None and shift is not None else parse_ts(ts_value)
            else:
                ts = parse_ts(ts_value)
            if ts is None or ts < ts_lo or ts > ts_hi:
                if ts is not None and ts_lo <= ts <= ts_latest:  # future: the contract's answer, known here
                    known.append((index, contract.future_violation(ts_value, ts, now)))
                else:
                    dropped.append(index)
                continue
            if lake_times is not None:
                lake_times[index] = ts
            status = ev.payment_status
            failed = statuses.get(status)
            if failed is None:
                failed = self._status_is_failure(status)
                if failed is None:
                    dropped.append(index)
                    continue
            currency = ev.currency
            if currency is not None and not currency.isalpha():
                dropped.append(index)
                continue

            # FraudScorer.score and .category, inline.
            amount = ev.amount
            merchant_name = ev.merchant_name
            merchant = variant & 3
            fraud_score = named_points[variant] if merchant_name else anonymous_points[variant]
            over = 0
            if amount is not None:
                if amount > max_amount:
                    known.append((index, contract.amount_violation(amount)))
                    continue
                if amount > limit:
                    over = 1
                    fraud_score += over_points
                if amount > high_amount:
                    fraud_score += high_points
                if amount > 0 and amount % round_amount == 0:
                    fraud_score += round_points
                category = 0 if amount >= high_value else 1 if amount >= medium_value else 2
            else:
                category = 2
            if currency is not None and currency not in currencies and currency.upper() not in currencies:
                fraud_score += currency_points
            if merchant_name:
                hit = merchant_hits.get(merchant_name)
                if hit is None:
                    # The contract's limit, on a cache miss only: the cache holds checked names.
                    if len(merchant_name) > max_name:
                        known.append((index, contract.text_violation("merchant_name", merchant_name)))
                        continue
                    hit = scorer.merchant_is_suspicious(merchant_name)
                if hit:
                    fraud_score += merchant_points

            # The raw object up to its closing brace, then the enrichment.
            record: Any = None
            head = b""
            rewrite = False
            if transaction_lines:
                # The usual line ends at its closing brace: no search needed.
                head = raw[:-1] if raw[-1] == 125 else raw[: raw.rindex(b"}")]
                rewrite = not plain and (
                    ev.category is not unset
                    or ev.fraud_score is not unset
                    or ev.fraud_status is not unset
                    or ev.processed_at is not unset
                    or ev.merchant_status is not unset
                    or ev.over_merchant_limit is not unset
                    or ev.rules_version is not unset
                    or b"\n" in head
                )
            if rewrite or fraud_score >= flag_score:
                # The rare paths need the event as a dict.
                record = _as_dict(raw)
                if record is None:
                    dropped.append(index)
                    continue
                if rewrite:
                    head = orjson.dumps(_without_enrichment(record))[:-1]

            # Event time: EventTimeRule.observe, inline.
            if ts < horizon:
                late.append((index, ts, horizon))
                continue
            if ts > high:
                if ts <= skew_limit:
                    high, ahead = ts, 0
                    horizon = ts - lateness
                    skew_limit = ts + max_skew
                else:
                    high, ahead, ahead_min = event_time.ahead(PartitionTime(high, ahead, ahead_min), ts)
                    horizon = high - lateness
                    skew_limit = event_time.skew_limit(high)

            n_valid += 1
            if lake_valid is not None:
                lake_valid.append(index)
            if transaction_lines or lake_keys is not None:
                suffix_key = fraud_score * 24 + category * 8 + merchant * 2 + over
                suffix = suffixes.get(suffix_key)
                if suffix is None:
                    suffix = self._enrichment_suffix(suffix_key, processed_tail)
                if transaction_lines:
                    append_line(head)
                    append_line(suffix)
                if lake_keys is not None:
                    lake_keys.append(suffix_key)

            region = ev.region
            key = (region, int(ts))
            counts = region_counts.get(key)
            if counts is None:
                counts = region_counts[key] = [0, 0, 0, 0]
            counts[0] += 1
            if failed:
                counts[1] += 1
            if event_keys is not None:
                event_keys.append(counts)
                event_failed.append(failed)
                valid_events.append(ev)
            user_id = ev.user_id
            if type(user_id) is int:
                user_id = str(user_id)
            txn = ev.transaction_id
            if fraud_score >= flag_score:
                self._flag(
                    out, counts, record, txn, ts, region, user_id, fraud_score, category, merchant, over, processed_tail
                )
            if user_id is not None:
                shard = shard_of.get(user_id)
                if shard is None:
                    shard = self._shard(user_id)
                by_shard[shard].append((user_id, ts, amount, region, txn))

        out.transactions = b"".join(out_lines)
        out.n_transactions = n_valid
        out.user_events = {shard: UserColumns.of_rows(users) for shard, users in enumerate(by_shard) if users}
        return PartitionTime(high, ahead, ahead_min if ahead else math.inf)

    # -- the per-row paths, unchanged by the columnar rewrite: production's own ----------

    _status_is_failure = _Production._status_is_failure
    _enrichment_suffix = _Production._enrichment_suffix

    def _shard(self, user_id: str) -> int:
        """The user's shard, cached per user (what production computed per event before issue 14)."""
        shard = self._shard_of.get(user_id)
        if shard is None:
            shard = self._shard_of[user_id] = crc32(user_id.encode()) % self._shards
        return shard

    dead_letter = staticmethod(_Production.dead_letter)
    _dead_letters = _Production._dead_letters
    _rejected = _Production._rejected
    _enriched = _Production._enriched
    _fraud_alert = _Production._fraud_alert

    def _flag(
        self,
        out: ParsedChunk,
        counts: list[int],
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
        """A REVIEW_REQUIRED or FRAUD_SUSPECTED event: count it, keep it, alert on suspicion."""
        fraud_status = self._scorer.status(fraud_score)
        merchant_status = STATUS_NAMES[merchant]
        if fraud_status == FRAUD_SUSPECTED:
            counts[2] += 1
            out.alerts.append(self._fraud_alert(record, txn, ts, region, user_id, fraud_score, merchant_status))
        elif fraud_status == REVIEW_REQUIRED:
            counts[3] += 1
        out.flagged.append(
            self._enriched(record, CATEGORIES[category], fraud_score, processed_tail, merchant_status, over)
        )
