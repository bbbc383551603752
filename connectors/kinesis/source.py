"""Kinesis source: one Bytewax partition per shard lineage, sequence numbers in recovery.

Each partition reads a root shard and, once that shard's iterator ends
(the shard was split or merged and fully read), its children
(:mod:`connectors.kinesis.shards`). The snapshot maps every shard of the
lineage the partition has touched to its position: ``AFTER:<sequence
number>`` (the last record handed to the flow), a start spec
(``TRIM_HORIZON``, ``AT_TIMESTAMP:<epoch seconds>``) when nothing was read
yet, or ``DONE``. A restart resumes each shard with AFTER_SEQUENCE_NUMBER,
so nothing is lost or read twice.

GetRecords is limited to 5 calls/s per shard (shared by every consumer of
the shard): each shard is polled at most every ``min_poll_interval_seconds``
while behind and every ``idle_poll_interval_seconds`` once caught up, paced
through ``next_awake`` rather than by sleeping. Throttling, 5xx and
connection errors (:func:`connectors.aws.retry.classify`) back off with the
shared :class:`~connectors.aws.retry.Backoff` (capped at
``max_backoff_seconds``) per shard. botocore's own retries are off for reads
because they sleep inside the call.

Chunk size (:mod:`connectors.sources.chunk_size`): each shard's GetRecords
``Limit`` doubles from ``batch_size`` up to ``max_batch_size`` (both capped
at GetRecords' 10,000) while an answer says the shard is behind
(MillisBehindLatest > 0, or a full page), and goes back to ``batch_size`` at
the first answer that finds it caught up.

Bounded mode: a shard is done when a read returns no records with
MillisBehindLatest 0, or when a closed shard's iterator ends (its children
are then read too); the partition emits a ``done`` chunk and stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Optional

from botocore.exceptions import BotoCoreError, ClientError
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from config.settings import AwsSettings, KinesisSourceSettings
from connectors.aws.client import ClientProfile, make_client
from connectors.aws.retry import Backoff, classify, error_code
from connectors.kinesis.shards import is_closed, lineage, lineage_roots, list_all_shards
from connectors.sources.chunk_size import ChunkSize
from observability.source_lag import clear_lag, set_lag
from operators.records import RawChunk

logger = logging.getLogger(__name__)

DONE = "DONE"
_AFTER = "AFTER:"
_AT = "AT_TIMESTAMP:"
_GET_RECORDS_LIMIT = 10_000
_IDLE_EMIT_SECONDS = 1.0
#: The reader must not retry inside ``next_batch`` (it would sleep there); the source backs off per shard.
_READER = ClientProfile(attempts=1, connect_timeout=5, read_timeout=10)
#: ListShards and GetShardIterator: botocore's standard retries are fine there.
_CONTROL = ClientProfile(attempts=5, connect_timeout=5, read_timeout=10)

ShardPositions = dict[str, str]


def make_clients(aws: AwsSettings) -> tuple[Any, Any]:
    """``(reader, control)`` Kinesis clients: the reader never retries (we pace
    and back off through ``next_awake``), the control client retries ListShards
    and GetShardIterator the standard way. Credentials: the default boto3 chain."""
    return make_client("kinesis", aws, _READER), make_client("kinesis", aws, _CONTROL)


def part_name(stream: str, root: str) -> str:
    return f"kinesis:{stream}/{root}"


class KinesisSource(FixedPartitionedSource[RawChunk, ShardPositions]):
    """Reads a Kinesis stream as :class:`RawChunk` batches, one partition per lineage.

    :arg settings: ``source.kinesis`` settings.
    :arg aws: region and endpoint (``endpoint_url`` for moto / LocalStack).
    :arg batch_size: most records per GetRecords when caught up (capped at 10,000).
    :arg idle_seconds: a partition without data this long reports idle.
    :arg clients: factory of ``(reader, control)`` clients; tests replay
        recorded answers through it.
    :arg max_batch_size: most records per GetRecords while behind (capped at
        10,000; default ``batch_size``: no growth).
    """

    def __init__(
        self,
        settings: KinesisSourceSettings,
        aws: AwsSettings,
        batch_size: int,
        idle_seconds: float,
        clients: Optional[Callable[[], tuple[Any, Any]]] = None,
        max_batch_size: Optional[int] = None,
    ) -> None:
        self._settings = settings
        self._batch_size = min(batch_size, _GET_RECORDS_LIMIT)
        self._max_batch_size = max(self._batch_size, min(max_batch_size or batch_size, _GET_RECORDS_LIMIT))
        self._idle_seconds = idle_seconds
        self._clients = clients or (lambda: make_clients(aws))

    def list_parts(self) -> list[str]:
        _, control = self._clients()
        roots = lineage_roots(list_all_shards(control, self._settings.stream_name))
        return [part_name(self._settings.stream_name, r) for r in roots]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[ShardPositions]) -> KinesisPartition:
        reader, control = self._clients()
        shards = list_all_shards(control, self._settings.stream_name)
        root = for_part.rpartition("/")[2]
        return KinesisPartition(
            self._settings,
            reader,
            control,
            for_part,
            root,
            shards,
            n_parts=len(lineage_roots(shards)),
            resume_state=resume_state,
            batch_size=self._batch_size,
            idle_seconds=self._idle_seconds,
            max_batch_size=self._max_batch_size,
        )


@dataclass
class _Reader:
    """Runtime state of one shard being read (not snapshotted)."""

    shard_id: str
    sizes: ChunkSize
    iterator: Optional[str] = None
    due: float = 0.0
    failures: int = 0


class KinesisPartition(StatefulSourcePartition[RawChunk, ShardPositions]):
    """One shard lineage; its snapshot maps shard id -> position."""

    def __init__(
        self,
        settings: KinesisSourceSettings,
        reader: Any,
        control: Any,
        name: str,
        root: str,
        shards: list[dict],
        n_parts: int,
        resume_state: Optional[ShardPositions],
        batch_size: int,
        idle_seconds: float,
        max_batch_size: Optional[int] = None,
    ) -> None:
        self._s = settings
        self._backoff = Backoff(base=0.5, cap=settings.max_backoff_seconds)
        self._client = reader
        self._control = control
        self._name = name
        self._root = root
        self._n_parts = n_parts
        self._batch_size = batch_size
        self._max_batch_size = max_batch_size or batch_size
        self._idle_seconds = idle_seconds
        self._shards = lineage(root, shards)
        if root not in self._shards:
            raise ValueError(f"kinesis {settings.stream_name}: shard {root} is not in the stream's listing")
        self._bounded_done: set[str] = set()
        self._readers: dict[str, _Reader] = {}
        self._finished = False
        self._awake: Optional[datetime] = None
        self._last_data = time.monotonic()
        self._last_idle_emit = 0.0
        self._relist_due: Optional[float] = None
        self._relist_failures = 0
        self._expected_children: set[str] = set()
        self._positions: ShardPositions = dict(resume_state) if resume_state else self._initial_positions()
        if resume_state is None and settings.starting_position == "LATEST":
            # Take LATEST iterators now, so "latest" means "at start".
            for sid in self._active():
                self._readers[sid] = _Reader(sid, self._sizes(), self._get_iterator(sid, "LATEST"))
        logger.info("kinesis %s: lineage of %d shard(s), positions %s", name, len(self._shards), self._positions)

    # -- positions -----------------------------------------------------
    def _initial_positions(self) -> ShardPositions:
        start = self._s.starting_position
        if start == "TRIM_HORIZON":
            return {self._root: "TRIM_HORIZON"}
        if start == "AT_TIMESTAMP":
            assert self._s.starting_timestamp is not None, "settings refuse AT_TIMESTAMP without a timestamp"
            at = f"{_AT}{self._s.starting_timestamp.timestamp()}"
            return {sid: at for sid in self._shards}
        # LATEST: closed shards hold only the past; resume from the start instant.
        at = f"{_AT}{time.time()}"
        return {sid: (DONE if is_closed(s) else at) for sid, s in self._shards.items()}

    def _parents_done(self, shard: dict) -> bool:
        for key in ("ParentShardId", "AdjacentParentShardId"):
            parent = shard.get(key)
            if parent in self._shards and self._positions.get(parent) != DONE:
                return False
        return True

    def _active(self) -> list[str]:
        """Shards readable now: not done, every parent in this lineage done."""
        return [
            sid
            for sid, shard in sorted(self._shards.items())
            if self._positions.get(sid) != DONE and sid not in self._bounded_done and self._parents_done(shard)
        ]

    def _get_iterator(self, sid: str, override: Optional[str] = None) -> str:
        position = override or self._positions.get(sid, "TRIM_HORIZON")
        args: dict[str, Any] = {"StreamName": self._s.stream_name, "ShardId": sid}
        if position.startswith(_AFTER):
            args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=position[len(_AFTER) :])
        elif position.startswith(_AT):
            args.update(
                ShardIteratorType="AT_TIMESTAMP", Timestamp=datetime.fromtimestamp(float(position[len(_AT) :]), UTC)
            )
        else:
            args.update(ShardIteratorType=position)
        return self._control.get_shard_iterator(**args)["ShardIterator"]

    # -- reading -------------------------------------------------------
    def next_batch(self) -> list[RawChunk]:
        if self._finished:
            raise StopIteration()
        now = time.monotonic()
        if self._relist_due is not None and now >= self._relist_due:
            self._discover_children()
        active = self._active()
        chunks: list[RawChunk] = []
        for sid in active:
            reader = self._readers.get(sid) or self._readers.setdefault(sid, _Reader(sid, self._sizes()))
            if reader.due <= now:
                chunk = self._read(reader, now)
                if chunk is not None:
                    chunks.append(chunk)
        still_active = set(self._active())
        for sid in list(self._readers):
            if sid not in still_active:
                del self._readers[sid]
        for sid in still_active - set(self._readers):  # children just adopted
            self._readers[sid] = _Reader(sid, self._sizes())
        if not self._readers and self._relist_due is None:
            self._finished = True
            logger.info("kinesis %s: lineage finished", self._name)
            return chunks + [RawChunk(self._name, self._n_parts, [], self._root, done=True)]
        if chunks:
            self._last_data = now
        elif now - self._last_data >= self._idle_seconds and now - self._last_idle_emit >= _IDLE_EMIT_SECONDS:
            self._last_idle_emit = now
            chunks.append(RawChunk(self._name, self._n_parts, [], self._root, idle=True))
        wake = min([r.due for r in self._readers.values()] + ([self._relist_due] if self._relist_due else []))
        delay = wake - time.monotonic()
        self._awake = datetime.now(UTC) + timedelta(seconds=delay) if delay > 0 else None
        return chunks

    def _sizes(self) -> ChunkSize:
        return ChunkSize(self._batch_size, self._max_batch_size)

    def _read(self, reader: _Reader, now: float) -> Optional[RawChunk]:
        sid = reader.shard_id
        try:
            if reader.iterator is None:
                reader.iterator = self._get_iterator(sid)
            asked = reader.sizes.size
            response = self._client.get_records(ShardIterator=reader.iterator, Limit=asked)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ExpiredIteratorException":
                reader.iterator = None
                return None
            if not classify(exc).transient:
                raise
            self._back_off(reader, now, code)
            return None
        except BotoCoreError as exc:  # connection reset, timeout: transient
            self._back_off(reader, now, type(exc).__name__)
            return None
        reader.failures = 0
        records = response.get("Records", [])
        behind = response.get("MillisBehindLatest")
        if behind is not None:
            set_lag("kinesis", sid, behind)
        reader.iterator = response.get("NextShardIterator")
        chunk = None
        if records:
            positions = [r["SequenceNumber"] for r in records]
            chunk = RawChunk(self._name, self._n_parts, [r["Data"] for r in records], sid, 0, positions)
            self._positions[sid] = _AFTER + positions[-1]
        caught_up = not records or behind == 0
        reader.sizes.update(behind=len(records) >= asked or (behind is not None and behind > 0))
        interval = self._s.idle_poll_interval_seconds if caught_up else self._s.min_poll_interval_seconds
        reader.due = now + max(interval, self._s.min_poll_interval_seconds)
        if reader.iterator is None:
            children = response.get("ChildShards") or []
            if children or self._listed_closed(sid):
                self._shard_ended(sid, children)
            else:
                # No next iterator, yet the shard is not closed (an answer cut
                # short in an outage): reopen it later from the last position.
                self._back_off(reader, now, "GetRecords answered without a next iterator")
        elif self._s.bounded and not records and behind == 0:
            self._bounded_done.add(sid)
        return chunk

    def _back_off(self, reader: _Reader, now: float, why: str) -> None:
        reader.failures += 1
        delay = self._backoff.delay(reader.failures)
        reader.due = now + delay
        logger.warning("kinesis %s: %s, retrying in %.1fs", reader.shard_id, why, delay)

    def _listed_closed(self, sid: str) -> bool:
        """ListShards says the shard is closed; False when it cannot be asked now."""
        try:
            shards = list_all_shards(self._control, self._s.stream_name)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and not classify(exc).transient:
                raise
            return False
        return any(s["ShardId"] == sid and is_closed(s) for s in shards)

    def _shard_ended(self, sid: str, child_shards: list[dict]) -> None:
        """A closed shard is fully read: mark it done and adopt its children."""
        self._positions[sid] = DONE
        clear_lag("kinesis", sid)
        logger.info(
            "kinesis %s: shard %s ended; children %s", self._name, sid, [c.get("ShardId") for c in child_shards]
        )
        self._expected_children = {c["ShardId"] for c in child_shards}
        self._discover_children()

    def _discover_children(self) -> None:
        """Add shards whose ``ParentShardId`` is in this lineage; re-list later
        when a child that GetRecords announced is not listed yet, or when
        Kinesis cannot be reached (an outage: the children wait, nothing is lost)."""
        try:
            shards = list_all_shards(self._control, self._s.stream_name)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and not classify(exc).transient:
                raise
            self._relist_failures += 1
            delay = self._backoff.delay(self._relist_failures)
            logger.warning("kinesis %s: listing shards failed (%s), retrying in %.1fs", self._name, exc, delay)
            self._relist_due = time.monotonic() + delay
            return
        self._relist_failures = 0
        by_id = {s["ShardId"]: s for s in shards}
        for sid, shard in by_id.items():
            if shard.get("ParentShardId") in self._shards and sid not in self._shards:
                self._shards[sid] = shard
        missing = self._expected_children - set(by_id)
        self._relist_due = time.monotonic() + 1.0 if missing else None

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> ShardPositions:
        return dict(self._positions)

    def close(self) -> None:
        for sid in self._shards:
            clear_lag("kinesis", sid)
