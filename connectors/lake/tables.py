"""Flow items as Arrow tables, one call per chunk: the lake's columns.

Raw and enriched rows are built with whole-chunk Arrow/numpy calls (no
Python loop per event): the raw lines become one binary array (cast to UTF-8
in one call; only a chunk holding a non-UTF-8 line takes a per-line pass), and
the enriched rows' own fields are read from the valid lines by Arrow's JSON
reader with an explicit schema, which converts ``amount`` from its decimal
text straight to ``decimal128(38, 9)``: no float ever touches the money.
Paywatch's added fields come from the chunk's few distinct enrichment
suffixes (the parse step's, read once and taken by key); a chunk without
them is read from its transactions JSONL instead. A chunk the strict reader
refuses (a numeric ``user_id``, an amount with more than 9 decimals) is
converted line by line instead, with the same schema.
Alerts and per-minute metrics are small streams and converted per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Optional

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from operators.events.timestamps import TimestampParser
from operators.parse import FAIL_STATUSES
from operators.records import LakeChunk

UTC_MS = pa.timestamp("ms", tz="UTC")
AMOUNT = pa.decimal128(38, 9)
_NANO = Decimal("0.000000001")
_ROW_OVERHEAD = 48  # bytes per row for the columns besides the line (size estimate)

RAW_SCHEMA = pa.schema(
    [
        ("source_partition", pa.string()),
        ("source", pa.string()),
        ("position", pa.string()),
        ("received_at", UTC_MS),
        ("event_time", UTC_MS),
        ("line", pa.string()),
        ("line_bytes", pa.binary()),
    ]
)

#: The event's own fields and Paywatch's additions, as the JSON reader reads them.
_EVENT_FIELDS = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("user_id", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_name", pa.string()),
        ("amount", AMOUNT),
        ("currency", pa.string()),
        ("payment_status", pa.string()),
        ("device", pa.string()),
        ("region", pa.string()),
        ("category", pa.string()),
        ("fraud_score", pa.int32()),
        ("fraud_status", pa.string()),
        ("merchant_status", pa.string()),
        ("over_merchant_limit", pa.bool_()),
        ("rules_version", pa.string()),
        ("processed_at", UTC_MS),
    ]
)
ENRICHED_SCHEMA = pa.schema(
    [
        *_EVENT_FIELDS,
        ("event_time", UTC_MS),
        ("failed", pa.bool_()),
        ("source_partition", pa.string()),
        ("position", pa.string()),
    ]
)
#: Columns built as Arrow dictionaries (a value per chunk, or one of a chunk's few suffixes): no
#: per-row copy to build them, and Parquet writes their dictionary pages without hashing every
#: row. Files are written without the Arrow schema, so every reader sees plain strings.
_DICTIONARY_BUILT = frozenset(
    {"source_partition", "source", "category", "fraud_status", "merchant_status", "rules_version"}
)
_CODES = pa.dictionary(pa.int32(), pa.string())


def _as_built(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _CODES) if f.name in _DICTIONARY_BUILT else f for f in schema])


RAW_BUILT = _as_built(RAW_SCHEMA)
ENRICHED_BUILT = _as_built(ENRICHED_SCHEMA)

ALERTS_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()),
        ("incident_id", pa.string()),
        ("type", pa.string()),
        ("state", pa.string()),
        ("severity", pa.string()),
        ("key", pa.string()),
        ("region", pa.string()),
        ("user_id", pa.string()),
        ("transaction_id", pa.string()),
        ("event_time", UTC_MS),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("message", pa.string()),
        ("details", pa.string()),  # JSON
        ("extra", pa.string()),  # JSON of fields this schema does not name, or null
    ]
)
METRICS_SCHEMA = pa.schema(
    [
        ("region", pa.string()),
        ("window_start", UTC_MS),
        ("window_end", UTC_MS),
        ("count", pa.int64()),
        ("failures", pa.int64()),
        ("failure_rate", pa.float64()),
        ("fraud_suspected", pa.int64()),
        ("review_required", pa.int64()),
        ("partial", pa.bool_()),
        ("extra", pa.string()),
    ]
)
#: The fields an event brings, and those the parse step adds (the enrichment suffix of its JSONL line).
_OWN_FIELDS = pa.schema(list(_EVENT_FIELDS)[: _EVENT_FIELDS.get_field_index("region") + 1])
_ADDED_FIELDS = pa.schema(list(_EVENT_FIELDS)[len(_OWN_FIELDS) :])
_READ_OPTIONS = pajson.ParseOptions(explicit_schema=_EVENT_FIELDS, unexpected_field_behavior="ignore")
#: The valid lines are read back to back, with no newline between them (see ``_concatenated``).
_OWN_OPTIONS = pajson.ParseOptions(
    explicit_schema=_OWN_FIELDS, unexpected_field_behavior="ignore", newlines_in_values=True
)
_ADDED_OPTIONS = pajson.ParseOptions(explicit_schema=_ADDED_FIELDS, unexpected_field_behavior="ignore")
_FAIL_SET = pa.array(sorted(FAIL_STATUSES))


class RowSource:
    """Where a file's rows come from: builds its Arrow table on first use, once.

    The table is built on the zone's encoding thread as soon as the rows join
    an open file (connectors/lake/encoder.py; Arrow releases the GIL while it
    reads JSON, validates UTF-8 and writes Parquet), or on the sink's sender
    thread for a file restored from a snapshot, never on the worker thread
    that runs the flow. A snapshot keeps the inputs, not the table.
    """

    def __init__(self) -> None:
        self._table: Optional[pa.Table] = None

    def table(self) -> pa.Table:
        if self._table is None:
            self._table = self._build()
        return self._table

    def build(self) -> pa.Table:
        """The table, not kept: an open file encoded a row group at a time holds its
        sources for minutes, and must not hold their tables too."""
        return self._table if self._table is not None else self._build()

    def _build(self) -> pa.Table:
        raise NotImplementedError

    def __len__(self) -> int:
        """Rows (without building the table)."""
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_table"] = None
        return state


class TableSource(RowSource):
    """Rows that are already a table (alerts and metrics)."""

    def __init__(self, table: pa.Table) -> None:
        super().__init__()
        self._given = table

    def _build(self) -> pa.Table:
        return self._given

    def __len__(self) -> int:
        return self._given.num_rows


class ChunkLines:
    """One chunk's lines and where they came from, as Arrow buffers instead of Python objects.

    Built on the worker thread when the chunk reaches the sink, so the chunk's
    thousand ``bytes`` objects (and its transactions JSONL) are released at
    once: a file stays open for minutes, and holding every line as a Python
    object for that long cost the flow more than converting it (measured in
    docs/performance.md). Shared by the chunk's raw and enriched sources, so a
    snapshot pickles the buffers once.

    When the parse step hands its JSON array of the lines (``LakeChunk.array``,
    ``[l0,l1,...]``, which it builds anyway to decode them), the buffer is that
    array itself, with no copy: value ``i`` is then line ``i`` and the ``,`` or
    ``]`` after it (``frame`` = 1 byte), and :attr:`lines` cuts the separators
    off on the encoding thread. Joining the lines again cost the worker thread
    0.05-0.1 us per line (docs/performance.md, "Session 7").
    """

    __slots__ = ("part", "origin", "first_position", "positions", "received_at", "values", "frame")

    def __init__(self, chunk: LakeChunk) -> None:
        self.part = chunk.part
        self.origin = chunk.origin
        self.first_position = chunk.first_position
        self.positions: Optional[pa.Array] = None if chunk.positions is None else pa.array(chunk.positions)
        self.received_at = chunk.received_at
        array = getattr(chunk, "array", None)  # a LakeChunk unpickled from a format 3 snapshot has none
        framed = None if array is None else _framed_array(chunk.lines, array)
        self.values: pa.Array = _binary_array(chunk.lines) if framed is None else framed
        self.frame = 0 if framed is None else 1  # bytes after each line in ``values``

    def __getstate__(self) -> tuple:
        state = (self.part, self.origin, self.first_position, self.positions, self.received_at, self.values)
        return (*state, self.frame)

    def __setstate__(self, state: tuple) -> None:
        if len(state) == 6:  # pickled before lines could be framed
            state = (*state, 0)
        self.part, self.origin, self.first_position, self.positions, self.received_at, self.values, self.frame = state

    def __len__(self) -> int:
        return len(self.values)

    @property
    def lines(self) -> pa.Array:
        """The lines, exactly as received (separators cut off in one call, on the thread that asks)."""
        return self._unframed(self.values)

    def _unframed(self, values: pa.Array) -> pa.Array:
        return values if not self.frame else pc.binary_slice(values, 0, -self.frame)

    def sizes(self) -> np.ndarray:
        """Each line's length in bytes, from the array's offsets (no pass over Python objects)."""
        values = self.values
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
        return np.diff(offsets[values.offset : values.offset + len(values) + 1]).astype(np.int64) - self.frame

    def positions_column(self, index: Optional[np.ndarray]) -> pa.Array:
        """The source positions of the rows (``index`` into the lines; None: all), as text."""
        if self.positions is None:
            first = self.first_position
            n = len(self)
            numbers = np.arange(first, first + n, dtype=np.int64) if index is None else first + index.astype(np.int64)
            return pa.array(numbers).cast(pa.string())
        values = self.positions if index is None else self.positions.take(pa.array(index))
        return values.cast(pa.string())

    def taken(self, index: np.ndarray) -> pa.Array:
        """The lines at ``index`` (the separators cut off after the take, which copies less)."""
        return self._unframed(self.values.take(pa.array(index)))

    def line_list(self, index: Optional[np.ndarray] = None) -> list[bytes]:
        """The lines as bytes (rare paths: dead letters, a chunk the JSON reader refuses)."""
        lines = self.lines if index is None else self.taken(index)
        return lines.to_pylist()


def _framed_array(lines: list[bytes], array: bytes) -> Optional[pa.Array]:
    """``array`` (``[l0,l1,...]``) as a binary array of line + separator, with no copy; None
    if it is not the JSON array of ``lines`` (then the lines are joined as before)."""
    if not lines or len(array) >= 1 << 31:
        return None
    offsets = _offsets(lines, first=1, separator=1)
    if int(offsets[-1]) != len(array) or array[:1] != b"[":
        return None
    return pa.Array.from_buffers(pa.binary(), len(lines), [None, pa.py_buffer(offsets), pa.py_buffer(array)])


def _offsets(lines: list[bytes], first: int, separator: int) -> np.ndarray:
    """Binary-array offsets of ``lines`` laid out from byte ``first``, ``separator`` bytes after each."""
    offsets = np.empty(len(lines) + 1, dtype=np.int32)
    offsets[0] = first
    lengths = np.fromiter(map(len, lines), dtype=np.int32, count=len(lines))
    np.cumsum(lengths + separator, out=offsets[1:])
    offsets[1:] += first
    return offsets


def _binary_array(lines: list[bytes]) -> pa.Array:
    """The lines as one Arrow binary array: their bytes joined in one C call, the offsets from
    their lengths with numpy. A third cheaper on the worker thread than ``pa.array``, which checks
    and copies each object in turn (0.10 against 0.16 us per line, docs/performance.md)."""
    try:
        data = b"".join(lines)
    except TypeError:  # not all bytes-like: Arrow's own conversion says what it accepts
        return pa.array(lines, pa.binary())
    if len(data) >= 1 << 31:  # over binary's 32-bit offsets
        return pa.array(lines, pa.binary())
    offsets = _offsets(lines, first=0, separator=0)
    return pa.Array.from_buffers(pa.binary(), len(lines), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _old_chunk_state(source: RowSource, state: dict[str, Any]) -> None:
    """A source pickled by snapshot format 3 held the whole :class:`LakeChunk`."""
    chunk = state.pop("chunk", None)
    source.__dict__.update(state)
    if chunk is not None:
        source.lines = ChunkLines(chunk)  # type: ignore[attr-defined]
        if isinstance(source, EnrichedSource):
            source.keys, source.suffixes, source.transactions = None, None, chunk.transactions


class RawSource(RowSource):
    """A chunk's lines as raw-zone rows."""

    def __init__(self, lines: ChunkLines, times: np.ndarray) -> None:
        super().__init__()
        self.lines = lines
        self.times = times

    def __setstate__(self, state: dict[str, Any]) -> None:
        _old_chunk_state(self, state)

    def _build(self) -> pa.Table:
        return raw_table(self.lines, self.times)

    def __len__(self) -> int:
        return len(self.lines)


