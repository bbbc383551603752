"""The lake sink: raw, enriched, alerts and metrics zones as partitioned Parquet.

One Bytewax sink takes three kinds of item (``(key, item)`` pairs, merged in
the flow): a :class:`~operators.records.LakeChunk` per parsed chunk (raw and
enriched zones, keyed by source partition), alert records (keyed by alert
key) and per-minute metric lists (keyed by window start).

Exactly once across crashes:

- raw/enriched files are cut by :class:`~connectors.lake.rolling.Roller`
  (row-count-independent, event-time rules) and named after their source
  partition and first/last position; alert/metric files by
  :class:`~connectors.lake.buckets.Buckets` (event-time buckets, one row per
  id). A replay therefore writes the same objects again.
- the partition's snapshot holds its open files (rows not yet in a finished
  file) and the finished files not yet acknowledged by the store; both are
  written again after a resume, and the source replays only what came after
  the snapshot.
- raw lines without event time go under the hour they were received, which a
  replay may not repeat: a resume first removes the raw objects written after
  the snapshot (:func:`remove_replayed_raw`), and the replay writes them again.
- objects become visible only when complete (see :mod:`connectors.lake.store`).

Finished files go through the same :class:`~connectors.sinks.delivery.Delivery`
as every AWS sink (background upload, ``sinks.retry`` backoff, transient vs
permanent errors, ``paywatch_sink_*{sink="lake"}`` metrics). Its buffer counts
files (``sinks.lake.max_pending_files``): when S3 is slow the flow blocks for
``sinks.retry.block_seconds`` and then spills whole files to the dead-letter
output (the Parquet bytes, base64, with their key), so nothing is lost.
At the end of a bounded input every open file is finished and uploaded.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Union

import orjson
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from config.settings import Settings
from connectors.aws.retry import classify
from connectors.lake import layout
from connectors.lake.buckets import BucketFile, Buckets, BucketState
from connectors.lake.encoder import FileEncoder, encode_segments
from connectors.lake.rolling import FinishedFile, Roller, RollerState, Segment
from connectors.lake.store import LocalStore, ObjectStore, S3Store
from connectors.lake.tables import (
    ChunkLines,
    EnrichedSource,
    RawSource,
    TableSource,
    alert_record,
    encode_parquet,
    enriched_rows,
    metric_records,
    raw_rows,
    rows_table,
)
from connectors.sinks.dead_letter import DeadLetterWriter, sink_dead_letter
from connectors.sinks.delivery import BAD_ITEM, Delivery, SendResult, delivery_policy
from operators.events.timestamps import TimestampParser
from operators.records import LakeChunk
from operators.state.snapshots import SnapshotFormat, unchanged

logger = logging.getLogger(__name__)

# (rollers by (zone, source partition), buckets by zone, finished files not yet stored,
#  last raw position seen per source partition, wall clock of the snapshot)
LakeState = tuple[dict[tuple[str, str], RollerState], dict[str, BucketState], list, dict[str, Any], Optional[float]]


def _add_seen_positions(state: tuple) -> tuple:
    """Version 1 kept no positions nor snapshot time: resume without the receive-hour clean-up."""
    return (*state, {}, None)


class Compressed:
    """A state that is zstd-compressed when (and only when) Bytewax pickles it.

    Open files are raw JSON lines, which compress several times, and Bytewax
    writes the whole state at every snapshot. Without recovery Bytewax still
    calls ``snapshot()`` at every epoch but never pickles the result, so the
    compression costs nothing there. Unpickling gives the plain state back.
    """

    __slots__ = ("state",)

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self) -> tuple:
        data = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        return (_decompressed, (len(data), pa.compress(data, codec="zstd", asbytes=True)))


def _decompressed(size: int, data: bytes) -> tuple:
    return pickle.loads(pa.decompress(data, decompressed_size=size, codec="zstd", asbytes=True))


def _plain(state: Any) -> LakeState:
    """The state of a loaded snapshot (a :class:`Compressed` that was never pickled, in tests)."""
    return state.state if isinstance(state, Compressed) else state


LAKE_FORMAT = SnapshotFormat("lake", 3, migrations={1: _add_seen_positions, 2: unchanged})
"""Open files, buckets and undelivered files of a partition; v3 is compressed when pickled
(:class:`Compressed`), which unpickles to the v2 state (operators/state/snapshots.py)."""


def _wall_clock() -> float:
    """The wall clock of snapshots and resumes (a function, so tests can move it)."""
    return time.time()


#: Rows per Parquet row group when no setting is at hand (the default of ``sinks.lake.row_group_rows``).
DEFAULT_ROW_GROUP_ROWS = 65_536

#: How far back a resume looks for receive-hour objects written after the snapshot.
CLEANUP_MAX_HOURS = 7 * 24


class LakeFile:
    """One finished file: its key, where its rows are, and its encoding if it had one while open.

    A raw/enriched file was encoded a row group at a time while it was open
    (:class:`~connectors.lake.encoder.FileEncoder`, on the partition's
    encoding thread); the sender waits for its last row group and footer.
    Other files (alerts, metrics, and finished files restored from a
    snapshot, which keeps rows, not bytes) are built and encoded on the
    sender thread. Arrow releases the GIL in both, so the flow's worker
    thread only decides where files end.
    """

    __slots__ = ("key", "zone", "rows", "segments", "encoder", "_data")

    def __init__(
        self, key: str, zone: str, rows: int, segments: tuple[Segment, ...], encoder: Optional[FileEncoder] = None
    ) -> None:
        self.key = key
        self.zone = zone
        self.rows = rows
        self.segments = segments
        self.encoder = encoder
        self._data: Optional[bytes] = None

    def tables(self) -> list[pa.Table]:
        return [
            source.table() if index is None else source.table().take(pa.array(index)) for source, index in self.segments
        ]

    def encoded(self, compression: str, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS) -> bytes:
        """The Parquet bytes: the open file's encoding, or the same row groups encoded now."""
        if self._data is None:
            if self.encoder is not None:
                self._data = self.encoder.result()
                self.encoder = None
            else:
                self._data = encode_segments(self.segments, compression, row_group_rows)
        return self._data

    def __getstate__(self) -> tuple:
        return (self.key, self.zone, self.rows, self.segments)

    def __setstate__(self, state: tuple) -> None:
        self.key, self.zone, self.rows, self.segments = state
        self.encoder = None
        self._data = None

    def dead_letter_form(self) -> dict[str, Any]:
        """What the dead-letter output keeps of a file it could not store: all of it.

        The Parquet bytes; if the rows cannot even be encoded, the lines they
        came from (base64, one per row), so a bad chunk loses nothing either.
        """
        form: dict[str, Any] = {"key": self.key, "zone": self.zone, "rows": self.rows}
        try:
            if self._data is not None:
                data = self._data
            elif self.encoder is not None:
                data = self.encoder.result()
            else:
                data = encode_parquet(self.tables(), "zstd")
            form["parquet_base64"] = base64.b64encode(data).decode()
        except Exception as exc:  # noqa: BLE001 - the dead letter must still hold the rows
            form["error"] = str(exc)
            form["lines_base64"] = [base64.b64encode(line).decode() for line in _source_lines(self.segments)]
        return form


