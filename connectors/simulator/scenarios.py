"""Simulator scenarios: what incidents to inject, and where, with ground truth.

A scenario is a set of incident kinds with rates (incidents per hour of event
time). Planning turns a scenario into concrete incidents, one *epoch* (an
hour of event time) at a time, from a random stream seeded by
``(seed, scenario, epoch)`` only. The plan therefore does not depend on the
number of source partitions, on batching or on where a run resumed, and an
endless run can plan epoch after epoch without holding the past.

Two shapes of incident:

- region incidents (failure spike, traffic drop) change the background
  events of one region over a time span: their failure probability, or the
  fraction of them that exist at all;
- event incidents (velocity burst, amount spike, impossible travel,
  fraud-looking transaction, late event) *replace* the background event at
  chosen event indices with a crafted one.

Every incident carries a label (alert type, key, event-time span, whether an
alert is expected). ``expected=False`` labels are near misses (the ``hard``
scenario): an alert matching one is a false alert. The crafted values assume
the default rules (2 % failure rate, 10 payments / 10,000 per 60 s, 10x
spike, 1,800 s travel, fraud score 50); change the rules and the near misses
move with them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from operators.alerts import (
    AMOUNT_SPIKE,
    FAILURE_RATE,
    FRAUD_SUSPECTED,
    IMPOSSIBLE_TRAVEL,
    TRAFFIC_DROP,
    VELOCITY,
)

EPOCH_SECONDS = 3600.0
# The traffic-drop baseline needs 30 sliding windows (300 s) after the
# region's first full 60 s window before it can judge anything.
REGION_WARMUP_SECONDS = 420.0
# Region incidents keep this far from an epoch's edges (so two epochs'
# incidents in one region never touch) and from each other.
REGION_GAP_SECONDS = 240.0
# Room after the last incident of a bounded run for its alert to resolve.
TAIL_SECONDS = 180.0
USER_WARMUP_SECONDS = 180.0

# The label of deliberately late events (not an alert type).
LATE = "LATE"

# Small regions, simulated only in scenarios with a low-volume kind: each
# gets LOW_VOLUME_EVENTS_PER_SECOND of the event slots (from its own users),
# under the traffic-drop rule's min_baseline so that only FAILURE_RATE can
# speak for them. The first may carry an incident; the second only noise.
LOW_VOLUME_REGIONS = ("SA-EAST", "AF-SOUTH")
LOW_VOLUME_EVENTS_PER_SECOND = 1.2
LOW_VOLUME_FAIL_P = 0.009
LOW_VOLUME_KINDS = ("low_volume_incident", "low_volume_noise")
# Kinds planned first in an epoch: they need a long free span in one region.
_LONG_KINDS = ("day_curve",)
# Devices of the simulated population (connectors/simulator/source.py).
DEVICES = ("mobile", "web", "pos", "tablet")
MERCHANT_COUNT = 30

FRAUD_MERCHANTS = ("Test Merchant 42", "FakeShop Online", "Dummy Store Ltd", "TEST-PAYMENTS", "fake-electronics")
FOREIGN_CURRENCIES = ("JPY", "INR", "BRL", "NGN", "RUB")


@dataclass(frozen=True)
class Scenario:
    """A named mix of incident kinds.

    :ivar rates: incident kind -> incidents per hour of event time (region
        kinds: per region). Every enabled kind gets at least one incident
        per epoch when it fits, so that short demo runs show it.
    :ivar jitter: background events arrive out of order (within 5 s).
    """

    name: str
    description: str
    rates: Mapping[str, float] = field(default_factory=dict)
    jitter: bool = False


@dataclass
class RegionIncident:
    """A change to one region's background events over a span of event indices.

    ``region`` indexes the simulator's regions, then :data:`LOW_VOLUME_REGIONS`.
    """

    kind: str
    region: int
    first: int  # first event index affected
    stop: int  # first event index no longer affected
    fail_p: Optional[float] = None  # failure probability override
    keep: Optional[float] = None  # fraction of background events kept
    # A cause: only events with this device, or this merchant (which then
    # carries ``share`` of the region's payments), fail at ``fail_p``.
    cause_device: Optional[str] = None
    cause_merchant: Optional[int] = None
    share: float = 0.0
    ramp_stop: Optional[int] = None  # fail_p grows linearly from the background until here
    flap_every: int = 0  # alternate fail_p and fail_p_low every this many indices
    fail_p_low: float = 0.0
    keep_min: Optional[float] = None  # a day-like curve: keep dips to this and back (cosine)

    def failure_p(self, index: int, background: float) -> float:
        """Failure probability of a matching event at ``index``."""
        assert self.fail_p is not None
        if self.ramp_stop is not None and index < self.ramp_stop:
            return background + (self.fail_p - background) * (index - self.first) / (self.ramp_stop - self.first)
        if self.flap_every and ((index - self.first) // self.flap_every) % 2:
            return self.fail_p_low
        return self.fail_p

    def kept(self, index: int) -> float:
        """Fraction of background events kept at ``index``."""
        if self.keep_min is not None:
            phase = (index - self.first) / max(1, self.stop - self.first)
            return 1.0 - (1.0 - self.keep_min) * (1.0 - math.cos(2 * math.pi * phase)) / 2
        assert self.keep is not None
        return self.keep


@dataclass
class EpochPlan:
    """Incidents of one epoch, in event-index space."""

    region_incidents: list[RegionIncident] = field(default_factory=list)
    # event index -> crafted event fields (without transaction_id/timestamp)
    injected: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: list[dict[str, Any]] = field(default_factory=list)


_MIXED = {
    "failure_spike": 2.0,
    "traffic_drop": 1.0,
    "velocity_attack": 60.0,
    "amount_spike": 60.0,
    "impossible_travel": 60.0,
    "fraud_merchant": 120.0,
    "late_event": 60.0,
}
# Region incidents of issue 16: causes, broad spikes, flapping, a slow ramp, a
# day-like curve, and the two small regions.
_REGION_INCIDENTS = {
    "failure_spike": 1.0,
    "failure_cause_device": 0.25,
    "failure_cause_merchant": 0.25,
    "failure_flap": 0.25,
    "failure_ramp": 0.25,
    "day_curve": 0.25,
    "traffic_drop": 0.5,
    "low_volume_incident": 1.0,
    "low_volume_noise": 1.0,
}
_HARD = {
    "failure_edge": 1.0,
    "failure_near_miss": 1.0,
    "traffic_edge": 0.5,
    "traffic_near_miss": 0.5,
    "velocity_edge": 30.0,
    "velocity_near_miss": 30.0,
    "velocity_amount_edge": 20.0,
    "velocity_amount_near_miss": 20.0,
    "amount_edge": 30.0,
    "amount_near_miss": 30.0,
    "travel_edge": 20.0,
    "travel_near_miss": 20.0,
    "fraud_edge": 40.0,
    "fraud_near_miss": 40.0,
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "background traffic only: must raise no alert"),
        Scenario("failure_spike", "regional failure-rate spikes (5-25 % for 2-8 min)", {"failure_spike": 3.0}),
        Scenario("traffic_drop", "regional outages: traffic falls to 0-12 % for 3-8 min", {"traffic_drop": 2.0}),
        Scenario(
            "velocity_attack",
            "bursts of 15-30 payments, or > 10,000 in a few payments, within 50 s",
            {"velocity_attack": 60.0},
        ),
        Scenario("amount_spike", "a user pays 15-30x their typical amount", {"amount_spike": 60.0}),
        Scenario(
            "impossible_travel",
            "a user pays from another region minutes after paying at home",
            {"impossible_travel": 60.0},
        ),
        Scenario(
            "fraud_merchants",
            "fraud-looking transactions (test/fake/dummy merchants, odd currencies)",
            {"fraud_merchant": 120.0},
        ),
        Scenario(
            "out_of_order", "events out of order within 5 s, and some 30-120 s late", {"late_event": 120.0}, jitter=True
        ),
        Scenario(
            "region_incidents",
            "failure incidents with a cause or broad, flapping, a slow ramp, a day-like curve, small regions",
            _REGION_INCIDENTS,
        ),
        Scenario(
            "mixed",
            "every incident kind over normal background traffic",
            {**_MIXED, **_REGION_INCIDENTS},
            jitter=True,
        ),
        Scenario("hard", "near misses and just-over-the-limit incidents, to test rule boundaries", _HARD),
        Scenario("mixed_hard", "mixed plus hard", {**_MIXED, **_HARD}, jitter=True),
    )
}


@dataclass(frozen=True)
class PlanContext:
    """What planning needs to know about the simulated world."""

    seed: int
    scenario: Scenario
    density: float  # events per second of event time
    start: float  # event time of index 0 (epoch seconds)
    limit: Optional[int]  # number of event indices, None = endless
    regions: tuple[str, ...]
    n_users: int
    cycle_seconds: float  # every pool user pays once per cycle
    home_region: Callable[[int], int]
    typical_amount: Callable[[int], float]
    currency: Callable[[int], str]
    region_fail_p: Callable[[int], float] = lambda region: 0.006  # background failure probability


# -- planning ------------------------------------------------------------------


def epoch_events(density: float) -> int:
    """Number of event indices in one epoch."""
    return max(1, int(round(EPOCH_SECONDS * density)))


def plan_epoch(ctx: PlanContext, epoch: int) -> EpochPlan:
    """The incidents of ``epoch``; the same for every partition and run."""
    per_epoch = epoch_events(ctx.density)
    first = epoch * per_epoch
    stop = first + per_epoch if ctx.limit is None else min(first + per_epoch, ctx.limit)
    plan = EpochPlan()
    if stop <= first or not ctx.scenario.rates:
        return plan
    rng = random.Random(f"paywatch-plan:{ctx.seed}:{ctx.scenario.name}:{epoch}")
    t0 = first / ctx.density
    t1 = stop / ctx.density
    at_end = ctx.limit is not None and stop == ctx.limit
    planner = _Planner(ctx, rng, plan, epoch, first, stop)
    region_lo = max(t0 + REGION_GAP_SECONDS / 2, REGION_WARMUP_SECONDS)
    region_hi = t1 - (TAIL_SECONDS if at_end else REGION_GAP_SECONDS / 2)
    user_lo = max(t0 + 5.0, USER_WARMUP_SECONDS)
    user_hi = t1 - (TAIL_SECONDS if at_end else 60.0)
    # Long kinds first (they need a free hour in one region), then the kinds that
    # predate them, so that a short run still gets one of each older kind.
    for kind in sorted(ctx.scenario.rates, key=lambda k: (k not in _LONG_KINDS, k in _NEWER_KINDS, k)):
        rate = ctx.scenario.rates[kind]
        if rate <= 0:
            continue
        builder, is_region = _KINDS[kind]
        lo, hi = (region_lo, region_hi) if is_region or kind in LOW_VOLUME_KINDS else (user_lo, user_hi)
        if hi <= lo:
            continue
        hours = (hi - lo) / 3600.0
        wanted = rate * hours * (len(ctx.regions) if is_region else 1)
        count = max(1, int(wanted) + (1 if rng.random() < wanted - int(wanted) else 0))
        for _ in range(count):
            builder(planner, kind, lo, hi)
    plan.labels.sort(key=lambda label: (label["start"], label["type"], label["key"]))
    return plan


class _Planner:
    """Places incidents of one epoch without collisions."""

    def __init__(self, ctx: PlanContext, rng: random.Random, plan: EpochPlan, epoch: int, first: int, stop: int):
        self.ctx = ctx
        self.rng = rng
        self.plan = plan
        self.first = first
        self.stop = stop
        self.fresh = ctx.n_users + 1 + epoch * 100_000
        self.parity = epoch % 2
        self.used_users: set[int] = set()
        self.region_spans: dict[int, list[tuple[float, float]]] = {}

    # -- helpers ---------------------------------------------------------------

    def index_at(self, t: float) -> Optional[int]:
        """First free event index at or after event time ``t`` (relative seconds)."""
        i = max(self.first, int(math.ceil(t * self.ctx.density - 1e-9)))
        while i in self.plan.injected:
            i += 1
        return i if i < self.stop else None

    def time_of(self, index: int) -> float:
        return self.ctx.start + index / self.ctx.density

    def fresh_user(self) -> str:
        self.fresh += 1
        return f"u{self.fresh}"

    def pool_user(self, lo: float, accept: Callable[[int], bool]) -> Optional[int]:
        """A pool user not yet used by this epoch or the one before (their cooldowns would hide it).

        Even epochs draw even user numbers and odd epochs odd ones, so
        neighbouring epochs never share a user and planning stays per epoch.
        """
        for _ in range(200):
            user = self.rng.randrange(self.ctx.n_users)
            if user % 2 != self.parity and self.ctx.n_users > 1:
                user = (user + 1) % self.ctx.n_users
                if user % 2 != self.parity:
                    continue
            if user not in self.used_users and accept(user) and not self.region_busy(self.ctx.home_region(user), lo):
                self.used_users.add(user)
                return user
        return None

    def region_busy(self, region: int, t: float) -> bool:
        """A region incident near ``t`` may have removed the user's history."""
        lookback = 10 * self.ctx.cycle_seconds + 60.0
        return any(a - 60.0 <= t and b >= t - lookback for a, b in self.region_spans.get(region, ()))

    def inject(self, t: float, fields: dict[str, Any]) -> Optional[int]:
        index = self.index_at(t)
        if index is not None:
            self.plan.injected[index] = fields
        return index

    def label(
        self, kind: str, alert_type: str, key: str, start: float, end: float, expected: bool = True, **details: Any
    ) -> None:
        self.plan.labels.append(
            {
                "type": alert_type,
                "key": key,
                "start": start,
                "end": end,
                "expected": expected,
                "scenario": kind,
                "details": details,
            }
        )

    def event(
        self,
        user: str,
        region: int,
        amount: float,
        currency: str,
        merchant: Optional[str] = None,
        status: str = "SUCCESS",
    ) -> dict[str, Any]:
        merchant_name = merchant or "Northwind Grocers"
        return {
            "user_id": user,
            "payment_status": status,
            "amount": round(amount, 2),
            "currency": currency,
            "merchant_id": f"m_{abs(hash_text(merchant_name)) % 10000:04d}",
            "merchant_name": merchant_name,
            "device": "web",
            "region": self.ctx.regions[region],
        }

    def odd_cents(self, amount: float) -> float:
        """An amount that is not a multiple of 1,000 (round amounts score +10)."""
        amount = round(amount, 2)
        return amount + 0.37 if amount % 1000 == 0 else amount