class EnrichedSource(RowSource):
    """A chunk's valid transactions as enriched-zone rows.

    ``keys``/``suffixes`` (from the parse step, see :class:`LakeChunk`): the
    event's own fields are read from the valid raw lines, the added ones from
    the chunk's few distinct enrichment suffixes. Without them (an older parse
    step, an old snapshot) ``transactions``, the scored JSONL, is read whole.
    """

    def __init__(
        self,
        lines: ChunkLines,
        times: np.ndarray,
        index: np.ndarray,
        keys: Optional[np.ndarray],
        suffixes: Optional[dict[int, bytes]],
        transactions: Optional[bytes],
    ) -> None:
        super().__init__()
        self.lines = lines
        self.times = times
        self.index = index
        self.keys = keys
        self.suffixes = suffixes
        self.transactions = transactions

    def __setstate__(self, state: dict[str, Any]) -> None:
        _old_chunk_state(self, state)

    def _build(self) -> pa.Table:
        return enriched_table(self.lines, self.times, self.index, self.keys, self.suffixes, self.transactions)

    def __len__(self) -> int:
        return len(self.index)


class ZoneRows:
    """One chunk's rows for one zone: what the roller needs per row, and where the rows come from.

    ``clock`` is the event time that moves the roller's clock: accepted events
    only (NaN for the rest), so a dead-lettered line dated 2099 cannot close
    every open file; ``hours`` place each row (its own event hour, or the
    receive hour).
    """

    __slots__ = ("source", "hours", "clock", "sizes", "index")

    def __init__(self, source: RowSource, hours: np.ndarray, clock: np.ndarray, sizes: np.ndarray, index: Any) -> None:
        self.source = source
        self.hours = hours
        self.clock = clock
        self.sizes = sizes
        self.index = index  # row -> line index of the chunk (None: the same)


