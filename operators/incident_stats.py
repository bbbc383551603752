"""The statistics behind FAILURE_RATE incidents: when a rate is evidence, and who explains it.

Pure functions on counts, unit-tested with known numbers (tests/rules/test_incident_stats.py).

Opening: a window's failure rate ``k / n`` is evidence of an incident when
the lower Wilson score bound at the configured one-sided confidence is above
the threshold. Unlike a raw ratio with a volume floor, the bound widens on
thin windows, so a region at 1 payment/s failing 30 % opens (18 of 60: the
bound is 15.5 %), while 3 chance failures out of 60 (5 %) do not (bound
1.0 % at 99.9 %). docs/detection.md gives the false-alarm arithmetic.

Contributors: a dimension value (``device=mobile``) explains a window when
its share of the window's failures is significantly above its share of the
window's events. Under the null hypothesis that the value fails like the
rest of its region, its failures are Binomial(F, traffic share); the
one-sided tail ``P(X >= failures)`` is compared with ``alpha / m``
(Bonferroni over the ``m`` values tested), and the lift (failure share /
traffic share) must reach a minimum so that a huge window does not list a
value that fails 5 % more often than average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist


def z_for(confidence: float) -> float:
    """One-sided standard normal quantile: 0.999 -> 3.09."""
    return NormalDist().inv_cdf(confidence)


def wilson_lower(failures: int, events: int, z: float) -> float:
    """Lower Wilson score bound of ``failures / events`` (0 for an empty window)."""
    if events <= 0:
        return 0.0
    p = failures / events
    z2 = z * z
    centre = p + z2 / (2 * events)
    spread = z * math.sqrt(p * (1 - p) / events + z2 / (4 * events * events))
    return max(0.0, (centre - spread) / (1 + z2 / events))


def log_binomial_tail(k: int, n: int, p: float) -> float:
    """``log P(X >= k)`` for ``X ~ Binomial(n, p)``, exact, for ``k`` above the mean.

    Summed from ``k`` upwards in log space until the terms stop mattering
    (they fall geometrically past the mean), so it costs a few dozen terms,
    not ``n``, and does not underflow for a value with hundreds of failures.
    """
    if k <= 0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    if p >= 1.0 or k > n:
        return 0.0 if p >= 1.0 and k <= n else -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    first = base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
    total = 1.0
    term = 1.0
    for i in range(k, n):
        term *= (n - i) / (i + 1) * p / (1 - p)
        total += term
        if term < total * 1e-12:
            break
    return first + math.log(total)


@dataclass(frozen=True, slots=True)
class Contributor:
    """A dimension value that explains a window's failures."""

    dimension: str
    value: str
    failures: int
    events: int
    failure_share: float
    traffic_share: float
    lift: float
    log_p: float

    def as_dict(self) -> dict:
        return {
            "dimension": self.dimension,
            "value": self.value,
            "failures": self.failures,
            "events": self.events,
            "failure_share": round(self.failure_share, 4),
            "traffic_share": round(self.traffic_share, 4),
            "lift": round(self.lift, 2),
        }


def contributors(
    candidates: Iterable[tuple[str, str, int, int]],
    window_events: int,
    window_failures: int,
    alpha: float,
    min_lift: float,
) -> list[Contributor]:
    """The values whose failure share is significantly above their traffic share, most significant first.

    :arg candidates: ``(dimension, value, events, failures)`` with exact counts
        over the window.
    :arg window_events: events in the window (every value of a dimension together).
    :arg window_failures: failures in the window.
    :arg alpha: family-wise false-positive rate (``1 - explain_confidence``).
    :arg min_lift: failure share / traffic share a value must reach.
    """
    if window_events <= 0 or window_failures <= 0:
        return []
    tested = []
    for dimension, value, events, failures in candidates:
        if events <= 0 or failures <= 0:
            continue
        traffic_share = events / window_events
        failure_share = failures / window_failures
        if failure_share <= traffic_share:
            continue
        tested.append((dimension, value, events, failures, traffic_share, failure_share))
    if not tested:
        return []
    log_limit = math.log(alpha / len(tested))
    found = []
    for dimension, value, events, failures, traffic_share, failure_share in tested:
        lift = failure_share / traffic_share
        if lift < min_lift:
            continue
        log_p = log_binomial_tail(failures, window_failures, traffic_share)
        if log_p < log_limit:
            found.append(Contributor(dimension, value, failures, events, failure_share, traffic_share, lift, log_p))
    found.sort(key=lambda c: (c.log_p, -c.failures, c.dimension, c.value))
    return found


def percent(value: float) -> str:
    """``8.1`` -> ``"8.1 %"``; whole numbers without decimals (``2 %``)."""
    return f"{value:.0f} %" if abs(value - round(value)) < 0.05 and abs(value) >= 1 else f"{value:.1f} %"
