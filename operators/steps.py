"""The flow's composite steps: each takes streams and returns named streams.

Shaped like Bytewax's own composite operators (``bytewax.operators.windowing``
returns ``WindowOut(down, late, meta)``): a step hides its plumbing (keys for
the exchange, the stateful shell, unwrapping) and hands back a small frozen
dataclass of streams, so ``dataflow.py`` reads like its diagram. The logic
itself lives in :mod:`operators.region_windows` and :mod:`operators.users.user_risk`;
this module only adapts it to Bytewax.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from config import Settings
from operators.parse import ParsedChunk
from operators.records import TransactionBatch
from operators.reference.live import LiveReference, ReferenceHolder
from operators.region_windows import METRICS, RegionSummary, RegionWindows, RegionWindowState, migrate_state
from operators.state.snapshots import SnapshotFormat, collector_paused, unchanged
from operators.users.user_risk import (
    UserEvents,
    UserShard,
    upgrade_held_to_columns,
    upgrade_packed_rows,
    upgrade_snapshot,
    upgrade_to_columns,
)

REGIONS_KEY = "regions"
"""Every region's summary goes to one key: the windows judge all regions at once."""


@dataclass(frozen=True)
class ChunkStreams:
    """What each parsed chunk feeds, one stream per consumer."""

    dead_letters: Stream[dict]
    """Rejected and late events, one record each, keyed later by their source."""

    fraud_alerts: Stream[dict]
    """FRAUD_SUSPECTED alerts raised while scoring."""

    transactions: Stream[tuple[str, TransactionBatch]]
    """Scored transactions of each chunk that had any, keyed by partition."""

    region_summaries: Stream[tuple[str, RegionSummary]]
    """Per (region, second) counts and the partition's watermark, all under one key."""

    user_batches: Stream[ParsedChunk]
    """Every chunk: its per user-shard event lists and its partition's progress (every shard needs it)."""


@dataclass(frozen=True)
class RegionStreams:
    """What the region windows emit."""

    minutes: Stream[list[dict]]
    """One list of per-region records per closed minute (possibly empty)."""

    region_alerts: Stream[dict]
    """FAILURE_RATE and TRAFFIC_DROP incident alerts (open and resolve)."""


def _region_summary(chunk: ParsedChunk) -> tuple[str, RegionSummary]:
    return REGIONS_KEY, RegionSummary(
        chunk.part,
        chunk.n_parts,
        chunk.watermark,
        chunk.done,
        chunk.idle,
        chunk.region_counts,
        chunk.dimension_counts,
    )


def _user_batches(shard_keys: list[str], chunk: ParsedChunk) -> list[tuple[str, UserEvents]]:
    """One item per shard, events or not: every shard must see every partition's progress."""
    events = chunk.user_events
    part, n_parts, watermark, done, idle = chunk.part, chunk.n_parts, chunk.watermark, chunk.done, chunk.idle
    return [
        (key, UserEvents(part, n_parts, watermark, done, idle, events.get(shard)))
        for shard, key in enumerate(shard_keys)
    ]


def _transactions(chunk: ParsedChunk) -> Optional[tuple[str, TransactionBatch]]:
    if chunk.n_transactions == 0:
        return None
    return chunk.part, TransactionBatch(chunk.transactions, chunk.n_transactions, chunk.flagged)


@operator
def split_chunks(step_id: str, chunks: Stream[ParsedChunk]) -> ChunkStreams:
    """Hand each part of a parsed chunk to the stream that consumes it.

    Per chunk, not per event: the lists inside a chunk travel as they are
    until a sink or a stateful step takes them apart.
    """
    return ChunkStreams(
        dead_letters=op.flat_map("dead_letters", chunks, lambda chunk: chunk.dead_letters),
        fraud_alerts=op.flat_map("fraud_alerts", chunks, lambda chunk: chunk.alerts),
        transactions=op.filter_map("transaction_batches", chunks, _transactions),
        region_summaries=op.map("region_summaries", chunks, _region_summary),
        user_batches=chunks,
    )


REGION_WINDOWS_FORMAT = SnapshotFormat("region_windows", 2, {0: unchanged, 1: migrate_state})
"""Version 1 added the envelope; version 0 (unversioned) held the same :class:`RegionWindowState`.
Version 2 is the state of issue 16 (incidents with evidence and contributors, dimension
counts); :func:`~operators.region_windows.migrate_state` reads every earlier shape."""

USER_RISK_FORMAT = SnapshotFormat(
    "user_risk",
    5,
    {0: unchanged, 1: upgrade_snapshot, 2: upgrade_to_columns, 3: upgrade_held_to_columns, 4: upgrade_packed_rows},
)
"""Version 1 added the envelope around the shard's pickled bytes; version 2 is the
shard of event-time order, ``(rules, partition clock, held events)``, with no tag of its
own (:func:`~operators.users.user_risk.upgrade_snapshot` reads both earlier shapes);
version 3 holds the rules' users in columns (issue 14,
:func:`~operators.users.user_risk.upgrade_to_columns`); version 4 holds the held events
as column blocks too (:func:`~operators.users.user_risk.upgrade_held_to_columns`); version 5
packs the users' rows, only the fields that differ from a blank row
(:func:`~operators.users.user_risk.upgrade_packed_rows`)."""


