"""Parse, validate, enrich and pre-aggregate one chunk of raw events.

This is the only place that touches every event, so it is written as one
tight loop over a chunk: ``orjson.loads`` once, type checks on the dict,
cached timestamp parsing, O(1) scoring, and the outputs built in bulk:

- the transactions JSONL blob, written from the raw bytes with the
  enrichment appended (no re-serialisation of the input);
- per (region, second) counts, so that the windows downstream see a few
  dozen items per chunk instead of a thousand events;
- per user-shard lists of the few fields the user-risk rules need;
- dead letters (with a machine-readable reason) and FRAUD_SUSPECTED alerts.

Lateness is judged here, per source partition, against that partition's
own progress (its highest event time minus the allowed lateness). A
partition's order is the only order that is the same on every run, so the
late/not-late verdict does not depend on how fast other partitions are read
or on how many workers run. The region windows close on the minimum of the
partitions' watermarks, so an event accepted here can never find its window
closed (see docs/architecture.md, "Event time").
"""

from __future__ import annotations

import base64
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, Optional
from zlib import crc32

import msgspec
import orjson
from msgspec import UNSET

from config.settings import Settings
from operators import alerts
from operators.dimension_counts import DimensionCounter
from operators.event_decoder import (
    ADDED_FIELDS,
    DECLARED_FIELDS,
    DECODE_ERRORS,
    MAX_INT_AMOUNT,
    STRING_FIELDS,
    EventDecoder,
)
from operators.merchants import STATUS_NAMES
from operators.privacy import Redactor
from operators.records import LakeChunk, RawChunk
from operators.reference import LiveReference, ReferenceHolder
from operators.scoring import FRAUD_SUSPECTED, HIGH_VALUE, MEDIUM_VALUE, REVIEW_REQUIRED, STANDARD, FraudScorer
from operators.timestamps import TimestampParser, iso_utc

FAIL_STATUSES = ("FAIL", "FAILED", "FAILURE", "DECLINED", "DENIED", "REJECTED", "ERROR")
SUCCESS_STATUSES = ("SUCCESS", "SUCCEEDED", "SUCCESSFUL", "OK", "APPROVED", "COMPLETED", "PAID")

# Dead-letter reasons (machine-readable; documented in docs/architecture.md).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
LATE = "late"
# orjson and msgspec disagree on a line (e.g. nesting deeper than one allows).
UNDECODABLE = "the event could not be decoded"

_CATEGORIES = (HIGH_VALUE, MEDIUM_VALUE, STANDARD)
_SHARD_CACHE_LIMIT = 500_000
_OPTIONAL_TEXT = ("merchant_id", "merchant_name", "device")


_merchant_id = attrgetter("merchant_id")


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


def _currency_error(currency: object) -> tuple[str, str, str]:
    return INVALID_FIELD, "currency", f"currency must be an ISO-4217 code, got {currency!r:.80}"


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
    # {(region, hop_start, field, value): [events, failures]} (operators/dimension_counts.py)
    dimension_counts: dict = field(default_factory=dict)
    # {shard: [(user_id, ts, amount, region, transaction_id), ...]}
    user_events: dict = field(default_factory=dict)
    n_late: int = 0
    # Built only when the lake is on (sinks.lake.enabled).
    lake: Optional[LakeChunk] = None


def _status_table() -> dict[str, bool]:
    """Exact spellings first (the fast path); upper-casing only on a miss."""
    table: dict[str, bool] = {}
    for name in FAIL_STATUSES:
        for spelling in (name, name.lower(), name.capitalize()):
            table[spelling] = True
    for name in SUCCESS_STATUSES:
        for spelling in (name, name.lower(), name.capitalize()):
            table[spelling] = False
    return table


