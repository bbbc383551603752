"""The built-in simulator: deterministic, seeded payment traffic with labelled incidents.

Every event is a pure function of ``(settings, index)``:

- its event time is ``start + index / events_per_event_second``;
- its user comes from a per-cycle permutation of the user pool (every user
  pays exactly once per cycle of ``users`` events), so normal users stay far
  under the velocity limits however long the run;
- its details (status, amount, merchant, jitter) come from a counter-based
  hash of ``(seed, index)``, not from a sequential random stream;
- incidents come from :mod:`connectors.simulator.scenarios`, planned per hour of event
  time from ``(seed, scenario, epoch)``.

So the stream does not depend on the number of partitions, on batching, on
pacing or on where a run resumed: partition ``k`` simply keeps the indices
whose user hashes to ``k`` (``crc32(user_id) % partitions``, as a keyed Kafka
producer would), and its snapshot is the next index to look at.

Background traffic is built to raise no alert under the default rules: a
0.4-0.9 % failure rate per region, each user paying 0.8-1.25x their own
typical amount (at most 2,000) from their home region in USD/EUR/GBP, at
ordinary merchants. Scenarios with a low-volume kind add two small regions
(``LOW_VOLUME_REGIONS``) fed from their own users.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Optional
from zlib import crc32

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from config.settings import SimulatorSettings
from connectors.simulator.scenarios import (
    DEVICES,
    LOW_VOLUME_EVENTS_PER_SECOND,
    LOW_VOLUME_FAIL_P,
    LOW_VOLUME_KINDS,
    LOW_VOLUME_REGIONS,
    SCENARIOS,
    EpochPlan,
    PlanContext,
    epoch_events,
    plan_epoch,
    transaction_key,
)
from connectors.sources.chunk_size import ChunkSize
from operators.records import RawChunk

logger = logging.getLogger(__name__)

ORIGIN = "simulator"
_MASK = (1 << 64) - 1
_LOW_VOLUME_SALT = 0x6C6F772D766F6C75
_CAUSE_SALT = 0x63617573652D6D65
_GAMMA = 0x9E3779B97F4A7C15
_JITTER_P = 0.05
_JITTER_MAX_MS = 5000
_DEVICES = DEVICES
# Users of each low-volume region (each pays about every 250 s).
_LOW_VOLUME_USERS = 300
# Ordinary merchants; none holds a fraud word (checked in _Population).
MERCHANTS = (
    "Northwind Grocers",
    "Blue Harbor Coffee",
    "Metro Transit",
    "Sunrise Pharmacy",
    "Atlas Books",
    "Green Valley Market",
    "City Cinema",
    "Pixel Electronics",
    "Harbor Fuel",
    "Maple Bakery",
    "Orbit Telecom",
    "Summit Outdoor",
    "Lumen Streaming",
    "Riverside Diner",
    "Cobalt Airlines",
    "Urban Fitness",
    "Willow Florist",
    "Quartz Jewelers",
    "Nimbus Cloud Services",
    "Cedar Hardware",
    "Aurora Hotels",
    "Beacon Insurance",
    "Copper Kitchen",
    "Delta Rideshare",
    "Echo Music",
    "Falcon Logistics",
    "Garnet Fashion",
    "Horizon Travel",
    "Indigo Games",
    "Juniper Pet Supplies",
)


def _mix(x: int) -> int:
    """SplitMix64 finaliser: 64 well-mixed bits from a counter."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


class _Population:
    """The user pool: home region, typical amount, currency, device per user."""

    def __init__(self, seed: int, n_users: int, regions: tuple[str, ...]) -> None:
        rng = random.Random(f"paywatch-users:{seed}")
        weights = [1.0 / (1.0 + 0.3 * k) for k in range(len(regions))]
        self.user_ids = [f"u{n}" for n in range(n_users)]
        self.region = rng.choices(range(len(regions)), weights=weights, k=n_users)
        self.typical = [min(2000.0, max(3.0, rng.lognormvariate(math.log(45.0), 0.9))) for _ in range(n_users)]
        self.currency = [self._currency(regions[r], rng) for r in self.region]
        self.device = [rng.choice(_DEVICES) for _ in range(n_users)]
        self.region_fail_p = [rng.uniform(0.004, 0.009) for _ in regions]

    @staticmethod
    def _currency(region: str, rng: random.Random) -> str:
        if region.upper().startswith("EU"):
            return "GBP" if rng.random() < 0.2 else "EUR"
        return "USD"