def _times_column(times: np.ndarray) -> pa.Array:
    missing = np.isnan(times)
    millis = np.floor(np.where(missing, 0.0, times) * 1000).astype(np.int64)
    return pa.array(millis, type=pa.int64(), mask=missing).cast(UTC_MS)


def _constant(value: str, n: int) -> pa.Array:
    """``n`` times ``value``, as a dictionary of one value (no copy per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], pa.string()))


def _text_and_bytes(lines: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Lines as UTF-8 text, with the bytes kept only for lines that are not UTF-8."""
    try:
        return lines.cast(pa.string()), pa.nulls(len(lines), pa.binary())
    except pa.ArrowInvalid:
        text: list[Optional[str]] = []
        raw: list[Optional[bytes]] = []
        for line in lines.to_pylist():
            try:
                text.append(line.decode())
                raw.append(None)
            except UnicodeDecodeError:
                text.append(None)
                raw.append(line)
        return pa.array(text, pa.string()), pa.array(raw, pa.binary())


def _reread_times(chunk: LakeChunk, times: np.ndarray, timestamps: TimestampParser, max_future: float) -> None:
    """Event times of the lines the chunk decoder rejected as a whole (a bad field
    elsewhere): their timestamp may still be readable. A time further ahead of
    the receive time than ``validation.max_future_seconds`` is not trusted (the
    parse step's ``future`` verdict): that line stays under its receive hour.
    Per line, but only for lines without a time, which are rare."""
    latest = chunk.received_at + max_future
    for index in np.flatnonzero(np.isnan(times)):
        try:
            event = orjson.loads(chunk.lines[index])
        except orjson.JSONDecodeError:
            continue
        if type(event) is dict:
            ts = timestamps.parse(event.get("timestamp"))
            if ts is not None and ts <= latest:
                times[index] = ts