def _source_lines(segments: tuple[Segment, ...]) -> list[bytes]:
    lines: list[bytes] = []
    for source, index in segments:
        if isinstance(source, RawSource):
            rows = source.lines.line_list()
        elif isinstance(source, EnrichedSource):
            rows = source.lines.line_list(source.index)
        else:
            rows = [orjson.dumps(row, default=str) for row in source.table().to_pylist()]
        lines.extend(rows if index is None else [rows[int(i)] for i in index])
    return lines


def _position_file(done: FinishedFile) -> LakeFile:
    return LakeFile(
        layout.position_file(done.zone, done.hour, done.part, done.first, done.last),
        done.zone,
        done.rows,
        done.segments,
        done.encoding if isinstance(done.encoding, FileEncoder) else None,
    )


def _bucket_file(done: BucketFile, sink_part: str) -> LakeFile:
    table = rows_table(done.zone, done.rows)
    return LakeFile(
        layout.bucket_file(done.zone, done.start, sink_part, done.suffix),
        done.zone,
        len(done.rows),
        ((TableSource(table), None),),
    )


class _LakePartition(StatefulSinkPartition[Any, tuple]):
    def __init__(
        self,
        name: str,
        settings: Settings,
        delivery: Delivery,
        dead_letters: DeadLetterWriter,
        state: Optional[LakeState],
    ) -> None:
        lake = settings.sinks.lake
        self._name = name
        self._compression = lake.compression
        self._row_group_rows = lake.row_group_rows
        self._zones: set[str] = set(lake.zones)
        # One thread per zone, so each file's row groups are written in order (Arrow releases the GIL
        # there), and the raw and enriched files' last row groups are encoded side by side when the
        # input ends, where the flow waits for both (one thread did them one after the other).
        self._encoding = {
            zone: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"paywatch-lake-encode-{zone}-{name}")
            for zone in (layout.RAW, layout.ENRICHED)
            if zone in self._zones
        }
        self._target = int(lake.target_file_mb * 1024 * 1024)
        self._max_age = lake.max_file_seconds
        self._max_pending = lake.max_pending_files
        self._close_timeout = settings.sinks.retry.close_timeout_seconds
        self.delivery = delivery
        self._dead_letters = dead_letters
        self._timestamps = TimestampParser(settings.validation.min_year, settings.validation.max_year)
        self._max_future = settings.validation.max_future_seconds
        rollers, buckets = (state[0], state[1]) if state is not None else ({}, {})
        self._seen: dict[str, Any] = dict(state[3]) if state is not None else {}
        self._rollers = {
            key: Roller(key[0], key[1], self._target, self._max_age, roller, self._encoder(key[0]))
            for key, roller in rollers.items()
        }
        self._buckets: dict[str, Buckets] = {
            zone: Buckets(zone, int(self._max_age), buckets.get(zone))
            for zone in (layout.ALERTS, layout.METRICS)
            if zone in self._zones
        }

    def _roller(self, zone: str, part: str) -> Roller:
        roller = self._rollers.get((zone, part))
        if roller is None:
            roller = self._rollers[(zone, part)] = Roller(
                zone, part, self._target, self._max_age, None, self._encoder(zone)
            )
        return roller

    def _encoder(self, zone: str) -> Callable[[], FileEncoder]:
        """What makes the encoder of each file a zone's roller opens (on the zone's encoding thread)."""
        executor = self._encoding.get(zone)
        return lambda: FileEncoder(self._compression, self._row_group_rows, executor)

    def _chunk_files(self, chunk: LakeChunk) -> list[LakeFile]:
        files: list[FinishedFile] = []
        # The lines as Arrow buffers, shared by both zones: the chunk's Python objects go now.
        lines = ChunkLines(chunk) if chunk.lines else None
        if layout.RAW in self._zones and lines is not None:
            self._seen[chunk.part] = chunk.position(len(chunk.lines) - 1)
            rows = raw_rows(chunk, self._timestamps, self._max_future, lines)
            files += self._roller(layout.RAW, chunk.part).add(
                rows.source, rows.hours, rows.clock, rows.sizes, chunk.position
            )
        if layout.ENRICHED in self._zones and len(chunk.valid) and lines is not None:
            rows = enriched_rows(chunk, lines)
            index = rows.index
            files += self._roller(layout.ENRICHED, chunk.part).add(
                rows.source, rows.hours, rows.clock, rows.sizes, lambda i: chunk.position(int(index[i]))
            )
        return [_position_file(done) for done in files]

    def write_batch(self, values: list[Union[LakeChunk, dict, list]]) -> None:
        files: list[LakeFile] = []
        alerts: list = []
        minutes: list = []
        minute_end = float("-inf")
        for value in values:
            try:
                if type(value) is LakeChunk:
                    files += self._chunk_files(value)
                elif isinstance(value, dict):
                    if layout.ALERTS in self._buckets:
                        alerts.append(alert_record(value))
                elif isinstance(value, list):
                    records = metric_records(value)
                    minute_end = max([minute_end, *(row["window_end"] / 1000 for _, _, row in records)])
                    if layout.METRICS in self._buckets:
                        minutes += records
            except Exception as exc:  # noqa: BLE001 - a bad item must not stop the flow
                failure = classify(exc)
                logger.error("%s: cannot convert an item (%s); dead-lettered", self._name, failure.describe())
                self._dead_letters.write([sink_dead_letter(self._name, "", BAD_ITEM, failure, _describe(value))])
        if alerts:
            files += [_bucket_file(done, self._name) for done in self._buckets[layout.ALERTS].add(alerts)]
        if minute_end > float("-inf") and layout.ALERTS in self._buckets:
            # Closed minutes are event-time progress for the alerts too: a quiet stretch closes their bucket.
            files += [_bucket_file(d, self._name) for d in self._buckets[layout.ALERTS].advance(minute_end)]
        if minutes:
            files += [_bucket_file(done, self._name) for done in self._buckets[layout.METRICS].add(minutes)]
        self._submit(files)

    def _submit(self, files: list[LakeFile], closing: bool = False) -> None:
        # One at a time: a batch can finish more files than the buffer holds,
        # and each must wait for room on its own (then spill, like any AWS sink).
        # At the end of the input every open file is finished at once: there is
        # no flow left to protect, so wait for room up to close_timeout_seconds.
        for file in files:
            if closing and len(self.delivery.snapshot()) >= self._max_pending:
                self.delivery.flush(self._close_timeout)
            self.delivery.submit([file])

    def snapshot(self) -> tuple:
        return LAKE_FORMAT.save(
            Compressed(
                (
                    {key: roller.snapshot() for key, roller in self._rollers.items()},
                    {zone: buckets.snapshot() for zone, buckets in self._buckets.items()},
                    self.delivery.snapshot(),
                    dict(self._seen),
                    _wall_clock(),
                )
            )
        )

    def close(self) -> None:
        files = [_position_file(done) for roller in self._rollers.values() for done in roller.flush()]
        for buckets in self._buckets.values():
            files += [_bucket_file(done, self._name) for done in buckets.flush()]
        self._submit(files, closing=True)
        try:
            self.delivery.close()
        finally:
            for executor in self._encoding.values():
                executor.shutdown(wait=True)


