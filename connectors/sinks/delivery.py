"""Buffered, retrying delivery behind every AWS sink partition.

Why: a Bytewax ``write_batch`` runs on the worker thread, so an AWS call that
waits out an outage there stalls the whole flow, and a failed call that
raises kills it. Instead each sink partition owns one :class:`Delivery`:

- ``write_batch`` converts items to request units (metric datums, SNS
  entries, DynamoDB items) and appends them to a bounded buffer; it returns
  at once unless the buffer is full, then it waits at most ``block_seconds``
  (backpressure for a slow sink) and spills the rest to the dead-letter
  output (a sink that is down must not grow memory without bound).
- a background thread sends the buffer in chunks of the API's limit,
  waiting up to ``linger_seconds`` for a chunk to fill (fewer calls for a
  bounded delay). A
  transient error (throttling, 5xx, connection refused) keeps the chunk and
  retries it after :class:`~connectors.aws.retry.Backoff`; per-record
  retries (DynamoDB ``UnprocessedItems``, SNS ``Failed`` with a service
  fault) go back to the front of the buffer, in order. A permanent error is
  logged once per error code with the fix, counted, and the chunk goes to
  the dead-letter writer with the error: nothing is dropped.
- the partition's snapshot is the list of units not yet acknowledged, so a
  crash between a snapshot and delivery re-sends them after resume
  (at-least-once; the sinks' deterministic ids make that effectively once).
- ``close`` (end of a bounded input) keeps retrying up to
  ``close_timeout_seconds`` and dead-letters what is still undelivered.
- ``fail_on_error`` makes a permanent error crash the flow (on the next
  ``write_batch`` or at ``close``) after the records were dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, Optional, TypeVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.aws.retry import Backoff, Failure, classify
from connectors.shutdown import flush_on_stop
from connectors.sinks.dead_letter import DeadLetterWriter, sink_dead_letter
from observability.sink_metrics import SinkSeries
from operators.state.snapshots import SnapshotFormat, unchanged

logger = logging.getLogger(__name__)

U = TypeVar("U")
X = TypeVar("X")

#: Dead-letter reasons written by the sinks (see docs/sinks.md).
PERMANENT_ERROR = "sink_permanent_error"
BUFFER_FULL = "sink_buffer_full"
UNDELIVERED_AT_CLOSE = "sink_undelivered_at_close"
BAD_ITEM = "sink_bad_item"


#: (sink, resource, error code) already logged: a permanent error is logged once per process, not per
#: partition or chunk; later occurrences are only counted.
_REPORTED: set[tuple[str, str, str]] = set()
_REPORTED_LOCK = threading.Lock()


class SinkError(RuntimeError):
    """A permanent sink error with ``fail_on_error`` set: the flow stops."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """Limits shared by every AWS sink (``sinks.retry`` in the settings)."""

    backoff: Backoff = Backoff()
    max_buffer: int = 100_000
    block_seconds: float = 2.0
    close_timeout_seconds: float = 30.0
    fail_on_error: bool = False
    linger_seconds: float = 0.0


@dataclass
class SendResult(Generic[U]):
    """What one API call left over: units to retry and units that failed for good."""

    retry: list[U] = field(default_factory=list)
    failed: list[tuple[U, Failure]] = field(default_factory=list)


@dataclass
class DeliveryStats:
    """Plain counters for tests and benchmarks (Prometheus gets the same)."""

    calls: int = 0
    delivered: int = 0
    transient_errors: int = 0
    permanent_errors: int = 0
    dead_lettered: int = 0
    retried_units: int = 0


class Delivery(Generic[U]):
    """One background sender with a bounded buffer; see the module docstring.

    :arg name: the sink partition, for logs and metrics (``dynamodb:alerts``).
    :arg send: sends one chunk; returns a :class:`SendResult` or raises
        (botocore exceptions are classified by :func:`classify`).
    :arg take: how many leading units of the buffer form the next chunk
        (the API's count and byte limits).
    :arg resource, setting: named in the log line of a permanent error.
    :arg pending: units restored from a snapshot; sent first.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[list[U]], SendResult[U]],
        take: Callable[[Sequence[U]], int],
        dead_letters: DeadLetterWriter,
        policy: DeliveryPolicy,
        *,
        resource: str,
        setting: str,
        pending: Optional[list[U]] = None,
        buffer_setting: str = "sinks.retry.max_buffer",
    ) -> None:
        self.name = name
        self.stats = DeliveryStats()
        self._send = send
        self._take = take
        self._dead_letters = dead_letters
        self._policy = policy
        self._resource = resource
        self._setting = setting
        self._buffer_setting = buffer_setting
        self._pending: deque[U] = deque(pending or ())
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = threading.Event()
        self._error: Optional[SinkError] = None
        self._outage_since: Optional[float] = None
        self._spilling = False
        self._metrics = SinkSeries(name.rsplit("-", 1)[0], name)
        self._metrics.buffered.set(len(self._pending))
        self._thread = threading.Thread(target=self._run, name=f"paywatch-sink-{name}", daemon=True)
        self._thread.start()
        flush_on_stop(self)

    # -- called on the Bytewax worker thread -------------------------------------

    def submit(self, units: list[U]) -> None:
        """Queue units for sending; never waits longer than ``block_seconds``.

        :raises SinkError: after a permanent error when ``fail_on_error`` is set.
        """
        self._raise_if_failed()
        if not units:
            return
        policy = self._policy
        with self._cond:
            if len(self._pending) + len(units) > policy.max_buffer and policy.block_seconds > 0:
                deadline = time.monotonic() + policy.block_seconds
                while len(self._pending) + len(units) > policy.max_buffer and not self._error:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            room = max(0, policy.max_buffer - len(self._pending))
            accepted, overflow = units[:room], units[room:]
            self._pending.extend(accepted)
            self._metrics.buffered.set(len(self._pending))
            self._cond.notify_all()
        if overflow:
            if not self._spilling:
                logger.warning(
                    "%s: buffer full (%d units, %s) while %s is slow or down; "
                    "spilling new records to the dead-letter output until it drains",
                    self.name,
                    policy.max_buffer,
                    self._buffer_setting,
                    self._resource,
                )
                self._spilling = True
            self._dead_letter(overflow, BUFFER_FULL, None)
        elif self._spilling and room > len(units):
            self._spilling = False

    def snapshot(self) -> list[U]:
        """Units not yet acknowledged by AWS (in flight included)."""
        with self._cond:
            return list(self._pending)

    def flush(self, timeout: float) -> bool:
        """Wait until the buffer is empty; True if it emptied in time (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and not self._error:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return not self._pending

    def flush_on_stop(self, deadline: float) -> None:
        self.flush(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Deliver what is left within ``close_timeout_seconds``, dead-letter the rest.

        :raises SinkError: after a permanent error when ``fail_on_error`` is set.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(self._policy.close_timeout_seconds)
        if self._thread.is_alive():
            self._abandon.set()
            with self._cond:
                self._cond.notify_all()
            self._thread.join()
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._metrics.buffered.set(0)
        if left:
            logger.error(
                "%s: %d units still undelivered to %s at close (sinks.retry.close_timeout_seconds=%g); "
                "written to the dead-letter output",
                self.name,
                len(left),
                self._resource,
                self._policy.close_timeout_seconds,
            )
            self._dead_letter(left, UNDELIVERED_AT_CLOSE, None)
        self._raise_if_failed()

    # -- background thread --------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._policy.linger_seconds > 0 and attempt == 0:
                    # Wait briefly for a full chunk: 25 items per BatchWriteItem instead of 5.
                    deadline = time.monotonic() + self._policy.linger_seconds
                    while not self._closing and self._take(self._pending) >= len(self._pending):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                if not self._pending or self._abandon.is_set() or self._error:
                    return
                count = max(1, min(self._take(self._pending), len(self._pending)))
                chunk = list(islice(self._pending, count))
            started = time.perf_counter()
            try:
                result = self._send(chunk)
            except Exception as exc:  # noqa: BLE001 - classified, never lost
                self.stats.calls += 1
                self._metrics.request(time.perf_counter() - started, 0)
                failure = classify(exc)
                if failure.transient:
                    attempt += 1
                    self._on_transient(failure, attempt, len(chunk))
                    if self._abandon.wait(self._policy.backoff.delay(attempt)):
                        return
                    continue
                self._remove(count, [])
                self._on_permanent(chunk, failure)
                attempt = 0
                continue
            self.stats.calls += 1
            self._remove(count, result.retry)
            delivered = len(chunk) - len(result.retry) - len(result.failed)
            self.stats.delivered += delivered
            self._metrics.request(time.perf_counter() - started, delivered)
            for unit, failure in result.failed:
                self._on_permanent([unit], failure)
            if self._outage_since is not None:
                logger.warning(
                    "%s: %s reachable again after %.1fs",
                    self.name,
                    self._resource,
                    time.monotonic() - self._outage_since,
                )
                self._outage_since = None
            if result.retry:
                self.stats.retried_units += len(result.retry)
                attempt += 1
                if self._abandon.wait(self._policy.backoff.delay(attempt)):
                    return
            else:
                attempt = 0

    def _remove(self, count: int, retry: list[U]) -> None:
        with self._cond:
            for _ in range(count):
                self._pending.popleft()
            self._pending.extendleft(reversed(retry))
            self._metrics.buffered.set(len(self._pending))
            self._cond.notify_all()

    def _on_transient(self, failure: Failure, attempt: int, size: int) -> None:
        self.stats.transient_errors += 1
        self._metrics.error(True)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "%s: transient error from %s (%s); retrying with backoff, %d units buffered",
                self.name,
                self._resource,
                failure.describe(),
                len(self._pending),
            )
        else:
            logger.debug("%s: retry %d of a %d-unit chunk failed: %s", self.name, attempt, size, failure.code)

    def _on_permanent(self, units: list[U], failure: Failure) -> None:
        self.stats.permanent_errors += 1
        self._metrics.error(False)
        report_key = (self.name.rsplit("-", 1)[0], self._resource, failure.code)
        with _REPORTED_LOCK:
            first = report_key not in _REPORTED
            _REPORTED.add(report_key)
        if first:
            logger.error(
                "%s: permanent error from %s, records go to the dead-letter output: %s",
                self.name,
                self._resource,
                failure.describe(self._resource, self._setting),
            )
        self._dead_letter(units, PERMANENT_ERROR, failure)
        if self._policy.fail_on_error and self._error is None:
            self._error = SinkError(
                f"{self.name}: {failure.describe(self._resource, self._setting)} (sinks.retry.fail_on_error is true)"
            )
            with self._cond:
                self._cond.notify_all()

    def _dead_letter(self, units: list[U], reason: str, failure: Optional[Failure]) -> None:
        self.stats.dead_lettered += len(units)
        self._metrics.dead_letters(reason, len(units))
        self._dead_letters.write([sink_dead_letter(self.name, self._resource, reason, failure, u) for u in units])

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


BUFFER_FORMAT = SnapshotFormat("aws_sink_buffer", 1, {0: unchanged})
"""The partition's undelivered units (a list); version 1 added the envelope."""