def raw_rows(
    chunk: LakeChunk, timestamps: TimestampParser, max_future: float, lines: Optional[ChunkLines] = None
) -> ZoneRows:
    """Every line of the chunk, under its event hour or, without one, the hour it was received.

    :arg lines: the chunk's :class:`ChunkLines` if already built (the enriched zone shares it).
    """
    lines = ChunkLines(chunk) if lines is None else lines
    times = np.array(chunk.line_times, dtype=np.float64)
    valid = np.asarray(chunk.valid, dtype=np.int64)
    clock = np.full(len(times), np.nan)
    clock[valid] = times[valid]
    _reread_times(chunk, times, timestamps, max_future)
    hours = (np.where(np.isnan(times), chunk.received_at, times) // 3600).astype(np.int64)
    sizes = lines.sizes() + _ROW_OVERHEAD
    return ZoneRows(RawSource(lines, times), hours, clock, sizes, None)


def raw_table(lines: ChunkLines, times: np.ndarray) -> pa.Table:
    """The raw-zone table of a chunk's lines."""
    n = len(lines)
    text, raw = _text_and_bytes(lines.lines)
    received = pa.repeat(pa.scalar(int(lines.received_at * 1000), UTC_MS), n)
    return pa.table(
        [
            _constant(lines.part, n),
            _constant(lines.origin, n),
            lines.positions_column(None),
            received,
            _times_column(times),
            text,
            raw,
        ],
        schema=RAW_BUILT,
    )


def _usable_suffixes(chunk: LakeChunk, n_valid: int) -> bool:
    """Whether the parse step's enrichment keys describe every valid event (else read the JSONL)."""
    keys, suffixes = chunk.enrichment_keys, chunk.enrichment_suffixes
    if keys is None or suffixes is None or len(keys) != n_valid:
        return False
    return all(s[:1] == b"," and s[-2:] == b"}\n" and s.count(b"\n") == 1 for s in suffixes.values())


def enriched_rows(chunk: LakeChunk, lines: Optional[ChunkLines] = None) -> ZoneRows:
    """The chunk's valid transactions, under their event hour.

    :arg lines: the chunk's :class:`ChunkLines` if already built (the raw zone shares it).
    """
    lines = ChunkLines(chunk) if lines is None else lines
    index = np.asarray(chunk.valid, dtype=np.int64)
    times = np.asarray(chunk.line_times, dtype=np.float64)[index]
    hours = (times // 3600).astype(np.int64)
    if _usable_suffixes(chunk, len(index)):
        keys = np.asarray(chunk.enrichment_keys, dtype=np.int64)
        suffixes = dict(chunk.enrichment_suffixes or {})
        # The JSONL line's length, from the line and its suffix (the head is the line less its
        # closing brace): no pass over the JSONL bytes.
        order = np.array(sorted(suffixes), dtype=np.int64)
        lengths = np.array([len(suffixes[int(key)]) for key in order], dtype=np.int64)
        codes = np.searchsorted(order, keys)
        if len(keys) and (codes.max() >= len(order) or not np.array_equal(order[codes], keys)):
            raise ValueError(f"an enrichment key without its suffix in {chunk.part}")
        sizes = lines.sizes()[index] - 1 + lengths[codes]
        source = EnrichedSource(lines, times, index, keys, suffixes, None)
    else:
        ends = np.flatnonzero(np.frombuffer(chunk.transactions, dtype=np.uint8) == 10)
        if len(ends) != len(index):
            raise ValueError(f"{len(ends)} transaction lines for {len(index)} valid events in {chunk.part}")
        sizes = np.diff(ends, prepend=-1).astype(np.int64)
        source = EnrichedSource(lines, times, index, None, None, chunk.transactions)
    return ZoneRows(source, hours, times, sizes, index)


def _read_json(data: pa.Buffer, options: pajson.ParseOptions) -> pa.Table:
    """Arrow's JSON reader on one block, one thread (a chunk is one block; its pool only added CPU,
    and smaller blocks cost more: 64 KiB blocks 25 % more, measured in docs/performance.md)."""
    read = pajson.ReadOptions(use_threads=False, block_size=max(data.size + 1, 1 << 20))
    return pajson.read_json(pa.BufferReader(data), read_options=read, parse_options=options)


def _concatenated(lines: pa.Array) -> pa.Buffer:
    """The bytes of a binary array's values, back to back, as they already lie in its data buffer.

    No newline between them: each valid line is one JSON object, which ends itself, and the
    reader told ``newlines_in_values`` finds object boundaries by parsing. Joining the lines with
    newlines first copied every byte once more (0.06-0.1 us per event).
    """
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return lines.buffers()[2].slice(start, end - start)


def _own_fields(lines: ChunkLines, index: np.ndarray) -> pa.Table:
    """The event's own fields of the valid lines, read from the lines themselves."""
    if len(index) == len(lines) and np.array_equal(index, np.arange(len(index))):
        valid = lines.lines  # every line valid: no take
    else:
        valid = lines.taken(index)
    try:
        events = _read_json(_concatenated(valid), _OWN_OPTIONS)
        if events.num_rows == len(index):
            return events
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return _events_line_by_line(valid.to_pylist(), _OWN_FIELDS)


def _added_fields(keys: np.ndarray, suffixes: dict[int, bytes]) -> pa.Table:
    """Paywatch's fields per row: the chunk's few distinct suffixes read once, then taken by key."""
    order = np.array(sorted(suffixes), dtype=np.int64)
    blob = b"".join(b"{" + suffixes[int(key)][1:] for key in order)
    table = _read_json(pa.py_buffer(blob), _ADDED_OPTIONS)
    codes = np.searchsorted(order, keys)
    if len(keys) and (codes.max() >= len(order) or not np.array_equal(order[codes], keys)):
        raise ValueError("an enrichment key without its suffix")
    indices = pa.array(codes.astype(np.int32))
    return pa.table(
        [
            pa.DictionaryArray.from_arrays(indices, column.combine_chunks())
            if name in _DICTIONARY_BUILT
            else column.take(indices)
            for name, column in zip(table.column_names, table.columns, strict=True)
        ],
        names=table.column_names,
    )


def enriched_table(
    lines: ChunkLines,
    times: np.ndarray,
    index: np.ndarray,
    keys: Optional[np.ndarray] = None,
    suffixes: Optional[dict[int, bytes]] = None,
    transactions: Optional[bytes] = None,
) -> pa.Table:
    """The enriched-zone table of a chunk's valid transactions, typed columns.

    With ``keys``/``suffixes``: own fields from the valid lines, added ones
    from the suffixes (a third less to parse than the scored JSONL); else
    ``transactions`` is read whole.
    """
    if keys is not None and suffixes is not None:
        columns = [*_own_fields(lines, index).columns, *_added_fields(keys, suffixes).columns]
    else:
        blob = transactions or b""
        try:
            events = _read_json(pa.py_buffer(blob), _READ_OPTIONS)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            events = _events_line_by_line([line for line in blob.splitlines() if line], _EVENT_FIELDS)
        columns = [
            column.dictionary_encode() if name in _DICTIONARY_BUILT else column
            for name, column in zip(events.column_names, events.columns, strict=True)
        ]
    if len(columns[0]) != len(index):
        raise ValueError(f"{len(columns[0])} transaction lines for {len(index)} valid events in {lines.part}")
    status = pc.utf8_upper(pc.utf8_trim_whitespace(columns[_EVENT_FIELDS.names.index("payment_status")]))
    return pa.table(
        [
            *columns,
            _times_column(times),
            pc.is_in(status, value_set=_FAIL_SET),
            _constant(lines.part, len(index)),
            lines.positions_column(index),
        ],
        schema=ENRICHED_BUILT,
    )


def _events_line_by_line(lines: list[bytes], schema: pa.Schema) -> pa.Table:
    """The strict reader's columns for lines it refused: per line, the same types."""
    names = schema.names
    rows = []
    for line in lines:
        event = orjson.loads(line)
        row: dict[str, Any] = {}
        for name in names:
            value = event.get(name)
            if value is None:
                row[name] = None
            elif name == "amount":
                exact = Decimal(repr(value)) if type(value) is float else Decimal(value)
                row[name] = exact.quantize(_NANO, rounding=ROUND_HALF_EVEN)
            elif name == "fraud_score":
                row[name] = int(value)
            elif name == "processed_at":
                row[name] = datetime.fromisoformat(value)
            elif name == "over_merchant_limit":
                row[name] = value is True
            else:
                row[name] = str(value)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _extra(record: dict[str, Any], known: frozenset[str]) -> Optional[str]:
    extra = {k: v for k, v in record.items() if k not in known}
    return orjson.dumps(extra, default=str).decode() if extra else None


# Read once: ``Schema.names`` builds a new list at every call, and these run once per alert.
_ALERT_FIELDS = tuple(ALERTS_SCHEMA.names[:-2])
_ALERT_NAMES = frozenset(ALERTS_SCHEMA.names)
_METRIC_FIELDS = tuple(METRICS_SCHEMA.names[:-1])
_METRIC_NAMES = frozenset(METRICS_SCHEMA.names)


def alert_record(alert: dict[str, Any]) -> tuple[str, float, dict[str, Any]]:
    """``(id, event time, row)`` of one alert for :class:`~connectors.lake.buckets.Buckets`."""
    t = _epoch(alert["event_time"])
    row = {name: alert.get(name) for name in _ALERT_FIELDS}
    row["event_time"] = int(t * 1000)
    for name in ("key", "region", "user_id", "transaction_id"):
        if row[name] is not None:
            row[name] = str(row[name])
    row["details"] = orjson.dumps(alert.get("details") or {}, default=str).decode()
    row["extra"] = _extra(alert, _ALERT_NAMES)
    return str(alert["alert_id"]), t, row


def metric_records(minute: list[dict[str, Any]]) -> list[tuple[str, float, dict[str, Any]]]:
    """``(id, event time, row)`` of each region's record of one minute."""
    out = []
    for record in minute:
        start = _epoch(record["window_start"])
        row = {name: record.get(name) for name in _METRIC_FIELDS}
        row["window_start"] = int(start * 1000)
        row["window_end"] = int(_epoch(record["window_end"]) * 1000)
        row["extra"] = _extra(record, _METRIC_NAMES)
        out.append((f"{record['region']}|{record['window_start']}", start, row))
    return out


SCHEMAS = {"alerts": ALERTS_SCHEMA, "metrics": METRICS_SCHEMA}


def rows_table(zone: str, rows: list[dict[str, Any]]) -> pa.Table:
    """An alerts/metrics bucket's rows as a table (timestamps as epoch millis)."""
    schema = SCHEMAS[zone]
    columns = []
    for field in schema:
        values = [row[field.name] for row in rows]
        if field.type == UTC_MS:
            columns.append(pa.array(values, pa.int64()).cast(UTC_MS))
        else:
            columns.append(pa.array(values, field.type))
    return pa.table(columns, schema=schema)


#: Columns worth a Parquet dictionary (few distinct values). Trying one on a column of
#: distinct values (ids, lines) costs CPU and then falls back anyway: measured here, the raw
#: zone encoded in a third of the CPU and 40 % smaller without it.
_DICTIONARY_COLUMNS = frozenset(
    {
        "source_partition",
        "source",
        "currency",
        "payment_status",
        "device",
        "region",
        "merchant_id",
        "merchant_name",
        "category",
        "fraud_status",
        "merchant_status",
        "rules_version",
        "type",
        "state",
        "severity",
    }
)
#: Min/max statistics only where a reader can prune with them: the times and numbers. A row group
#: holds tens of thousands of rows in arrival order, so the min/max of an id, a line or a text
#: position spans nearly every value and prunes nothing (the partitions prune by hour); computing
#: them cost the enriched zone's Parquet a fifth of its CPU (docs/performance.md).
_STATISTICS = frozenset(
    {"event_time", "received_at", "processed_at", "window_start", "window_end", "amount", "fraud_score"}
)


def parquet_options(names: Sequence[str], compression: str) -> dict[str, Any]:
    """The Parquet writer's options for a table with these columns (every lake file has them)."""
    return {
        "compression": None if compression == "none" else compression,
        "use_dictionary": [name for name in names if name in _DICTIONARY_COLUMNS],
        "write_statistics": [name for name in names if name in _STATISTICS],
        "store_schema": False,  # readers see the Parquet types: strings, not the build's dictionaries
    }


def unified_table(tables: Sequence[pa.Table]) -> pa.Table:
    """``tables`` (same schema) as one, with one dictionary per dictionary column, which Parquet keeps as is."""
    table = pa.concat_tables(tables) if len(tables) != 1 else tables[0]
    if any(pa.types.is_dictionary(field.type) for field in table.schema):
        table = table.unify_dictionaries()
    return table


def encode_parquet(tables: Sequence[pa.Table], compression: str) -> bytes:
    """One Parquet file holding ``tables`` (same schema), compressed as configured."""
    table = unified_table(tables)
    out = pa.BufferOutputStream()
    pq.write_table(table, out, **parquet_options(table.column_names, compression))
    return out.getvalue().to_pybytes()