def _describe(value: Any) -> Any:
    if type(value) is LakeChunk:
        return {"part": value.part, "first_position": value.first_position, "lines": len(value.lines)}
    return value


def remove_replayed_raw(store: ObjectStore, seen: dict[str, Any], snapshot_wall: float, now: float) -> int:
    """Delete the raw objects written after the snapshot in the hours a line could have been received.

    A raw line without a readable event time goes under the hour it was
    received, and a replay receives it again, maybe in a later hour: the
    object written before the crash would then hold it a second time. Every
    raw object that holds a row past the snapshot's position (``seen``) was
    written after the snapshot and will be written again by the replay, so
    those in the hours between the snapshot and now are removed first.
    Returns how many were removed; a store that cannot be listed is logged
    and skipped (the lines stay, possibly twice: docs/lake.md).
    """
    first_hour = int(snapshot_wall // 3600) - 1  # one hour of slack for clocks of other processes
    last_hour = int(now // 3600)
    hours = range(max(first_hour, last_hour - CLEANUP_MAX_HOURS), last_hour + 1)
    removed = 0
    try:
        for part, position in seen.items():
            if not str(position).lstrip("-").isdigit():
                continue
            prefix_name = layout.safe_name(part) + "-"
            for hour in hours:
                folder = layout.hour_partition(layout.RAW, hour) + "/" + prefix_name
                stale = [key for key in store.list_keys(folder) if _last_position(key) > int(position)]
                if stale:
                    store.delete(stale)
                    removed += len(stale)
    except Exception as exc:  # noqa: BLE001 - a clean-up that fails must not stop the start
        logger.warning("lake: could not remove raw objects written after the snapshot (%s)", classify(exc).describe())
    if removed:
        logger.info("lake: removed %d raw object(s) written after the snapshot; the replay writes them again", removed)
    return removed


def _last_position(key: str) -> int:
    last = key.rsplit("/", 1)[-1].removesuffix(".parquet").rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else -1


_POOLS = {"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool, "system": pa.system_memory_pool}


def use_memory_pool(name: str) -> None:
    """Make ``sinks.lake.memory_pool`` Arrow's default allocator (process-wide: only the lake uses Arrow).

    Why: every chunk's lines are copied into fresh Arrow memory (open files
    keep them), and with pyarrow's default, mimalloc, that copy on the worker
    thread cost 0.16-0.43 us per line in the flow, with jemalloc 0.11-0.15
    (docs/performance.md, "Session 6"). Buffers
    allocated before keep the pool they came from. A pyarrow built without
    the pool keeps its default, with a warning.
    """
    try:
        pool = _POOLS[name]()
    except NotImplementedError as exc:
        logger.warning("lake: Arrow memory pool %r unavailable (%s); sinks.lake.memory_pool ignored", name, exc)
        return
    pa.set_memory_pool(pool)


def build_store(settings: Settings) -> ObjectStore:
    """The store of ``sinks.lake.uri``: S3 (shared AWS client factory) or a local directory."""
    location = layout.parse_uri(settings.sinks.lake.uri or "")
    if location.is_s3:
        from connectors.aws.client import aws_client

        return S3Store(aws_client("s3", settings), location)
    return LocalStore(location)


class LakeSink(FixedPartitionedSink[Any, tuple]):
    """``sinks.lake``: Parquet files on S3 or a local directory (see the module docstring).

    Fixed partitions (``sinks.lake.partitions``) because open files are resume
    state; raw/enriched file names do not depend on the partition count.
    """

    # The enriched zone is read from the lines and the parse step's enrichment keys, not the JSONL blob
    # (the parse step hands the lake its keys whether or not it builds the blob).
    wants_transaction_lines = False
    snapshot_format = LAKE_FORMAT

    def __init__(self, settings: Settings, dead_letters: DeadLetterWriter) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.deliveries: list[Delivery] = []
        use_memory_pool(settings.sinks.lake.memory_pool)

    def list_parts(self) -> list[str]:
        return [f"lake-{i}" for i in range(self.settings.sinks.lake.partitions)]

    def build_part(self, step_id: str, for_part: str, resume: Optional[tuple]) -> _LakePartition:
        resume_state: Optional[LakeState] = _plain(LAKE_FORMAT.load(resume)) if resume is not None else None
        lake = self.settings.sinks.lake
        store = build_store(self.settings)
        compression = lake.compression
        row_group_rows = lake.row_group_rows

        def send(files: list[LakeFile]) -> SendResult:
            for file in files:
                store.put(file.key, file.encoded(compression, row_group_rows))
            return SendResult()

        policy = dataclasses.replace(
            delivery_policy(self.settings.sinks.retry), max_buffer=lake.max_pending_files, linger_seconds=0.0
        )
        delivery = Delivery(
            for_part,
            send,
            lambda pending: 1,
            self.dead_letters,
            policy,
            resource=store.resource,
            setting="sinks.lake.uri",
            pending=resume_state[2] if resume_state is not None else None,
            buffer_setting="sinks.lake.max_pending_files",
        )
        if resume_state is not None and resume_state[4] is not None and layout.RAW in lake.zones:
            remove_replayed_raw(store, resume_state[3], resume_state[4], _wall_clock())
        self.deliveries.append(delivery)
        return _LakePartition(for_part, self.settings, delivery, self.dead_letters, resume_state)
