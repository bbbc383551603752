"""Region windows on event time: per-minute metrics and region incidents.

Input is tiny: per parsed chunk, counts per (region, second), the
per-dimension counts per (region, hop, field, value) that explain failures,
and that partition's watermark. All regions live in one keyed state so that
one watermark, the minimum over every source partition, closes every
region's windows, including regions that have gone silent (their silence is
news).

Why not Bytewax's ``EventClock``: it keeps a watermark per key that also
advances with system time, so in a full-speed replay of several partitions
one partition's events are declared late because another ran ahead, and a
silent key's windows only close when wall time passes. Both break the
guarantees in docs/architecture.md; this module implements the Flink rule
(watermark = minimum over inputs) directly over per-second buckets.

Windows:
- tumbling 60 s windows aligned to UTC minutes -> one metrics record per
  known region for every minute in which any region had events (a silent
  region reads 0 beside the others; a minute nobody paid in is skipped);
- sliding windows of ``window_seconds`` ending on multiples of
  ``hop_seconds`` (UTC) -> FAILURE_RATE and TRAFFIC_DROP incidents, one
  OPEN and one RESOLVED each (docs/detection.md).

Every window is judged in event-time order, whether the watermark closes
windows one at a time or a slow partition releases hours of them at once:
the verdicts are a function of the data, not of how it was batched. A run of
windows with no data at all (a watermark that jumps) costs O(1) per region,
not one step per window: only the traffic-drop baseline changes there, and
it changes in closed form.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from config.settings import FailureRateRule, TrafficDropRule
from operators import alerts, incident_stats
from operators.events.timestamps import iso_utc

MINUTE = 60
METRICS = "metrics"
ALERT = "alert"
# Version of the pickled RegionWindowState; older snapshots are migrated in
# :func:`migrate_state`.
STATE_VERSION = 4
# Chunk counts with at most this many entries are merged entry by entry.
_FEW = 64


@dataclass(slots=True)
class RegionSummary:
    """What the region windows need from one parsed chunk.

    :ivar region_counts: ``{(region, second): [count, failures, fraud_suspected, review_required]}``.
    :ivar dimension_counts: ``{(region, hop_start): {field: (events, failures)}}``,
        ``Counter`` objects keyed by value (operators/dimension_counts.py).
    """

    part: str
    n_parts: int
    watermark: Optional[float]
    done: bool
    idle: bool
    region_counts: dict
    dimension_counts: dict = field(default_factory=dict)


@dataclass
class _Partition:
    watermark: Optional[float] = None
    done: bool = False
    idle: bool = False
    last_wall: float = 0.0


@dataclass
class _RegionState:
    first_second: int
    baseline: float = 0.0
    baseline_windows: int = 0
    # The latest window with enough events: its end, events and failures.
    last_end: Optional[int] = None
    last_count: int = 0
    last_failures: int = 0


@dataclass
class _FailureIncident:
    """An open FAILURE_RATE incident: what its RESOLVED record must say."""

    incident_id: str
    opened: int
    peak: float
    contributors: list
    under: int = 0  # consecutive windows at or under the threshold


@dataclass
class RegionWindowState:
    """Everything that must survive a restart (pickled in snapshots)."""

    partitions: dict = field(default_factory=dict)
    n_parts: int = 0
    # region -> {second: [count, failures, fraud_suspected, review_required]}
    buckets: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)
    # (alert type, region) -> TRAFFIC_DROP incident id, or a _FailureIncident
    incidents: dict = field(default_factory=dict)
    watermark: float = -math.inf
    slide_end: Optional[int] = None
    minute_end: Optional[int] = None
    # region -> {hop start: {(field, value): [events, failures]}}
    dims: dict = field(default_factory=dict)
    # region -> {hop start: fields whose values were cut to the top ones}
    dims_cut: dict = field(default_factory=dict)
    # hop starts below this are complete and compacted
    sealed: int = -(2**62)
    # (region, hop start) -> {field: (events, failures) Counters by value}: hops not sealed yet
    pending: dict = field(default_factory=dict)
    version: int = STATE_VERSION


def migrate_state(state: Any) -> RegionWindowState:
    """Bring a snapshot of an older release up to :data:`STATE_VERSION`.

    Version 1 (before incidents carried evidence and contributors) held each
    open incident as its id string and had no dimension counts: an open
    FAILURE_RATE incident carries on with an unknown peak and no contributors.
    Version 2 had no ``pending`` counts (it merged them as they came);
    version 3 kept them per field, keyed ``(region, hop, value)``.
    """
    # Look in the instance: the class attribute holds the current version.
    if vars(state).get("version", 1) >= STATE_VERSION:
        return state
    defaults: tuple[tuple[str, Any], ...] = (("dims", {}), ("dims_cut", {}), ("sealed", -(2**62)), ("pending", {}))
    for name, default in defaults:
        if name not in vars(state):
            setattr(state, name, default)
    for info in state.regions.values():
        for name, default in (("last_end", None), ("last_count", 0), ("last_failures", 0)):
            if name not in vars(info):
                setattr(info, name, default)
    for key, value in list(state.incidents.items()):
        if key[0] == alerts.FAILURE_RATE and isinstance(value, str):
            opened = state.slide_end or 0
            state.incidents[key] = _FailureIncident(value, opened, 0.0, [])
    if vars(state).get("version", 1) == 3:
        pending: dict = {}
        for name, (seen, fails) in state.pending.items():
            for (region, hop_start, value), events in seen.items():
                pair = pending.setdefault((region, hop_start), {}).setdefault(name, (Counter(), Counter()))
                pair[0][value] += events
                if fails.get((region, hop_start, value)):
                    pair[1][value] += fails[(region, hop_start, value)]
        state.pending = pending
    state.version = STATE_VERSION
    return state


class RegionWindows:
    """Pure logic of the region windows; Bytewax wiring is in ``dataflow.py``.

    Every method returns a list of ``(kind, item)`` where kind is
    :data:`METRICS` (a list of per-region records for one minute) or
    :data:`ALERT` (an alert record).
    """

    def __init__(
        self,
        failure_rate: FailureRateRule,
        traffic_drop: TrafficDropRule,
        idle_partition_seconds: float,
        state: Optional[RegionWindowState] = None,
    ) -> None:
        self.rule = failure_rate
        self.drop = traffic_drop
        self.idle_seconds = idle_partition_seconds
        self.state = migrate_state(state) if state is not None else RegionWindowState()
        self._alpha = 2.0 / (traffic_drop.baseline_windows + 1)
        self._z = incident_stats.z_for(failure_rate.confidence)
        self._explain_alpha = 1.0 - failure_rate.explain_confidence
        self._min_data: Optional[int] = None
        self._min_data_known = False

    def use_rules(self, failure_rate: FailureRateRule, traffic_drop: TrafficDropRule) -> None:
        """Judge the next windows by new thresholds (live rules; window and hop lengths unchanged)."""
        self.rule = failure_rate
        self.drop = traffic_drop
        self._alpha = 2.0 / (traffic_drop.baseline_windows + 1)
        self._z = incident_stats.z_for(failure_rate.confidence)
        self._explain_alpha = 1.0 - failure_rate.explain_confidence

    # -- input ----------------------------------------------------------------

    def add(self, summaries: list[RegionSummary], now: float) -> list[tuple[str, Any]]:
        """Fold a batch of chunk summaries in, then close what the watermark allows."""
        st = self.state
        for summary in summaries:
            for (region, second), counts in summary.region_counts.items():
                per_region = st.buckets.get(region)
                if per_region is None:
                    per_region = st.buckets[region] = {}
                    if region not in st.regions:
                        st.regions[region] = _RegionState(first_second=second)
                info = st.regions[region]
                if second < info.first_second:
                    info.first_second = second
                bucket = per_region.get(second)
                if bucket is None:
                    per_region[second] = list(counts)
                else:
                    bucket[0] += counts[0]
                    bucket[1] += counts[1]
                    bucket[2] += counts[2]
                    bucket[3] += counts[3]
                self._min_data_known = False
            if summary.dimension_counts:
                self._add_dimensions(summary.dimension_counts)
            part = st.partitions.get(summary.part)
            if part is None:
                part = st.partitions[summary.part] = _Partition()
            if summary.watermark is not None and (part.watermark is None or summary.watermark > part.watermark):
                part.watermark = summary.watermark
            part.done = part.done or summary.done
            part.idle = summary.idle
            part.last_wall = now
            st.n_parts = max(st.n_parts, summary.n_parts)
        return self.advance(now)

    def _add_dimensions(self, counts: dict) -> None:
        """Add a chunk's dimension counts to the pending (not yet sealed) hops.

        A hop first seen takes the chunk's Counters as they are; a hop seen
        before adds a few-entry field (device, currency) entry by entry and
        re-counts a high-cardinality one (merchant_id: about one entry per
        event of a chunk) in C over its cached string hashes.
        """
        pending = self.state.pending
        for slot, fields in counts.items():
            known = pending.get(slot)
            if known is None:
                pending[slot] = fields
                continue
            for name, (seen, fails) in fields.items():
                pair = known.get(name)
                if pair is None:
                    known[name] = (seen, fails)
                    continue
                pair[0].update(seen if len(seen) <= _FEW else seen.elements())
                if fails:
                    pair[1].update(fails)

    def _global_watermark(self, now: float) -> float:
        """Minimum over partitions; idle ones do not hold it back.

        Until every partition has reported, nothing closes: an unheard
        partition may still deliver old events. When every live partition is
        idle, event time is assumed to move on with the wall clock, so that
        total silence still closes windows (and raises TRAFFIC_DROP).
        """
        st = self.state
        if len(st.partitions) < st.n_parts:
            return st.watermark
        active = []
        idle_estimates = []
        for part in st.partitions.values():
            if part.done:
                continue
            if part.idle:
                if part.watermark is not None:
                    idle_estimates.append(part.watermark + max(0.0, now - part.last_wall))
                continue
            if part.watermark is None:
                return st.watermark
            active.append(part.watermark)
        if active:
            return max(st.watermark, min(active))
        if idle_estimates:
            return max(st.watermark, max(idle_estimates))
        return st.watermark

    # -- closing windows --------------------------------------------------------

    def advance(self, now: float) -> list[tuple[str, Any]]:
        st = self.state
        st.watermark = self._global_watermark(now)
        self._seal(st.watermark)
        return self._close_until(st.watermark, at_end=False)

    def flush(self) -> list[tuple[str, Any]]:
        """End of a bounded input: judge what the data covers, then emit the trailing windows.

        Windows that end by the last second of data are judged exactly as if
        the watermark had passed them (a drop inside the data is a drop).
        The windows after that reach past the end of the input, which is not
        silence, so they are not judged for traffic drop; failure rate still
        is (it is a ratio). Then an open FAILURE_RATE incident whose latest
        window is at or under the threshold is RESOLVED: no more evidence
        will come.
        """
        st = self.state
        out: list[tuple[str, Any]] = []
        last = max((max(b) for b in st.buckets.values() if b), default=None)
        if last is not None:
            self._seal(math.inf)
            out.extend(self._close_until(last + 1, at_end=False))
            out.extend(self._close_until(last + 1, at_end=True))
        out.extend(self._resolve_at_end())
        return out

    def _close_until(self, watermark: float, at_end: bool) -> list[tuple[str, Any]]:
        st = self.state
        out: list[tuple[str, Any]] = []
        hop = self.rule.hop_seconds
        window = self.rule.window_seconds
        limit = watermark
        if at_end:
            # Cover the partial last minute and the last sliding window holding data.
            limit = max(math.ceil(watermark / MINUTE) * MINUTE, math.ceil(watermark / hop) * hop)
        if st.slide_end is None:
            # Start the cursors only once the first window can close: until
            # then an older (not late) event may still move the start back.
            first = self._first_data()
            if first is None or min(first // hop * hop + hop, first // MINUTE * MINUTE + MINUTE) > limit:
                return out
            st.slide_end = first // hop * hop + hop
            st.minute_end = first // MINUTE * MINUTE + MINUTE
        assert st.minute_end is not None, "the cursors start together"
        while True:
            assert st.slide_end is not None and st.minute_end is not None
            end = min(st.slide_end, st.minute_end)
            if end > limit:
                break
            first = self._first_data()
            # Windows that end at or before the first remaining second of data are empty.
            empty_to = limit if first is None else min(limit, first)
            if st.slide_end <= empty_to or st.minute_end <= empty_to:
                out.extend(self._skip_empty(empty_to, at_end))
                continue
            if end == st.minute_end:
                if not at_end or end - MINUTE < watermark:
                    records = self._minute_records(end, cut_short=at_end and end > watermark)
                    if records:
                        out.append((METRICS, records))
                st.minute_end += MINUTE
            if end == st.slide_end:
                if not at_end or end - hop < watermark:
                    out.extend((ALERT, a) for a in self._judge_window(end, at_end))
                st.slide_end += hop
            self._prune(min(st.slide_end - window, st.minute_end - MINUTE))
        return out

    def _first_data(self) -> Optional[int]:
        """The earliest second still buffered (cached until buckets change)."""
        if not self._min_data_known:
            self._min_data = min((min(b) for b in self.state.buckets.values() if b), default=None)
            self._min_data_known = True
        return self._min_data

    def _skip_empty(self, empty_to: float, at_end: bool) -> list[tuple[str, Any]]:
        """Move both cursors over windows that hold no data, up to ``empty_to``.

        Minutes with no events anywhere emit nothing. Empty sliding windows
        change nothing for failure rate (under ``min_events``); for traffic
        drop they are judged in :meth:`_empty_windows`, in O(1) per region.
        """
        st = self.state
        assert st.slide_end is not None and st.minute_end is not None
        hop = self.rule.hop_seconds
        out: list[tuple[str, Any]] = []
        if st.slide_end <= empty_to:
            count = int((empty_to - st.slide_end) // hop) + 1
            if not at_end:
                out.extend((ALERT, a) for a in self._empty_windows(st.slide_end, count))
            st.slide_end += count * hop
        if st.minute_end <= empty_to:
            st.minute_end += (int((empty_to - st.minute_end) // MINUTE) + 1) * MINUTE
        return out

    def _seal(self, watermark: float) -> None:
        """Move the dimension counts of hops the watermark has passed into bounded tables.

        No accepted event can fall into a hop that ends at or before the
        watermark, so its counts are final: keep the ``explain_max_values``
        values per field with the most failures and the ``explain_max_values``
        with the most events (a cause fails a lot, or carries a share of the
        traffic: both stay in every hop), and remember which fields were cut,
        so that a value missing from a cut hop is never reported with a count
        it may lack. A hop sealed before only receives events that an idle
        partition's estimated watermark overtook; a value that its field's cut
        removed stays absent there.
        """
        st = self.state
        if watermark == -math.inf or not st.pending:
            return
        hop = self.rule.hop_seconds
        limit = math.floor(watermark / hop) * hop - hop if watermark != math.inf else math.inf
        keep = self.rule.explain_max_values
        for slot in sorted(s for s in st.pending if s[1] <= limit):
            region, hop_start = slot
            fields = st.pending.pop(slot)
            per_hop = st.dims.setdefault(region, {}).setdefault(hop_start, {})
            cut = list(st.dims_cut.get(region, {}).get(hop_start, ()))
            cut_before = set(cut)
            for name, (seen, fails) in fields.items():
                if len(seen) > keep:
                    kept = {value for value, _n in seen.most_common(keep)}
                    kept.update(value for value, _n in fails.most_common(keep))
                    if name not in cut:
                        cut.append(name)
                else:
                    kept = seen.keys()
                for value in kept:
                    pair = per_hop.get((name, value))
                    if pair is None:
                        if name in cut_before:
                            continue  # cut at an earlier sealing: a value absent then stays absent
                        per_hop[(name, value)] = [seen[value], fails.get(value, 0)]
                    else:
                        pair[0] += seen[value]
                        pair[1] += fails.get(value, 0)
            if cut:
                st.dims_cut.setdefault(region, {})[hop_start] = tuple(cut)
        if limit != math.inf:
            st.sealed = max(st.sealed, int(limit) + hop)

    def _prune(self, keep_from: int) -> None:
        st = self.state
        for per_region in st.buckets.values():
            if per_region and min(per_region) < keep_from:
                for second in [s for s in per_region if s < keep_from]:
                    del per_region[second]
                self._min_data_known = False
        dims_from = st.slide_end - self.rule.window_seconds if st.slide_end is not None else keep_from
        for table in (st.dims, st.dims_cut):
            for per_region in table.values():
                if per_region and min(per_region) < dims_from:
                    for hop_start in [h for h in per_region if h < dims_from]:
                        del per_region[hop_start]

    def _sum(self, region: str, start: int, end: int) -> list[int]:
        total = [0, 0, 0, 0]
        per_region = self.state.buckets.get(region, {})
        if len(per_region) <= end - start:
            items = ((s, c) for s, c in per_region.items() if start <= s < end)
        else:
            items = ((s, per_region[s]) for s in range(start, end) if s in per_region)
        for _second, counts in items:
            total[0] += counts[0]
            total[1] += counts[1]
            total[2] += counts[2]
            total[3] += counts[3]
        return total

    def _minute_records(self, end: int, cut_short: bool = False) -> list[dict]:
        """One record per known region, or none when nobody had an event in the minute.

        ``partial`` marks a minute the flow saw only part of: the one in which
        its first event fell (the flow started mid-minute, which would
        otherwise read like a traffic drop) and, with ``cut_short``, the last
        minute of a bounded input.
        """
        start = end - MINUTE
        records = []
        any_events = False
        flow_first = min((info.first_second for info in self.state.regions.values()), default=start)
        partial = cut_short or start < flow_first
        for region in sorted(self.state.regions):
            if self.state.regions[region].first_second >= end:
                continue
            count, failures, suspected, review = self._sum(region, start, end)
            any_events = any_events or count > 0
            records.append(
                {
                    "region": region,
                    "window_start": iso_utc(start),
                    "window_end": iso_utc(end),
                    "count": count,
                    "failures": failures,
                    "failure_rate": round(failures * 100.0 / count, 4) if count else 0.0,
                    "fraud_suspected": suspected,
                    "review_required": review,
                    "partial": partial,
                }
            )
        return records if any_events else []

    # -- incidents --------------------------------------------------------------

    def _judge_window(self, end: int, at_end: bool) -> list[dict]:
        out = []
        start = end - self.rule.window_seconds
        for region in sorted(self.state.regions):
            info = self.state.regions[region]
            if info.first_second >= end:
                continue
            count, failures, _s, _r = self._sum(region, start, end)
            out.extend(self._judge_failure_rate(region, info, end, count, failures))
            if not at_end and self.drop.enabled and start >= info.first_second:
                out.extend(self._judge_traffic(region, info, end, count))
        return out

    def _judge_failure_rate(self, region: str, info: _RegionState, end: int, count: int, failures: int) -> list[dict]:
        """OPEN on evidence above the threshold; RESOLVED after sustained evidence under it.

        A window under ``min_events`` decides nothing either way. OPEN needs
        the lower Wilson bound above the threshold; RESOLVED needs
        ``resolve_windows`` windows at or under it (one failure of slack for
        the granularity of small windows) with no window in between that is
        evidence of a rate above it (lower bound over the threshold),
        so a rate swinging around the threshold stays one incident, while a
        small region's chance failures after a real end do not hold it open.
        """
        rule = self.rule
        if count < rule.min_events:
            return []
        rate = failures * 100.0 / count
        info.last_end, info.last_count, info.last_failures = end, count, failures
        key = (alerts.FAILURE_RATE, region)
        incident = self.state.incidents.get(key)
        if incident is None:
            lower = incident_stats.wilson_lower(failures, count, self._z) * 100.0
            if lower <= rule.threshold_percent:
                return []
            return [self._open_failure(region, end, count, failures, rate, lower)]
        incident.peak = max(incident.peak, rate)
        # At or under the threshold, give or take one failure: on a small region's
        # window (72 payments) one failure moves the rate by 1.4 points.
        if (failures - 1) * 100.0 > rule.threshold_percent * count:
            # Only evidence of a rate above the threshold restarts the count: on a
            # small region two chance failures (2 of 72) must not hold an incident open.
            if incident_stats.wilson_lower(failures, count, self._z) * 100.0 > rule.threshold_percent:
                incident.under = 0
            return []
        incident.under += 1
        if incident.under < rule.resolve_windows:
            return []
        return [self._resolve_failure(region, incident, end, count, failures, rate)]

    def _open_failure(self, region: str, end: int, count: int, failures: int, rate: float, lower: float) -> dict:
        rule = self.rule
        found = [c.as_dict() for c in self._contributors(region, end, count, failures)]
        incident_id = f"{alerts.FAILURE_RATE}:{region}:{alerts.compact_time(end)}"
        self.state.incidents[(alerts.FAILURE_RATE, region)] = _FailureIncident(incident_id, end, rate, found)
        details = {
            "count": count,
            "failures": failures,
            "window_start": iso_utc(end - rule.window_seconds),
            "window_seconds": rule.window_seconds,
            "lower_bound_percent": round(lower, 4),
            "confidence": rule.confidence,
            "contributors": found,
        }
        message = (
            f"{region} failure rate {incident_stats.percent(rate)} over {rule.window_seconds} s "
            f"(threshold {incident_stats.percent(rule.threshold_percent)}): {self._explain(found)}"
        )
        return alerts.make_alert(
            alerts.FAILURE_RATE,
            alerts.OPEN,
            region,
            incident_id,
            end,
            round(rate, 4),
            rule.threshold_percent,
            message,
            region=region,
            details=details,
        )

    def _resolve_failure(
        self, region: str, incident: _FailureIncident, end: int, count: int, failures: int, rate: float
    ) -> dict:
        rule = self.rule
        del self.state.incidents[(alerts.FAILURE_RATE, region)]
        duration = max(0, end - incident.opened)
        details = {
            "count": count,
            "failures": failures,
            "window_start": iso_utc(end - rule.window_seconds),
            "window_seconds": rule.window_seconds,
            "opened_at": iso_utc(incident.opened),
            "duration_seconds": duration,
            "peak_rate_percent": round(incident.peak, 4),
            "contributors": incident.contributors,
        }
        cause = self._explain(incident.contributors)
        message = (
            f"{region} failure rate back to {incident_stats.percent(rate)} over {rule.window_seconds} s "
            f"(threshold {incident_stats.percent(rule.threshold_percent)}) after {_duration(duration)}; "
            f"peak {incident_stats.percent(incident.peak)}; {cause}"
        )
        return alerts.make_alert(
            alerts.FAILURE_RATE,
            alerts.RESOLVED,
            region,
            incident.incident_id,
            end,
            round(rate, 4),
            rule.threshold_percent,
            message,
            region=region,
            details=details,
        )

    def _resolve_at_end(self) -> list[tuple[str, Any]]:
        """RESOLVED for open FAILURE_RATE incidents whose latest window is back under the threshold."""
        out: list[tuple[str, Any]] = []
        st = self.state
        for key in sorted(k for k in st.incidents if k[0] == alerts.FAILURE_RATE):
            region = key[1]
            info = st.regions.get(region)
            if info is None or info.last_end is None or not info.last_count:
                continue
            rate = info.last_failures * 100.0 / info.last_count
            if rate > self.rule.threshold_percent:
                continue
            incident = st.incidents[key]
            alert = self._resolve_failure(region, incident, info.last_end, info.last_count, info.last_failures, rate)
            out.append((ALERT, alert))
        return out

    def _explain(self, found: list) -> str:
        if not found:
            names = ", ".join(self.rule.explain_by) or "any field"
            return f"spread across {names} (no single value stands out)"
        top = found[0]
        text = (
            f"{top['failure_share'] * 100:.0f} % of failures on {top['dimension']}={top['value']}, "
            f"{top['traffic_share'] * 100:.0f} % of traffic"
        )
        if len(found) > 1:
            others = ", ".join(f"{c['dimension']}={c['value']}" for c in found[1:3])
            text += f" (also {others})"
        return text

    def _contributors(self, region: str, end: int, count: int, failures: int) -> list:
        """Significant contributors of the window ending at ``end``, from the exact dimension counts."""
        st = self.state
        hop = self.rule.hop_seconds
        start = end - self.rule.window_seconds
        per_region = st.dims.get(region, {})
        cut_hops = st.dims_cut.get(region, {})
        totals: dict[tuple[str, str], list[int]] = {}
        cut_count: dict[str, int] = {}
        present_in_cut: dict[tuple[str, str], int] = {}
        for hop_start in range(start, end, hop):
            per_hop = per_region.get(hop_start)
            cut = cut_hops.get(hop_start, ())
            for name in cut:
                cut_count[name] = cut_count.get(name, 0) + 1
            if not per_hop:
                continue
            for key, (events, failed) in per_hop.items():
                pair = totals.get(key)
                if pair is None:
                    totals[key] = [events, failed]
                else:
                    pair[0] += events
                    pair[1] += failed
                if key[0] in cut:
                    present_in_cut[key] = present_in_cut.get(key, 0) + 1
        candidates = (
            (name, value, events, failed)
            for (name, value), (events, failed) in totals.items()
            if present_in_cut.get((name, value), 0) == cut_count.get(name, 0)
        )
        return incident_stats.contributors(candidates, count, failures, self._explain_alpha, self.rule.explain_min_lift)

    def _empty_windows(self, first_end: int, count: int) -> list[dict]:
        """Traffic-drop verdicts for ``count`` consecutive windows with no data, in O(1) per region.

        Inside such a run a region's state changes in three ways only: an
        open incident stays open (baseline frozen); a warmed baseline opens
        an incident on the first empty window; otherwise the baseline decays
        geometrically towards zero. A baseline still warming up is stepped
        window by window, at most ``baseline_windows`` times.
        """
        out: list[tuple[int, str, dict]] = []
        if not self.drop.enabled:
            return []
        hop = self.rule.hop_seconds
        window = self.rule.window_seconds
        drop = self.drop
        for region in sorted(self.state.regions):
            info = self.state.regions[region]
            # The first window this region can be judged on (it existed for all of it).
            first_ok = max(first_end, math.ceil((info.first_second + window) / hop) * hop)
            last = first_end + (count - 1) * hop
            end = first_ok
            while end <= last:
                if (alerts.TRAFFIC_DROP, region) in self.state.incidents:
                    break
                if info.baseline < drop.min_baseline or info.baseline <= 0.0:
                    # Can never warm up (or open) on zeros: decay in closed form.
                    remaining = (last - end) // hop + 1
                    if info.baseline_windows == 0:
                        info.baseline = 0.0
                    else:
                        info.baseline *= (1.0 - self._alpha) ** remaining
                    info.baseline_windows += remaining
                    break
                out.extend((end, region, a) for a in self._judge_traffic(region, info, end, 0))
                end += hop
        out.sort(key=lambda item: (item[0], item[1]))
        return [a for _e, _r, a in out]

    def _judge_traffic(self, region: str, info: _RegionState, end: int, count: int) -> list[dict]:
        """OPEN when volume falls under ``fraction`` of the region's baseline.

        The baseline is an exponential moving average of full windows, frozen
        while an incident is open so that an outage does not become normal.
        """
        drop = self.drop
        key = (alerts.TRAFFIC_DROP, region)
        open_id = self.state.incidents.get(key)
        warmed = info.baseline_windows >= drop.baseline_windows and info.baseline >= drop.min_baseline
        out = []
        details = {
            "count": count,
            "baseline": round(info.baseline, 2),
            "window_start": iso_utc(end - self.rule.window_seconds),
        }
        if open_id is None and warmed and count < drop.fraction * info.baseline:
            incident = f"{alerts.TRAFFIC_DROP}:{region}:{alerts.compact_time(end)}"
            self.state.incidents[key] = incident
            out.append(
                alerts.make_alert(
                    alerts.TRAFFIC_DROP,
                    alerts.OPEN,
                    region,
                    incident,
                    end,
                    float(count),
                    round(drop.fraction * info.baseline, 2),
                    f"traffic in {region} fell to {count} payments in {self.rule.window_seconds}s "
                    f"(baseline {info.baseline:.0f})",
                    region=region,
                    details=details,
                )
            )
        elif open_id is not None and count >= drop.recover_fraction * info.baseline:
            del self.state.incidents[key]
            out.append(
                alerts.make_alert(
                    alerts.TRAFFIC_DROP,
                    alerts.RESOLVED,
                    region,
                    open_id,
                    end,
                    float(count),
                    round(drop.recover_fraction * info.baseline, 2),
                    f"traffic in {region} recovered to {count} payments in {self.rule.window_seconds}s "
                    f"(baseline {info.baseline:.0f})",
                    region=region,
                    details=details,
                )
            )
        if key not in self.state.incidents:
            if info.baseline_windows == 0:
                info.baseline = float(count)
            else:
                info.baseline += self._alpha * (count - info.baseline)
            info.baseline_windows += 1
        return out


def _duration(seconds: int) -> str:
    """``130`` -> ``"2 min 10 s"``."""
    minutes, rest = divmod(int(seconds), 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