@lru_cache(maxsize=4)
def _population(seed: int, n_users: int, regions: tuple[str, ...]) -> _Population:
    return _Population(seed, n_users, regions)


@dataclass
class _Cycle:
    number: int
    a: int
    b: int


#: With ``rate: 0``, no ``events`` limit and no ``start``, event time begins this far back.
UNBOUNDED_HEADSTART_SECONDS = 7 * 86400


def default_start(settings: SimulatorSettings, now: float, next_index: int = 0) -> float:
    """Event time of index 0 when ``start`` is unset, chosen so event time never runs
    ahead of the wall clock (the parse step dead-letters events more than
    ``validation.max_future_seconds`` ahead as ``future``).

    Paced (``rate`` > 0): the stream is live, event ``next_index`` is now and
    time advances with the wall clock (at ``rate / event_rate`` of it). As fast
    as possible (``rate: 0``), a bounded run ends now: its first event is
    ``events / event_rate`` seconds back. An endless run at full speed starts
    a week back (``UNBOUNDED_HEADSTART_SECONDS``) and overtakes the clock only
    after a week of event time (605 million events at 1,000 per event-second).
    """
    density = settings.events_per_event_second
    if settings.rate > 0:
        return math.floor(now) - next_index / density
    if settings.events:
        return math.floor(now) - settings.events / density
    return math.floor(now) - UNBOUNDED_HEADSTART_SECONDS