def hash_text(text: str) -> int:
    """A stable string hash (Python's ``hash`` is salted per process)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


# -- region incidents ------------------------------------------------------------

_REGION_PARAMS = {
    # kind: (alert type, expected, (min, max) duration s, effect)
    "failure_spike": (FAILURE_RATE, True, (120.0, 480.0), lambda rng: {"fail_p": rng.uniform(0.05, 0.25)}),
    "failure_edge": (FAILURE_RATE, True, (240.0, 480.0), lambda rng: {"fail_p": 0.03}),
    "failure_near_miss": (FAILURE_RATE, False, (240.0, 480.0), lambda rng: {"fail_p": 0.010}),
    "traffic_drop": (
        TRAFFIC_DROP,
        True,
        (180.0, 480.0),
        lambda rng: {"keep": 0.0 if rng.random() < 0.3 else rng.uniform(0.02, 0.12)},
    ),
    "traffic_edge": (TRAFFIC_DROP, True, (240.0, 480.0), lambda rng: {"keep": 0.2}),
    "traffic_near_miss": (TRAFFIC_DROP, False, (240.0, 480.0), lambda rng: {"keep": 0.45}),
}


def _cause_device(rng: random.Random) -> dict[str, Any]:
    return {"fail_p": rng.uniform(0.25, 0.5), "cause_device": rng.choice(DEVICES)}


def _cause_merchant(rng: random.Random) -> dict[str, Any]:
    return {
        "fail_p": rng.uniform(0.25, 0.45),
        "cause_merchant": rng.randrange(MERCHANT_COUNT),
        "share": rng.uniform(0.2, 0.35),
    }


_CAUSED_PARAMS = {
    # kind: (alert type, expected, (min, max) duration s, effect)
    "failure_cause_device": (FAILURE_RATE, True, (180.0, 420.0), _cause_device),
    "failure_cause_merchant": (FAILURE_RATE, True, (180.0, 420.0), _cause_merchant),
    # 4.5 % and 0.5 % alternating every 45 s for six minutes: the window swings around 2 %.
    "failure_flap": (FAILURE_RATE, True, (360.0, 360.0), lambda rng: {"fail_p": 0.045, "fail_p_low": 0.005}),
    # From the background to 12-16 % over 4-6 minutes, then held 1-2 minutes.
    "failure_ramp": (FAILURE_RATE, True, (360.0, 480.0), lambda rng: {"fail_p": rng.uniform(0.12, 0.16)}),
    # A day-like curve: traffic dips to 35-45 % and back over 40-50 minutes; no drop.
    "day_curve": (TRAFFIC_DROP, False, (2400.0, 3000.0), lambda rng: {"keep_min": rng.uniform(0.35, 0.45)}),
}
_REGION_PARAMS.update(_CAUSED_PARAMS)
_NEWER_KINDS = frozenset(_CAUSED_PARAMS) | frozenset(LOW_VOLUME_KINDS)


def _place(p: _Planner, region: int, lo: float, hi: float, dmin: float, dmax: float) -> Optional[tuple[float, float]]:
    """A free span in ``region`` of a random duration in [dmin, dmax] inside [lo, hi], or None."""
    rng = p.rng
    if hi - lo < dmin:
        return None
    duration = rng.uniform(dmin, min(dmax, hi - lo))
    begin = rng.uniform(lo, hi - duration)
    end = begin + duration
    spans = p.region_spans.setdefault(region, [])
    if any(begin < b + REGION_GAP_SECONDS and end > a - REGION_GAP_SECONDS for a, b in spans):
        return None
    spans.append((begin, end))
    return begin, end


def _label_details(p: _Planner, inc: RegionIncident, params: dict[str, Any]) -> dict[str, Any]:
    """What a label says about a region incident, including its cause (None for a broad one)."""
    details = {k: v for k, v in params.items() if k not in ("cause_device", "cause_merchant", "share")}
    cause: Optional[dict[str, Any]] = None
    if inc.cause_device is not None:
        cause = {"dimension": "device", "value": inc.cause_device}
    elif inc.cause_merchant is not None:
        cause = {"dimension": "merchant_id", "value": merchant_key(inc.cause_merchant), "share": round(inc.share, 3)}
    if inc.fail_p is not None:
        details["cause"] = cause
    return details


def merchant_key(index: int) -> str:
    """The ``merchant_id`` of background merchant ``index``."""
    return f"m_{index:04d}"


def _region_incident(p: _Planner, kind: str, lo: float, hi: float) -> None:
    alert_type, expected, (dmin, dmax), effect = _REGION_PARAMS[kind]
    rng = p.rng
    for _ in range(50):
        if hi - lo < dmin:
            return
        region = rng.randrange(len(p.ctx.regions))
        span = _place(p, region, lo, hi, dmin, dmax)
        if span is None:
            continue
        _add_region_incident(p, kind, alert_type, expected, region, span, effect(rng))
        return


def _add_region_incident(
    p: _Planner,
    kind: str,
    alert_type: str,
    expected: bool,
    region: int,
    span: tuple[float, float],
    params: dict[str, Any],
) -> None:
    density = p.ctx.density
    first = max(p.first, int(math.ceil(span[0] * density)))
    stop = min(p.stop, int(math.ceil(span[1] * density)))
    inc = RegionIncident(kind, region, first, stop, **params)
    start = p.time_of(first)
    if kind == "failure_flap":
        inc.flap_every = max(1, int(round(45.0 * density)))
    elif kind == "failure_ramp":
        # Ramp over all but the last 60-120 s; the label starts where the rate crosses 2 %.
        inc.ramp_stop = first + int((stop - first) * p.rng.uniform(0.7, 0.8))
        background = p.ctx.region_fail_p(region) if region < len(p.ctx.regions) else LOW_VOLUME_FAIL_P
        crossing = first + (inc.ramp_stop - first) * (0.02 - background) / (inc.fail_p - background)  # type: ignore[operator]
        start = p.time_of(int(math.ceil(crossing)))
    p.plan.region_incidents.append(inc)
    names = p.ctx.regions + LOW_VOLUME_REGIONS
    p.label(kind, alert_type, names[region], start, p.time_of(stop), expected, **_label_details(p, inc, params))


def _low_volume(p: _Planner, kind: str, lo: float, hi: float) -> None:
    """An incident in the small region (30 % failing for 3-5 minutes), or nothing: noise only."""
    if kind == "low_volume_noise":
        return
    region = len(p.ctx.regions)  # LOW_VOLUME_REGIONS[0]
    for _ in range(50):
        span = _place(p, region, lo, hi, 180.0, 300.0)
        if span is not None:
            _add_region_incident(p, kind, FAILURE_RATE, True, region, span, {"fail_p": 0.3})
            return


# -- event incidents -------------------------------------------------------------


def _burst(p: _Planner, kind: str, t: float, user: str, region: int, amounts: list[float], span: float) -> None:
    gap = span / max(1, len(amounts) - 1)
    times = []
    for n, amount in enumerate(amounts):
        index = p.inject(t + n * gap, p.event(user, region, p.odd_cents(amount), "USD"))
        if index is None:
            return
        times.append(p.time_of(index))
    expected = not kind.endswith("near_miss")
    p.label(
        kind,
        VELOCITY,
        user,
        times[0],
        times[-1],
        expected,
        count=len(amounts),
        amount=round(sum(round(a, 2) for a in amounts), 2),
    )


def _velocity(p: _Planner, kind: str, lo: float, hi: float) -> None:
    rng = p.rng
    t = rng.uniform(lo, hi - 50.0)
    region = rng.randrange(len(p.ctx.regions))
    user = p.fresh_user()
    if kind == "velocity_attack":
        if rng.random() < 0.7:
            n = rng.randint(15, 30)
            amounts = [rng.uniform(5.0, 200.0) for _ in range(n)]
        else:
            n = rng.randint(4, 7)
            total = rng.uniform(12_000.0, 18_000.0)
            amounts = [total / n * rng.uniform(0.95, 1.05) for _ in range(n)]
            amounts = [min(a, 4_900.0) for a in amounts]
        _burst(p, kind, t, user, region, amounts, rng.uniform(20.0, 50.0))
    elif kind in ("velocity_edge", "velocity_near_miss"):
        n = 11 if kind == "velocity_edge" else 10
        _burst(p, kind, t, user, region, [rng.uniform(5.0, 200.0) for _ in range(n)], rng.uniform(30.0, 50.0))
    else:  # velocity_amount_edge / velocity_amount_near_miss: 5 payments of 2,100 or 1,900
        each = 2_100.0 if kind == "velocity_amount_edge" else 1_900.0
        _burst(p, kind, t, user, region, [each + 0.11 * k for k in range(5)], rng.uniform(30.0, 50.0))


def _amount_spike(p: _Planner, kind: str, lo: float, hi: float) -> None:
    rng = p.rng
    lo = max(lo, 8 * p.ctx.cycle_seconds + 60.0)
    if hi <= lo:
        return
    t = rng.uniform(lo, hi)
    user = p.pool_user(t, lambda u: p.ctx.typical_amount(u) <= 200.0)
    if user is None:
        return
    factor = {"amount_spike": rng.uniform(15.0, 30.0), "amount_edge": 14.0, "amount_near_miss": 7.0}[kind]
    typical = p.ctx.typical_amount(user)
    amount = p.odd_cents(typical * factor)
    region = p.ctx.home_region(user)
    index = p.inject(t, p.event(f"u{user}", region, amount, p.ctx.currency(user)))
    if index is not None:
        when = p.time_of(index)
        p.label(
            kind,
            AMOUNT_SPIKE,
            f"u{user}",
            when,
            when,
            kind != "amount_near_miss",
            amount=amount,
            typical=typical,
            factor=factor,
            transaction_index=index,
        )


def _impossible_travel(p: _Planner, kind: str, lo: float, hi: float) -> None:
    rng = p.rng
    regions = len(p.ctx.regions)
    if regions < 2:
        return
    if kind == "impossible_travel":
        lo = max(lo, 2 * p.ctx.cycle_seconds + 60.0)
        if hi <= lo:
            return
        t = rng.uniform(lo, hi)
        pooled = p.pool_user(t, lambda u: True)
        if pooled is None:
            return
        home = p.ctx.home_region(pooled)
        away = (home + rng.randrange(1, regions)) % regions
        amount = p.odd_cents(p.ctx.typical_amount(pooled) * rng.uniform(0.8, 1.2))
        index = p.inject(t, p.event(f"u{pooled}", away, amount, p.ctx.currency(pooled)))
        if index is not None:
            when = p.time_of(index)
            # The trip home is the same incident: the label spans the travel window.
            p.label(
                kind,
                IMPOSSIBLE_TRAVEL,
                f"u{pooled}",
                when,
                when + 1800.0,
                True,
                home=p.ctx.regions[home],
                away=p.ctx.regions[away],
            )
        return
    # travel_edge / travel_near_miss: a fresh user pays twice, 1,700 s or 1,900 s apart.
    apart = 1_700.0 if kind == "travel_edge" else 1_900.0
    if hi - lo <= apart:
        return
    t = rng.uniform(lo, hi - apart)
    user = p.fresh_user()
    home = rng.randrange(regions)
    away = (home + rng.randrange(1, regions)) % regions
    first = p.inject(t, p.event(user, home, rng.uniform(20.0, 200.0), "USD"))
    second = p.inject(t + apart, p.event(user, away, rng.uniform(20.0, 200.0), "USD"))
    if first is not None and second is not None:
        when = p.time_of(second)
        p.label(
            kind,
            IMPOSSIBLE_TRAVEL,
            user,
            when,
            when,
            kind == "travel_edge",
            seconds_apart=round(when - p.time_of(first), 3),
        )


def _fraud(p: _Planner, kind: str, lo: float, hi: float) -> None:
    rng = p.rng
    t = rng.uniform(lo, hi)
    region = rng.randrange(len(p.ctx.regions))
    user = p.fresh_user()
    merchant = rng.choice(FRAUD_MERCHANTS)
    if kind == "fraud_merchant":
        variant = rng.randrange(3)
        if variant == 0:  # merchant +40, currency +20
            fields = p.event(user, region, rng.uniform(20.0, 500.0), rng.choice(FOREIGN_CURRENCIES), merchant)
        elif variant == 1:  # merchant +40, round amount +10
            fields = p.event(user, region, 1000.0 * rng.randint(1, 4), "USD", merchant)
        else:  # amount > 5,000 +30, currency +20
            fields = p.event(user, region, p.odd_cents(rng.uniform(5_100.0, 9_000.0)), rng.choice(FOREIGN_CURRENCIES))
        expected = True
    elif kind == "fraud_edge":  # exactly 50: merchant +40, round amount +10
        fields = p.event(user, region, 2000.0, "EUR", merchant)
        expected = True
    else:  # fraud_near_miss: exactly 40, REVIEW_REQUIRED
        fields = (
            p.event(user, region, p.odd_cents(rng.uniform(20.0, 500.0)), "GBP", merchant)
            if rng.random() < 0.5
            else p.event(user, region, 6000.0, "USD")
        )
        expected = False
    index = p.inject(t, fields)
    if index is not None:
        when = p.time_of(index)
        p.label(
            kind,
            FRAUD_SUSPECTED,
            transaction_key(p.ctx.seed, index),
            when,
            when,
            expected,
            amount=fields["amount"],
            currency=fields["currency"],
            merchant_name=fields["merchant_name"],
            user_id=user,
        )


def _late(p: _Planner, kind: str, lo: float, hi: float) -> None:
    rng = p.rng
    index = p.index_at(rng.uniform(lo, hi))
    if index is None:
        return
    delay = rng.uniform(30.0, 120.0)
    p.plan.injected[index] = {"late_by": delay}
    p.label(
        kind,
        LATE,
        transaction_key(p.ctx.seed, index),
        p.time_of(index) - delay,
        p.time_of(index),
        True,
        late_by=round(delay, 3),
    )


def transaction_key(seed: int, index: int) -> str:
    """The transaction id of event ``index`` (deterministic, unique per seed)."""
    return f"txn_{seed}_{index}"


_KINDS: dict[str, tuple[Callable[[_Planner, str, float, float], None], bool]] = {
    **{kind: (_region_incident, True) for kind in _REGION_PARAMS},
    **{
        kind: (_velocity, False)
        for kind in (
            "velocity_attack",
            "velocity_edge",
            "velocity_near_miss",
            "velocity_amount_edge",
            "velocity_amount_near_miss",
        )
    },
    **{kind: (_amount_spike, False) for kind in ("amount_spike", "amount_edge", "amount_near_miss")},
    **{kind: (_impossible_travel, False) for kind in ("impossible_travel", "travel_edge", "travel_near_miss")},
    **{kind: (_fraud, False) for kind in ("fraud_merchant", "fraud_edge", "fraud_near_miss")},
    "late_event": (_late, False),
    **{kind: (_low_volume, False) for kind in LOW_VOLUME_KINDS},
}

for _scenario in SCENARIOS.values():
    for _kind in _scenario.rates:
        if _kind not in _KINDS:
            raise ValueError(f"scenario {_scenario.name!r} names unknown incident kind {_kind!r}")