def _stateful(snapshot_format: SnapshotFormat, builder: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The builder of a stateful step, marked with its snapshot format.

    The start-up check finds the format on the flow's step and loads one
    stored snapshot with it before the flow runs (``connectors/recovery_upgrade.py``).
    """
    builder.snapshot_format = snapshot_format  # type: ignore[attr-defined]
    return builder


class _RegionWindowsLogic(StatefulBatchLogic[RegionSummary, tuple[str, Any], tuple]):
    """Bytewax shell around :class:`RegionWindows` (all regions under one key)."""

    def __init__(self, settings: Settings, reference: ReferenceHolder, resume: Any) -> None:
        state: Optional[RegionWindowState] = REGION_WINDOWS_FORMAT.load(resume) if resume is not None else None
        self.reference = reference
        self.live = reference.current
        self.windows = RegionWindows(
            self.live.rules.failure_rate,
            self.live.rules.traffic_drop,
            settings.source.idle_partition_seconds,
            state,
        )

    def _rules(self) -> LiveReference:
        """The live rules for this batch (thresholds only: window lengths cannot change while running)."""
        live = self.reference.current
        if live is not self.live:
            self.live = live
            self.windows.use_rules(live.rules.failure_rate, live.rules.traffic_drop)
        return live

    def on_batch(self, values: list[RegionSummary]) -> tuple[list[tuple[str, Any]], bool]:
        live = self._rules()
        return _stamp(self.windows.add(values, time.time()), live.version), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[str, Any]], bool]:
        live = self._rules()
        return _stamp(self.windows.flush(), live.version), StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple:
        return REGION_WINDOWS_FORMAT.save(copy.deepcopy(self.windows.state))


def _stamp(items: list[tuple[str, Any]], version: str) -> list[tuple[str, Any]]:
    """Every alert carries the version of the rules that judged it."""
    for kind, item in items:
        if kind != METRICS:
            item["rules_version"] = version
    return items


def _stamp_alerts(alerts: list[dict], version: str) -> list[dict]:
    for alert in alerts:
        alert["rules_version"] = version
    return alerts


def _minutes(keyed: tuple[str, tuple[str, Any]]) -> Optional[list[dict]]:
    kind, item = keyed[1]
    return item if kind == METRICS else None


def _alerts(keyed: tuple[str, tuple[str, Any]]) -> Optional[dict]:
    kind, item = keyed[1]
    return None if kind == METRICS else item


@operator
def region_windows(
    step_id: str, summaries: Stream[tuple[str, RegionSummary]], settings: Settings, reference: ReferenceHolder
) -> RegionStreams:
    """Per-minute metrics and failure-rate / traffic-drop incidents.

    One stateful step emits both kinds in event-time order; the two unwraps
    split them the way Bytewax's ``window`` splits ``down`` from ``late``.
    """
    events = op.stateful_batch(
        "windows",
        summaries,
        _stateful(REGION_WINDOWS_FORMAT, lambda resume: _RegionWindowsLogic(settings, reference, resume)),
    )
    return RegionStreams(
        minutes=op.filter_map("minutes", events, _minutes),
        region_alerts=op.filter_map("alerts", events, _alerts),
    )


class _UserRiskLogic(StatefulBatchLogic[UserEvents, dict, tuple]):
    """Bytewax shell around :class:`UserShard`.

    A shard is kept even when it has no users: it remembers how far every
    partition has come (an ended partition never reports again), and the
    number of shards is fixed and small.
    """

    def __init__(self, settings: Settings, reference: ReferenceHolder, resume: Any) -> None:
        state: Optional[bytes] = USER_RISK_FORMAT.load(resume) if resume is not None else None
        self.reference = reference
        self.live = reference.current
        with collector_paused():  # the shard unpickles its users here
            self.shard = UserShard(self.live.rules, settings.users, settings.windows.allowed_lateness_seconds, state)

    def _rules(self) -> LiveReference:
        """The live rules for this batch (thresholds only: window lengths cannot change while running)."""
        live = self.reference.current
        if live is not self.live:
            self.live = live
            self.shard.risk.use_rules(live.rules)
        return live

    def on_batch(self, values: list[UserEvents]) -> tuple[list[dict], bool]:
        live = self._rules()
        return _stamp_alerts(self.shard.add(values, time.time()), live.version), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[dict], bool]:
        live = self._rules()
        return _stamp_alerts(self.shard.flush(), live.version), StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple:
        return USER_RISK_FORMAT.save(self.shard.snapshot())


@operator
def user_risk(
    step_id: str, chunks: Stream[ParsedChunk], settings: Settings, reference: ReferenceHolder
) -> Stream[dict]:
    """Velocity, amount-spike and impossible-travel alerts, per user shard, in event-time order."""
    shard_keys = [str(shard) for shard in range(settings.users.shards)]
    user_batches = op.flat_map("user_shards", chunks, lambda chunk: _user_batches(shard_keys, chunk))
    alerts = op.stateful_batch(
        "risk", user_batches, _stateful(USER_RISK_FORMAT, lambda resume: _UserRiskLogic(settings, reference, resume))
    )
    return op.map("drop_shard_key", alerts, lambda keyed: keyed[1])