class EventGenerator:
    """Builds the payload of any event index; shared logic of every partition."""

    def __init__(self, settings: SimulatorSettings, start: Optional[float] = None) -> None:
        self.settings = settings
        self.scenario = SCENARIOS[settings.scenario]
        self.density = settings.events_per_event_second
        self.limit = settings.events or None
        if start is None:
            start = settings.start.timestamp() if settings.start is not None else default_start(settings, time.time())
        self.start = start
        self.regions = tuple(settings.regions)
        self.n_users = settings.users
        self.pop = _population(settings.seed, settings.users, self.regions)
        self.cycle_seconds = self.n_users / self.density
        low_volume = any(kind in self.scenario.rates for kind in LOW_VOLUME_KINDS)
        # Share of event slots (out of 65,536) given to the small regions, all together.
        self._low_share = (
            int(65536 * LOW_VOLUME_EVENTS_PER_SECOND * len(LOW_VOLUME_REGIONS) / self.density) if low_volume else 0
        )
        self._seed_key = _mix(settings.seed * _GAMMA & _MASK)
        self._per_epoch = epoch_events(self.density)
        self._plans: dict[int, EpochPlan] = {}
        self._cycle = _Cycle(-1, 1, 0)
        self._prefix_second = -1
        self._prefix = ""
        self._ctx = PlanContext(
            seed=settings.seed,
            scenario=self.scenario,
            density=self.density,
            start=self.start,
            limit=self.limit,
            regions=self.regions,
            n_users=self.n_users,
            cycle_seconds=self.cycle_seconds,
            home_region=self.pop.region.__getitem__,
            typical_amount=self.pop.typical.__getitem__,
            currency=self.pop.currency.__getitem__,
            region_fail_p=self.pop.region_fail_p.__getitem__,
        )
        if self.cycle_seconds < 20.0:
            logger.warning(
                "simulator.users=%d at %.0f events per event-second: each user pays every %.1f s, "
                "so normal users may trip the velocity rule; use at least %d users",
                self.n_users,
                self.density,
                self.cycle_seconds,
                int(20 * self.density),
            )

    # -- plans -------------------------------------------------------------------

    def plan(self, epoch: int) -> EpochPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            if len(self._plans) > 4:
                self._plans.clear()
            plan = self._plans[epoch] = plan_epoch(self._ctx, epoch)
        return plan

    def user_of(self, index: int) -> int:
        """Pool user of background event ``index``: an affine permutation per cycle."""
        number, pos = divmod(index, self.n_users)
        cycle = self._cycle
        if cycle.number != number:
            h = _mix((self._seed_key ^ 0x5A5A5A5A) + number * _GAMMA & _MASK)
            a = h % self.n_users or 1
            while math.gcd(a, self.n_users) != 1:
                a += 1
            cycle = self._cycle = _Cycle(number, a, (h >> 32) % self.n_users)
        return (cycle.a * pos + cycle.b) % self.n_users

    def timestamp(self, t: float) -> str:
        ms = int(math.floor(t * 1000.0 + 1e-6))
        second, millis = divmod(ms, 1000)
        if second != self._prefix_second:
            self._prefix_second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{millis:03d}Z"

    # -- the scan ------------------------------------------------------------------

    def scan(
        self,
        begin: int,
        stop: int,
        part: Optional[int],
        n_parts: int,
        max_events: int,
        owner: Optional[list[int]] = None,
    ) -> tuple[list[tuple[int, str, bytes]], int]:
        """Events with index in ``[begin, stop)`` that belong to ``part``.

        :arg part: partition to keep, or None for all.
        :arg owner: partition of every pool user (required with ``part``).
        :returns: ``(index, user_id, payload)`` triples (at most
            ``max_events``) and the next index to scan.
        """
        if part is not None and owner is None:
            raise ValueError("scan: a partition's scan needs the owner of every pool user")
        out: list[tuple[int, str, bytes]] = []
        pop = self.pop
        user_ids, regions_of, typical, currency, device = (
            pop.user_ids,
            pop.region,
            pop.typical,
            pop.currency,
            pop.device,
        )
        region_names = self.regions
        fail_base = pop.region_fail_p
        seed_key = self._seed_key
        density = self.density
        start = self.start
        jitter = self.scenario.jitter
        n_merchants = len(MERCHANTS)
        dumps = orjson.dumps
        seed = self.settings.seed
        low_share = self._low_share
        index = begin
        while index < stop and len(out) < max_events:
            epoch = index // self._per_epoch
            epoch_stop = min(stop, (epoch + 1) * self._per_epoch)
            plan = self.plan(epoch)
            injected = plan.injected
            active = [inc for inc in plan.region_incidents if inc.first < epoch_stop and inc.stop > index]
            while index < epoch_stop and len(out) < max_events:
                i = index
                index += 1
                crafted = injected.get(i)
                late_by = 0.0
                if crafted is not None:
                    if "late_by" not in crafted:
                        user_id = crafted["user_id"]
                        if part is not None and crc32(user_id.encode()) % n_parts != part:
                            continue
                        event = {
                            "transaction_id": transaction_key(seed, i),
                            "timestamp": self.timestamp(start + i / density),
                            **crafted,
                        }
                        out.append((i, user_id, dumps(event)))
                        continue
                    late_by = crafted["late_by"]
                h = _mix(seed_key + i * _GAMMA & _MASK)
                if low_share and not late_by:
                    h4 = _mix(h ^ _LOW_VOLUME_SALT)
                    if (h4 & 0xFFFF) < low_share:
                        event = self._low_volume_event(i, h, h4, active)
                        user_id = event["user_id"]
                        if part is None or crc32(user_id.encode()) % n_parts == part:
                            out.append((i, user_id, dumps(event)))
                        continue
                user = self.user_of(i)
                if owner is not None and part is not None and owner[user] != part:
                    continue
                region = regions_of[user]
                fail_p = fail_base[region]
                merchant = (h >> 32) % n_merchants
                if active and not late_by:
                    dropped = False
                    for inc in active:
                        if inc.region == region and inc.first <= i < inc.stop:
                            if inc.keep is not None or inc.keep_min is not None:
                                if ((h >> 48) & 0xFFFF) >= inc.kept(i) * 65536:
                                    dropped = True
                                    break
                            if inc.fail_p is None:
                                continue
                            if inc.cause_device is not None:
                                if device[user] == inc.cause_device:
                                    fail_p = inc.failure_p(i, fail_base[region])
                            elif inc.cause_merchant is not None:
                                if (_mix(h ^ _CAUSE_SALT) & 0xFFFF) < inc.share * 65536:
                                    merchant = inc.cause_merchant
                                if merchant == inc.cause_merchant:
                                    fail_p = inc.failure_p(i, fail_base[region])
                            else:
                                fail_p = inc.failure_p(i, fail_base[region])
                    if dropped:
                        continue
                t = start + i / density
                if late_by:
                    t -= late_by
                elif jitter:
                    h2 = _mix(h ^ _GAMMA)
                    if (h2 & 0xFF) < _JITTER_P * 256:
                        t -= ((h2 >> 8) & 0xFFFF) / 65536 * _JITTER_MAX_MS / 1000.0
                amount = round(typical[user] * (0.8 + 0.45 * ((h >> 16) & 0xFFFF) / 65536), 2)
                user_id = user_ids[user]
                event = {
                    "transaction_id": transaction_key(seed, i),
                    "user_id": user_id,
                    "payment_status": "FAIL" if (h & 0xFFFF) < fail_p * 65536 else "SUCCESS",
                    "timestamp": self.timestamp(t),
                    "amount": amount,
                    "currency": currency[user],
                    "merchant_id": f"m_{merchant:04d}",
                    "merchant_name": MERCHANTS[merchant],
                    "device": device[user],
                    "region": region_names[region],
                }
                out.append((i, user_id, dumps(event)))
        return out, index

    def _low_volume_event(self, i: int, h: int, h4: int, active: list) -> dict:
        """Event slot ``i`` given to a small region: its own users, amounts and background failures."""
        j = (h4 >> 16) % len(LOW_VOLUME_REGIONS)
        region = len(self.regions) + j
        fail_p = LOW_VOLUME_FAIL_P
        for inc in active:
            if inc.region == region and inc.first <= i < inc.stop and inc.fail_p is not None:
                fail_p = inc.failure_p(i, fail_p)
        merchant = (h >> 32) % len(MERCHANTS)
        return {
            "transaction_id": transaction_key(self.settings.seed, i),
            "user_id": f"lv{j}_{(h4 >> 20) % _LOW_VOLUME_USERS}",
            "payment_status": "FAIL" if (h & 0xFFFF) < fail_p * 65536 else "SUCCESS",
            "timestamp": self.timestamp(self.start + i / self.density),
            "amount": round(20.0 + 60.0 * ((h >> 16) & 0xFFFF) / 65536, 2),
            "currency": "USD",
            "merchant_id": f"m_{merchant:04d}",
            "merchant_name": MERCHANTS[merchant],
            "device": _DEVICES[(h4 >> 40) % len(_DEVICES)],
            "region": LOW_VOLUME_REGIONS[j],
        }

    def owners(self, n_parts: int) -> list[int]:
        """Partition of every pool user: ``crc32(user_id) % n_parts``."""
        return [crc32(uid.encode()) % n_parts for uid in self.pop.user_ids]