class BufferedSinkPartition(StatefulSinkPartition[X, tuple]):
    """A Bytewax sink partition that converts items to units and hands them to a :class:`Delivery`."""

    def __init__(self, delivery: Delivery, convert: Callable[[X], list], dead_letters: DeadLetterWriter) -> None:
        self.delivery = delivery
        self._convert = convert
        self._dead_letters = dead_letters

    def write_batch(self, values: list[X]) -> None:
        units: list = []
        for value in values:
            try:
                units.extend(self._convert(value))
            except Exception as exc:  # noqa: BLE001 - a bad item must not stop the flow
                failure = classify(exc)
                logger.error("%s: cannot convert an item (%s); dead-lettered", self.delivery.name, failure.describe())
                self._dead_letters.write([sink_dead_letter(self.delivery.name, "", BAD_ITEM, failure, value)])
        self.delivery.submit(units)

    def snapshot(self) -> tuple:
        return BUFFER_FORMAT.save(self.delivery.snapshot())

    def close(self) -> None:
        self.delivery.close()


class BufferedAwsSink(FixedPartitionedSink[Any, tuple]):
    """Base of the AWS sinks: ``partitions`` fixed partitions routed by item key.

    Fixed (not dynamic) partitions because the undelivered buffer is resume
    state: Bytewax snapshots it with the source positions. Changing the
    number of partitions between runs drops the resume state of the
    partitions that no longer exist (their units are re-produced by the
    replay from the source anyway only if the snapshot predates them).
    """

    def __init__(self, name: str, partitions: int, settings: Any, dead_letters: DeadLetterWriter) -> None:
        self.name = name
        self.partitions = partitions
        self.settings = settings
        self.dead_letters = dead_letters
        self.deliveries: list[Delivery] = []

    def list_parts(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.partitions)]

    snapshot_format = BUFFER_FORMAT

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]) -> BufferedSinkPartition:
        pending: Optional[list] = BUFFER_FORMAT.load(resume_state) if resume_state is not None else None
        return self.build_buffered(for_part, pending)

    @abstractmethod
    def build_buffered(self, part: str, resume_state: Optional[list]) -> BufferedSinkPartition:
        """Build the partition: subclasses create their client and call :meth:`delivered`."""

    def delivered(
        self,
        part: str,
        send: Callable[[list[Any]], SendResult],
        take: Callable[[Sequence[Any]], int],
        convert: Callable[[Any], list],
        *,
        resource: str,
        setting: str,
        pending: Optional[list],
    ) -> BufferedSinkPartition:
        """A partition whose units go through a :class:`Delivery` with the configured retry policy."""
        delivery = Delivery(
            part,
            send,
            take,
            self.dead_letters,
            delivery_policy(self.settings.sinks.retry),
            resource=resource,
            setting=setting,
            pending=pending,
        )
        self.deliveries.append(delivery)
        return BufferedSinkPartition(delivery, convert, self.dead_letters)


def delivery_policy(retry: Any) -> DeliveryPolicy:
    """The :class:`DeliveryPolicy` of ``settings.sinks.retry``."""
    return DeliveryPolicy(
        backoff=Backoff(retry.base_seconds, retry.max_seconds),
        max_buffer=retry.max_buffer,
        block_seconds=retry.block_seconds,
        close_timeout_seconds=retry.close_timeout_seconds,
        fail_on_error=retry.fail_on_error,
        linger_seconds=retry.linger_seconds,
    )
