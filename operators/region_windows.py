"""Region windows on event time: per-minute metrics and region incidents.

Input is tiny: per parsed chunk, counts per (region, second) plus that
partition's watermark. All regions live in one keyed state so that one
watermark, the minimum over every source partition, closes every region's
windows, including regions that have gone silent (their silence is news).

Why not Bytewax's ``EventClock``: it keeps a watermark per key that also
advances with system time, so in a full-speed replay of several partitions
one partition's events are declared late because another ran ahead, and a
silent key's windows only close when wall time passes. Both break the
guarantees in docs/architecture.md; this module implements the Flink rule
(watermark = minimum over inputs) directly over per-second buckets.

Windows:
- tumbling 60 s windows aligned to UTC minutes -> one metrics record per
  known region per minute (zero-count minutes included);
- sliding windows of ``window_seconds`` ending on multiples of
  ``hop_seconds`` (UTC) -> FAILURE_RATE and TRAFFIC_DROP incidents, one
  OPEN and one RESOLVED each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from config.settings import FailureRateRule, TrafficDropRule
from operators import alerts
from operators.timestamps import iso_utc

MINUTE = 60
METRICS = "metrics"
ALERT = "alert"


@dataclass(slots=True)
class RegionSummary:
    """What the region windows need from one parsed chunk."""

    part: str
    n_parts: int
    watermark: Optional[float]
    done: bool
    idle: bool
    region_counts: dict


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


@dataclass
class RegionWindowState:
    """Everything that must survive a restart (pickled in snapshots)."""

    partitions: dict = field(default_factory=dict)
    n_parts: int = 0
    # region -> {second: [count, failures, fraud_suspected, review_required]}
    buckets: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)
    # (alert type, region) -> incident id of the open incident
    incidents: dict = field(default_factory=dict)
    watermark: float = -math.inf
    slide_end: Optional[int] = None
    minute_end: Optional[int] = None


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
        self.state = state or RegionWindowState()
        self._alpha = 2.0 / (traffic_drop.baseline_windows + 1)

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
        return self._close_until(st.watermark, at_end=False)

    def flush(self) -> list[tuple[str, Any]]:
        """End of a bounded input: emit every open window, partial ones included.

        The end of a file is not silence, so trailing windows are not judged
        for traffic drop; failure rate still is (it is a ratio).
        """
        st = self.state
        last = max((max(b) for b in st.buckets.values() if b), default=None)
        if last is None:
            return []
        return self._close_until(last + 1, at_end=True)

    def _close_until(self, watermark: float, at_end: bool) -> list[tuple[str, Any]]:
        st = self.state
        out: list[tuple[str, Any]] = []
        hop = self.rule.hop_seconds
        limit = watermark
        if at_end:
            # Cover the partial last minute and the last sliding window holding data.
            limit = max(math.ceil(watermark / MINUTE) * MINUTE, math.ceil(watermark / hop) * hop)
        if st.slide_end is None:
            # Start the cursors only once the first window can close: until
            # then an older (not late) event may still move the start back.
            first = min((min(b) for b in st.buckets.values() if b), default=None)
            if first is None or min(first // hop * hop + hop, first // MINUTE * MINUTE + MINUTE) > limit:
                return out
            st.slide_end = first // hop * hop + hop
            st.minute_end = first // MINUTE * MINUTE + MINUTE
        assert st.minute_end is not None, "the cursors start together"
        while True:
            end = min(st.slide_end, st.minute_end)
            if end > limit:
                break
            if end == st.minute_end:
                if not at_end or end - MINUTE < watermark:
                    out.append((METRICS, self._minute_records(end)))
                st.minute_end += MINUTE
            if end == st.slide_end:
                if not at_end or end - self.rule.hop_seconds < watermark:
                    out.extend((ALERT, a) for a in self._judge_window(end, at_end))
                st.slide_end += self.rule.hop_seconds
            self._prune(min(st.slide_end - self.rule.window_seconds, st.minute_end - MINUTE))
        return out

    def _prune(self, keep_from: int) -> None:
        for per_region in self.state.buckets.values():
            stale = [s for s in per_region if s < keep_from] if per_region and min(per_region) < keep_from else ()
            for second in stale:
                del per_region[second]

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

    def _minute_records(self, end: int) -> list[dict]:
        start = end - MINUTE
        records = []
        for region in sorted(self.state.regions):
            if self.state.regions[region].first_second >= end:
                continue
            count, failures, suspected, review = self._sum(region, start, end)
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
                }
            )
        return records

    # -- incidents --------------------------------------------------------------

    def _judge_window(self, end: int, at_end: bool) -> list[dict]:
        out = []
        start = end - self.rule.window_seconds
        for region in sorted(self.state.regions):
            info = self.state.regions[region]
            if info.first_second >= end:
                continue
            count, failures, _s, _r = self._sum(region, start, end)
            out.extend(self._judge_failure_rate(region, end, count, failures))
            if not at_end and self.drop.enabled and start >= info.first_second:
                out.extend(self._judge_traffic(region, info, end, count))
        return out

    def _judge_failure_rate(self, region: str, end: int, count: int, failures: int) -> list[dict]:
        """OPEN above the threshold with enough volume; RESOLVED at or under it.

        A window under ``min_events`` decides nothing either way: too few
        payments to say the region is failing, or that it has recovered.
        """
        rule = self.rule
        if count < rule.min_events:
            return []
        rate = failures * 100.0 / count
        key = (alerts.FAILURE_RATE, region)
        open_id = self.state.incidents.get(key)
        details = {
            "count": count,
            "failures": failures,
            "window_start": iso_utc(end - rule.window_seconds),
            "window_seconds": rule.window_seconds,
        }
        if open_id is None and rate > rule.threshold_percent:
            incident = f"{alerts.FAILURE_RATE}:{region}:{alerts.compact_time(end)}"
            self.state.incidents[key] = incident
            return [
                alerts.make_alert(
                    alerts.FAILURE_RATE,
                    alerts.OPEN,
                    region,
                    incident,
                    end,
                    round(rate, 4),
                    rule.threshold_percent,
                    f"payment failure rate in {region} is {rate:.2f}% over the last {rule.window_seconds}s "
                    f"({failures} of {count}), above {rule.threshold_percent}%",
                    region=region,
                    details=details,
                )
            ]
        if open_id is not None and rate <= rule.threshold_percent:
            del self.state.incidents[key]
            return [
                alerts.make_alert(
                    alerts.FAILURE_RATE,
                    alerts.RESOLVED,
                    region,
                    open_id,
                    end,
                    round(rate, 4),
                    rule.threshold_percent,
                    f"payment failure rate in {region} is back to {rate:.2f}% ({failures} of {count})",
                    region=region,
                    details=details,
                )
            ]
        return []

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