# -- public helpers for other tools ------------------------------------------------


def iter_events(settings: SimulatorSettings) -> Iterator[tuple[str, bytes]]:
    """Every event of the simulation in index order as ``(user_id, payload)``.

    The user id is the partition key a producer should use (Kafka key,
    Kinesis partition key), so that a user's events stay in order. Endless
    when ``settings.events`` is 0.
    """
    gen = EventGenerator(settings)
    index = 0
    step = 10_000
    while gen.limit is None or index < gen.limit:
        stop = index + step if gen.limit is None else min(index + step, gen.limit)
        events, index = gen.scan(index, stop, None, 1, step)
        for _i, user_id, payload in events:
            yield user_id, payload


def scenario_labels(settings: SimulatorSettings) -> list[dict]:
    """Ground truth of a bounded simulation: one label per injected incident.

    Each label: ``type`` (alert type, or ``LATE`` for a deliberately late
    event), ``key`` (region, user id or transaction id), ``start`` and
    ``end`` (event time, ISO-8601 UTC), ``expected`` (False for near misses
    that must not alert), ``scenario`` (incident kind) and ``details``.

    :raises ValueError: for an endless simulation (``events`` = 0).
    """
    if not settings.events:
        raise ValueError("simulator.events is 0 (endless): labels need a bounded simulation")
    gen = EventGenerator(settings)
    labels = []
    last_epoch = (settings.events - 1) // epoch_events(gen.density)
    for epoch in range(last_epoch + 1):
        for label in plan_epoch(gen._ctx, epoch).labels:
            labels.append({**label, "start": _iso(label["start"]), "end": _iso(label["end"])})
    return labels