class ChunkParser:
    """Turns a :class:`RawChunk` into a :class:`ParsedChunk`.

    Holds only settings-derived constants and caches; the per-partition
    watermark is passed in and returned so Bytewax can snapshot it.
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
        self._redact = (redactor if redactor is not None else Redactor(settings.privacy)).redact
        self._lake = settings.sinks.lake.enabled
        self._transaction_lines = transaction_lines or self._lake
        self._lateness = settings.windows.allowed_lateness_seconds
        self._max_id = settings.validation.max_id_length
        explain = settings.rules.failure_rate
        extra = tuple(name for name in explain.explain_by if name not in DECLARED_FIELDS)
        self._decoder = EventDecoder(self._max_id, extra)
        self._dimensions = DimensionCounter(explain.explain_by, explain.hop_seconds, STRING_FIELDS)
        self._timestamps = TimestampParser(settings.validation.min_year, settings.validation.max_year)
        self._scorer = FraudScorer(settings.rules.fraud, settings.enrichment)
        self._shards = settings.users.shards
        self._shard_of: dict[str, int] = {}
        self._statuses = _status_table()
        self._rules = settings.rules.fraud
        self._suffixes: dict[int, bytes] = {}
        self._years = (settings.validation.min_year, settings.validation.max_year)
        self._enrichment = settings.enrichment
        self._reference = reference or ReferenceHolder(LiveReference.of(settings.rules))
        self._live: Optional[LiveReference] = None
        self._use(self._reference.current)

    def _use(self, live: LiveReference) -> None:
        """Take a new version of the rules and merchant table (at a chunk boundary)."""
        self._live = live
        fraud = live.rules.fraud
        self._rules = fraud
        self._scorer = FraudScorer(fraud, self._enrichment)
        # Points per merchant status code (operators/merchants.py): active,
        # inactive, unknown, not_loaded.
        self._merchant_points = (0, fraud.inactive_merchant_points, fraud.unknown_merchant_points, 0)
        self._version_field = f',"rules_version":"{live.version}"'

    def for_partition(self) -> ChunkParser:
        """A parser for one more source partition of this process.

        It shares the caches that grow with the data (user -> shard,
        merchant verdicts, status spellings), so a process reading many partitions holds them
        once; what changes within a chunk (enrichment suffixes, the last
        timestamp error) stays its own, because partitions are parsed by
        different worker threads. The shared dicts are only read and
        written whole-entry, which the GIL keeps consistent.
        """
        parser = copy.copy(self)
        parser._suffixes = {}
        parser._timestamps = TimestampParser(*self._years)
        return parser

    # -- helpers kept off the hot path -------------------------------------

    def _status_is_failure(self, status: object) -> Optional[bool]:
        if type(status) is not str:
            return None
        failed = self._statuses.get(status.strip().upper())
        if failed is not None and len(self._statuses) < 10_000:
            self._statuses[status] = failed
        return failed

    def _enrichment_suffix(self, key: int, processed_tail: bytes) -> bytes:
        """The bytes that close a raw event, cached per (score, category, merchant status,
        over limit) for one chunk; ``key`` is ``score * 24 + category * 8 + status * 2 + over``."""
        score, rest = divmod(key, 24)
        category, rest = divmod(rest, 8)
        merchant, over = divmod(rest, 2)
        status = self._scorer.status(score)
        suffix = (
            f',"category":"{_CATEGORIES[category]}","fraud_score":{score},"fraud_status":"{status}",'
            f'"merchant_status":"{STATUS_NAMES[merchant]}","over_merchant_limit":{"true" if over else "false"}'
            f'{self._version_field},"processed_at":"'
        ).encode()
        suffix += processed_tail
        self._suffixes[key] = suffix
        return suffix

    def _shard(self, user_id: str) -> int:
        shard = self._shard_of.get(user_id)
        if shard is None:
            shard = crc32(user_id.encode()) % self._shards
            if len(self._shard_of) >= _SHARD_CACHE_LIMIT:
                self._shard_of.clear()
            self._shard_of[user_id] = shard
        return shard

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

    def _field_error(self, name: str, value: object) -> tuple[str, str, str]:
        if value is None:
            return MISSING_FIELD, name, f"{name} is required"
        return INVALID_FIELD, name, f"{name} has an invalid value or type: {value!r:.80}"

    # -- the hot loop --------------------------------------------------------

    def parse(self, max_ts: Optional[float], chunk: RawChunk) -> tuple[Optional[float], ParsedChunk]:
        """Parse one chunk.

        msgspec decodes and type-checks the whole chunk in C
        (``operators/event_decoder.py``); the loop inlines the cached fast
        paths of timestamp parsing, scoring and shard lookup: at well under
        a microsecond per event for decoding, a Python function call
        (~0.1 us) per helper is a visible share of the budget.

        :arg max_ts: the highest event time accepted so far on this
            partition (the watermark state), or None before the first event.
        :returns: the new ``max_ts`` and the parsed chunk.
        """
        live = self._reference.current
        if live is not self._live:
            self._use(live)
        timestamps = self._timestamps
        ts_prefixes = timestamps.prefixes
        ts_suffixes = timestamps.suffixes
        ts_min, ts_max = timestamps.min_seconds, timestamps.max_seconds
        statuses = self._statuses
        scorer = self._scorer
        rules = self._rules
        high_amount, high_points = rules.high_amount, rules.high_amount_points
        round_amount, round_points = rules.round_amount, rules.round_amount_points
        currencies, currency_points = scorer.currencies, rules.currency_points
        merchant_hits, merchant_points = scorer.merchant_hits, rules.merchant_points
        high_value, medium_value = scorer.high_value, scorer.medium_value
        flag_score = scorer.review_score
        suffixes = self._suffixes
        suffixes.clear()  # they end with this chunk's processed_at
        shard_of = self._shard_of
        lateness = self._lateness
        dead_letter = self.dead_letter
        unset = UNSET

        now = datetime.now(UTC)
        received_at = now.timestamp()
        processed_tail = (now.isoformat(timespec="milliseconds")[:-6] + 'Z"}\n').encode()
        out_lines: list[bytes] = []
        append_line = out_lines.append
        region_counts: dict[tuple[str, int], list[int]] = {}
        # Per valid event, for the per-chunk dimension counts.
        counted = bool(self._dimensions.fields)
        event_keys: list[tuple[str, int]] = []
        event_failed: list[bool] = []
        valid_events: list = []
        by_shard: list[list] = [[] for _ in range(self._shards)]
        flagged: list[dict] = []
        dead: list[tuple[int, dict]] = []  # (line index, dead letter)
        fraud_alerts: list[dict] = []
        n_late = 0
        n_valid = 0
        transaction_lines = self._transaction_lines
        horizon = -math.inf if max_ts is None else max_ts - lateness

        lines = self._redact(chunk.lines)
        # The lake's hook: every line's event time and the valid lines, only when the lake is on.
        lake_times: Optional[list[float]] = [math.nan] * len(lines) if self._lake else None
        lake_valid: Optional[list[int]] = [] if self._lake else None
        events, indices, rejected, plain = self._decoder.decode(lines)
        for index, _exc in rejected:
            rejection = self._rejected(chunk, index, lines[index])
            if rejection is not None:
                dead.append((index, rejection))
        line_of: Sequence[int] = range(len(lines)) if indices is None else indices
        # The merchant join: one C-level dict lookup pass per chunk, then columns by slot.
        merchants = live.merchants
        slots = merchants.slots(map(_merchant_id, events)) if merchants.loaded else repeat(merchants.sentinel)
        m_status, m_limit, m_names = merchants.status, merchants.limit, merchants.names
        m_points, over_points = self._merchant_points, rules.over_limit_points

        for index, ev, slot in zip(line_of, events, slots, strict=False):
            raw = lines[index]
            # Types, lengths and signs are checked; what remains is syntax.
            ts_value = ev.timestamp
            ts = None
            if type(ts_value) is str:
                base = ts_prefixes.get(ts_value[:19])
                shift = ts_suffixes.get(ts_value[19:])
                if base is not None and shift is not None:
                    ts = base + shift
                    if ts < ts_min or ts >= ts_max:
                        ts = None
            if ts is None:
                ts = timestamps.parse(ts_value)
                if ts is None:
                    if ts_value is None:
                        dead.append(
                            (index, dead_letter(chunk, index, raw, MISSING_FIELD, "timestamp", "timestamp is required"))
                        )
                    else:
                        dead.append(
                            (index, dead_letter(chunk, index, raw, INVALID_FIELD, "timestamp", timestamps.error))
                        )
                    continue
            if lake_times is not None:
                lake_times[index] = ts
            status = ev.payment_status
            failed = statuses.get(status)
            if failed is None:
                failed = self._status_is_failure(status)
                if failed is None:
                    dead.append((index, dead_letter(chunk, index, raw, *self._field_error("payment_status", status))))
                    continue
            currency = ev.currency
            if currency is not None and not currency.isalpha():
                dead.append((index, dead_letter(chunk, index, raw, *_currency_error(currency))))
                continue

            # Fraud score: the brief's four rules, weights from operators/scoring.py's FraudScorer.
            amount = ev.amount
            merchant = m_status[slot]
            fraud_score = m_points[merchant]
            over = 0
            if amount is not None:
                if amount > m_limit[slot]:
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
            merchant_name = ev.merchant_name or m_names[slot]
            if merchant_name:
                hit = merchant_hits.get(merchant_name)
                if hit is None:
                    hit = scorer.merchant_is_suspicious(merchant_name)
                if hit:
                    fraud_score += merchant_points

            # The raw object up to its closing brace, then the enrichment.
            # The rare paths need the event as a dict: orjson's, as before.
            # Any: None until a path below needs them, and a hot loop is no place to re-check.
            record: Any = None
            head: Any = None
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
                record = _as_dict(raw)
                if record is None:
                    dead.append((index, dead_letter(chunk, index, raw, INVALID_JSON, None, UNDECODABLE)))
                    continue
                if rewrite:
                    head = orjson.dumps(_without_enrichment(record))[:-1]

            # Event time: late against this partition's own progress.
            if ts < horizon:
                n_late += 1
                dead.append(
                    (
                        index,
                        dead_letter(
                            chunk,
                            index,
                            raw,
                            LATE,
                            "timestamp",
                            f"event time {iso_utc(ts)} is behind the watermark {iso_utc(horizon)}",
                        ),
                    )
                )
                continue
            if max_ts is None or ts > max_ts:
                max_ts = ts
                horizon = ts - lateness

            n_valid += 1
            if lake_valid is not None:
                lake_valid.append(index)
            if transaction_lines:
                suffix_key = fraud_score * 24 + category * 8 + merchant * 2 + over
                suffix = suffixes.get(suffix_key)
                if suffix is None:
                    suffix = self._enrichment_suffix(suffix_key, processed_tail)
                append_line(head)
                append_line(suffix)

            region = ev.region
            key = (region, int(ts))
            counts = region_counts.get(key)
            if counts is None:
                counts = region_counts[key] = [0, 0, 0, 0]
            counts[0] += 1
            if failed:
                counts[1] += 1
            if counted:
                event_keys.append(key)
                event_failed.append(failed)
                valid_events.append(ev)
            user_id = ev.user_id
            if type(user_id) is int:
                user_id = str(user_id)
            txn = ev.transaction_id
            if fraud_score >= flag_score:
                fraud_status = scorer.status(fraud_score)
                if fraud_status == FRAUD_SUSPECTED:
                    counts[2] += 1
                    fraud_alerts.append(
                        self._fraud_alert(record, txn, ts, region, user_id, fraud_score, STATUS_NAMES[merchant])
                    )
                elif fraud_status == REVIEW_REQUIRED:
                    counts[3] += 1
                flagged.append(
                    self._enriched(
                        record, _CATEGORIES[category], fraud_score, processed_tail, STATUS_NAMES[merchant], over
                    )
                )

            if user_id is not None:
                shard = shard_of.get(user_id)
                if shard is None:
                    shard = self._shard(user_id)
                by_shard[shard].append((user_id, ts, amount, region, txn))

        transactions = b"".join(out_lines)
        return max_ts, ParsedChunk(
            part=chunk.part,
            n_parts=chunk.n_parts,
            done=chunk.done,
            idle=chunk.idle,
            watermark=None if max_ts is None else max_ts - lateness,
            transactions=transactions,
            n_transactions=n_valid,
            flagged=flagged,
            dead_letters=[record for _, record in (sorted(dead, key=itemgetter(0)) if rejected else dead)],
            alerts=fraud_alerts,
            region_counts=region_counts,
            dimension_counts=self._dimensions.count(event_keys, event_failed, valid_events) if counted else {},
            user_events={shard: events for shard, events in enumerate(by_shard) if events},
            n_late=n_late,
            lake=None
            if lake_times is None or lake_valid is None
            else LakeChunk(
                chunk.part,
                chunk.origin,
                lines,
                chunk.first_position,
                chunk.positions,
                received_at,
                lake_times,
                lake_valid,
                transactions,
            ),
        )

    def _rejected(self, chunk: RawChunk, index: int, raw: bytes) -> Optional[dict[str, Any]]:
        """The dead letter for a line the decoder rejected, or None for a blank file line.

        The decoder says that a line is invalid; the checks below say why,
        in the order a person would fix them, with the same reasons and
        wording whatever the line's neighbours were.
        """
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # A blank line in a file carries no event; an empty message
            # (a Kafka tombstone) is still a message and is dead-lettered.
            if not raw.strip() and chunk.part.startswith("file:"):
                return None
            return self.dead_letter(chunk, index, raw, INVALID_JSON, None, str(exc))
        if type(ev) is not dict:
            return self.dead_letter(chunk, index, raw, NOT_AN_OBJECT, None, "an event must be a JSON object")
        max_id = self._max_id
        txn = ev.get("transaction_id")
        if type(txn) is not str or not txn or len(txn) > max_id:
            return self.dead_letter(chunk, index, raw, *self._field_error("transaction_id", txn))
        ts_value = ev.get("timestamp")
        if self._timestamps.parse(ts_value) is None:
            if ts_value is None:
                return self.dead_letter(chunk, index, raw, MISSING_FIELD, "timestamp", "timestamp is required")
            return self.dead_letter(chunk, index, raw, INVALID_FIELD, "timestamp", self._timestamps.error)
        status = ev.get("payment_status")
        if self._status_is_failure(status) is None:
            return self.dead_letter(chunk, index, raw, *self._field_error("payment_status", status))
        region = ev.get("region")
        if type(region) is not str or not region or len(region) > max_id:
            return self.dead_letter(chunk, index, raw, *self._field_error("region", region))
        amount = ev.get("amount")
        if amount is not None and (
            (type(amount) is not float and type(amount) is not int)
            or amount < 0
            or (type(amount) is int and amount > MAX_INT_AMOUNT)
        ):
            detail = f"amount must be a finite number >= 0, got {amount!r:.80}"
            return self.dead_letter(chunk, index, raw, INVALID_FIELD, "amount", detail)
        currency = ev.get("currency")
        if currency is not None and (type(currency) is not str or len(currency) != 3 or not currency.isalpha()):
            return self.dead_letter(chunk, index, raw, *_currency_error(currency))
        user_id = ev.get("user_id")
        if (
            user_id is not None
            and type(user_id) is not int
            and (type(user_id) is not str or not user_id or len(user_id) > max_id)
        ):
            detail = f"user_id must be a non-empty string, got {user_id!r:.80}"
            return self.dead_letter(chunk, index, raw, INVALID_FIELD, "user_id", detail)
        for name in _OPTIONAL_TEXT:
            if ev.get(name) is not None and type(ev[name]) is not str:
                return self.dead_letter(chunk, index, raw, INVALID_FIELD, name, f"{name} must be a string")
        # orjson and msgspec disagree (e.g. nesting deeper than msgspec's limit).
        return self.dead_letter(chunk, index, raw, INVALID_JSON, None, UNDECODABLE)

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