def _iso(t: float) -> str:
    ms = int(math.floor(t * 1000.0 + 1e-6))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


# -- the Bytewax source -------------------------------------------------------------


class SimulatorSource(FixedPartitionedSource[RawChunk, int]):
    """Partitions ``simulator/0`` .. ``simulator/{n-1}``; state = next event index.

    ``rate`` (events per wall-clock second, all partitions together) is
    enforced with ``next_awake``: each partition walks the shared index
    space at that pace and emits its own share. With ``start`` unset the
    stream is live: event time tracks the wall clock from the moment the
    partition is built, also after a resume; at full speed (``rate: 0``) it
    starts in the past so that it never runs ahead of the clock
    (:func:`default_start`).

    Chunk size (:mod:`connectors.sources.chunk_size`): a chunk that came out
    full (more events were due than it held: always at ``rate: 0``) doubles
    the next one up to ``max_batch_size``; one that emptied what was due
    goes back to ``batch_size``.
    """

    def __init__(
        self, settings: SimulatorSettings, batch_size: int = 1000, max_batch_size: Optional[int] = None
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.max_batch_size = max_batch_size or batch_size

    def list_parts(self) -> list[str]:
        return [f"{ORIGIN}/{k}" for k in range(self.settings.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _SimulatorPartition:
        part = int(for_part.rsplit("/", 1)[1])
        next_index = resume_state or 0
        start = None
        if self.settings.start is None:
            start = default_start(self.settings, time.time(), next_index)
        gen = EventGenerator(self.settings, start)
        sizes = ChunkSize(self.batch_size, self.max_batch_size)
        return _SimulatorPartition(gen, for_part, part, self.settings.partitions, next_index, self.settings.rate, sizes)


class _SimulatorPartition(StatefulSourcePartition[RawChunk, int]):
    _TICK_SECONDS = 0.05

    def __init__(
        self, gen: EventGenerator, name: str, part: int, n_parts: int, next_index: int, rate: float, sizes: ChunkSize
    ) -> None:
        self._gen = gen
        self._name = name
        self._part = part
        self._n_parts = n_parts
        self._owner = gen.owners(n_parts)
        self._next = next_index
        self._first = next_index
        self._rate = rate
        self._sizes = sizes
        self._wall0 = time.time()
        self._done_sent = False
        self._awake: Optional[datetime] = None

    def next_batch(self) -> list[RawChunk]:
        limit = self._gen.limit
        if limit is not None and self._next >= limit:
            if self._done_sent:
                raise StopIteration()
            self._done_sent = True
            return [RawChunk(self._name, self._n_parts, [], ORIGIN, first_position=self._next, done=True)]
        asked = self._sizes.size
        stop = self._next + asked * self._n_parts * 4
        if self._rate > 0:
            due = self._first + int((time.time() - self._wall0) * self._rate)
            stop = min(stop, due)
        if limit is not None:
            stop = min(stop, limit)
        self._awake = None
        if stop <= self._next:
            self._schedule()
            return []
        events, self._next = self._gen.scan(self._next, stop, self._part, self._n_parts, asked, self._owner)
        self._sizes.update(behind=len(events) >= asked)
        if self._rate > 0:
            self._schedule()
        if not events:
            return []
        positions = [e[0] for e in events]
        return [
            RawChunk(
                self._name,
                self._n_parts,
                [e[2] for e in events],
                ORIGIN,
                first_position=positions[0],
                positions=positions,
            )
        ]

    def _schedule(self) -> None:
        """Wake when the next tick's worth of indices is due (rate-limited only)."""
        if self._rate <= 0:
            return
        ahead = max(1.0, self._rate * self._TICK_SECONDS)
        due_at = self._wall0 + (self._next - self._first + ahead) / self._rate
        if due_at > time.time():
            self._awake = datetime.fromtimestamp(due_at, UTC)

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._gen = None  # type: ignore[assignment]
