"""Keeps this process's reference data current: rules file and merchant table.

One loader per process (``dataflow.build_flow``): the first load runs before
the flow is built, so the first event is judged with the table and rules in
force; then two daemon threads, one for the rules file and one for the merchant
table (whose read of a million items takes tens of seconds: a rules edit must not
wait for it), re-read every ``reference.merchants.refresh_seconds`` and, for local
files (a mounted ConfigMap), check their stat every second so an edit takes
effect at once. A new version is published whole to the
:class:`~operators.reference.live.ReferenceHolder` the operators read per chunk.

Failures never stop the flow once it runs: an unreadable merchant table keeps
the last good copy (``paywatch_reference_load_failures_total``); a rules
document that fails validation, or changes a restart-only rule, is refused
with ONE warning naming the key and reason (it is not logged again until the
document changes) and counted in ``paywatch_rules_reload_failures_total``.
At start the same failures stop the flow with the message, as invalid
settings do.

The merchant table (file or DynamoDB, at start and at every refresh) is read
and built in a short-lived child process (connectors/reference/child.py), so
a million-item scan does not hold the GIL the flow's workers need; this
process only receives the built table. The rules file stays on the thread:
one small document.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from config.live_rules import RulesRefused, check_live_change, parse_rules_document
from config.settings import Settings
from connectors.preflight import StartError
from connectors.reference.child import ReadStopped, read_in_child
from connectors.reference.merchants import MerchantReadError, file_signature, read_merchants, report_skipped
from observability import reference_metrics
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import NOT_CONFIGURED, MerchantTable

logger = logging.getLogger(__name__)

S3_SCHEME = "s3://"
FILE_CHECK_SECONDS = 1.0


class ReferenceStartError(StartError):
    """The first load failed: the flow cannot start; the message names the setting and cause."""


class _RulesReadError(Exception):
    pass


class ReferenceLoader:
    """Reads the rules file and the merchant table; publishes new versions.

    :arg settings: validated settings (``rules``, ``rules_file``, ``reference``, ``aws``).
    :arg clients: optional boto3 clients by service name (tests); built on first use otherwise.
        An injected ``dynamodb`` client is used in this process (it cannot cross to a child).
    :arg merchants_in_child: read the merchant table in a child process (the default; see
        the module docstring); False reads it on this process's thread (benchmarks comparing both).
    """

    def __init__(
        self, settings: Settings, clients: Optional[dict[str, Any]] = None, merchants_in_child: bool = True
    ) -> None:
        self._settings = settings
        self._in_child = merchants_in_child and "dynamodb" not in (clients or {})
        self._clients = dict(clients or {})
        self._rules_file = settings.rules_file
        self._merchants_path = settings.reference.merchants.path
        self._refresh = settings.reference.merchants.refresh_seconds
        self._rules_digest: Optional[str] = None
        self._refused_digest: Optional[str] = None
        self._last_read_error: Optional[str] = None
        self._rules_signature: Optional[tuple[int, int, int]] = None
        self._merchants_signature: Optional[tuple[int, int, int]] = None
        self._next_full = {"rules": 0.0, "merchants": 0.0}
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.holder: Optional[ReferenceHolder] = None

    # -- reading -----------------------------------------------------------------

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            from connectors.aws.client import aws_client

            client = self._clients[service] = aws_client(service, self._settings, sink=False)
        return client

    def _read_rules_text(self) -> bytes:
        path = self._rules_file
        assert path is not None
        try:
            if path.startswith(S3_SCHEME):
                from botocore.exceptions import BotoCoreError, ClientError

                bucket, _, key = path[len(S3_SCHEME) :].partition("/")
                client = self._client("s3")
                try:
                    return client.get_object(Bucket=bucket, Key=key)["Body"].read()
                except (BotoCoreError, ClientError) as exc:
                    raise _RulesReadError(f"rules_file {path}: {exc}") from None
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise _RulesReadError(f"rules_file {path}: {exc.strerror or exc}") from None

    def _read_merchants(self) -> MerchantTable:
        """The whole table, read in a child process unless told otherwise.

        :raises MerchantReadError: the read failed.
        :raises ReadStopped: :meth:`stop` was called during the read.
        """
        path = self._merchants_path
        assert path is not None
        if self._in_child:
            table, skipped, first_bad = read_in_child(path, self._settings, self._stop)
            report_skipped(path, skipped, first_bad)
            return table
        dynamodb = self._client("dynamodb") if path.startswith("dynamodb://") else None
        return read_merchants(path, self._settings, dynamodb)

    # -- first load ----------------------------------------------------------------

    def load_initial(self) -> ReferenceHolder:
        """Load everything before the first event; the holder the operators read.

        :raises ReferenceStartError: the rules file or the merchant table cannot
            be read, or the rules are invalid.
        """
        rules = self._settings.rules
        if self._rules_file is not None:
            self._rules_signature = self._signature(self._rules_file)
            try:
                text = self._read_rules_text()
                rules = parse_rules_document(text, self._settings.rules)
            except _RulesReadError as exc:
                raise ReferenceStartError(str(exc)) from None
            except RulesRefused as exc:
                raise ReferenceStartError(f"rules_file {self._rules_file}: {exc}") from None
            self._rules_digest = hashlib.sha256(text).hexdigest()
        merchants = NOT_CONFIGURED
        if self._merchants_path is not None:
            self._merchants_signature = self._signature(self._merchants_path)
            try:
                merchants = self._read_merchants()
            except (MerchantReadError, ReadStopped) as exc:
                raise ReferenceStartError(f"reference.merchants.path: {exc}") from None
            reference_metrics.record_merchants(len(merchants), time.time())
            logger.info("merchant table %s: %d merchants", self._merchants_path, len(merchants))
        reference = LiveReference.of(rules, merchants)
        reference_metrics.record_rules_version(reference.version)
        self.holder = ReferenceHolder(reference)
        self._next_full = dict.fromkeys(self._next_full, time.monotonic() + self._refresh)
        return self.holder

    # -- refreshing -------------------------------------------------------------------

    @staticmethod
    def _signature(path: str) -> Optional[tuple[int, int, int]]:
        return None if "://" in path else file_signature(path)

    def refresh(self, force: bool = False) -> bool:
        """Re-read what is due (everything when ``force`` or the refresh interval passed;
        else only local files whose stat changed). Returns True when a new version was published."""
        rules = self.refresh_rules(force)
        merchants = self.refresh_merchants(force)
        return rules or merchants

    def _due(self, kind: str, force: bool) -> bool:
        """Whether ``kind`` ("rules" or "merchants") is due a full re-read; if so, the next one is scheduled."""
        if force or time.monotonic() >= self._next_full[kind]:
            self._next_full[kind] = time.monotonic() + self._refresh
            return True
        return False

    def refresh_rules(self, force: bool = False) -> bool:
        """Re-read the rules file if due or changed; True when a new version was published."""
        assert self.holder is not None, "load_initial() first"
        if self._rules_file is None:
            return False
        full = self._due("rules", force)
        signature = self._signature(self._rules_file)
        if not full and signature == self._rules_signature:
            return False
        self._rules_signature = signature
        current = self.holder.current
        rules = self._reload_rules(current)
        return rules is not current.rules and self._publish(rules=rules)

    def refresh_merchants(self, force: bool = False) -> bool:
        """Re-read the merchant table if due or changed; True when a new version was published."""
        assert self.holder is not None, "load_initial() first"
        if self._merchants_path is None:
            return False
        full = self._due("merchants", force)
        signature = self._signature(self._merchants_path)
        if not ((full and "://" in self._merchants_path) or signature != self._merchants_signature):
            return False
        self._merchants_signature = signature
        current = self.holder.current.merchants
        merchants = self._reload_merchants(current)
        return merchants is not current and self._publish(merchants=merchants)

    def _publish(self, rules: Any = None, merchants: Optional[MerchantTable] = None) -> bool:
        """Publish the version in force with ``rules`` or ``merchants`` replaced.

        The rules and the merchant table are refreshed on threads of their own
        (a million-item table takes tens of seconds to read; a rules edit must
        not wait for it), so the swap is made under a lock on the version in
        force at that moment.
        """
        assert self.holder is not None
        with self._publish_lock:
            current = self.holder.current
            reference = LiveReference.of(
                rules if rules is not None else current.rules,
                merchants if merchants is not None else current.merchants,
                previous=current,
            )
            self.holder.publish(reference)
        if reference.version != current.version:
            reference_metrics.record_rules_version(reference.version)
            logger.warning("rules version %s in force (was %s)", reference.version, current.version)
        return True

    def _reload_rules(self, current: LiveReference) -> Any:
        try:
            text = self._read_rules_text()
        except _RulesReadError as exc:
            reference_metrics.record_rules_failure()
            if str(exc) != self._last_read_error:
                self._last_read_error = str(exc)
                logger.warning("%s; keeping rules version %s", exc, current.version)
            return current.rules
        self._last_read_error = None
        digest = hashlib.sha256(text).hexdigest()
        if digest == self._rules_digest:
            return current.rules
        if digest == self._refused_digest:
            return current.rules
        try:
            rules = parse_rules_document(text, self._settings.rules)
            check_live_change(current.rules, rules)
        except RulesRefused as exc:
            self._refused_digest = digest
            reference_metrics.record_rules_failure()
            logger.warning(
                "rules_file %s refused: %s: %s; keeping rules version %s",
                self._rules_file,
                exc.key,
                exc.reason,
                current.version,
            )
            return current.rules
        self._rules_digest = digest
        self._refused_digest = None
        return rules

    def _reload_merchants(self, current: MerchantTable) -> MerchantTable:
        try:
            started = time.perf_counter()
            table = self._read_merchants()
        except ReadStopped:
            return current
        except MerchantReadError as exc:
            reference_metrics.record_merchant_failure()
            logger.warning("%s; keeping the last good table (%d merchants)", exc, len(current))
            return current
        reference_metrics.record_merchants(len(table), time.time())
        logger.info(
            "merchant table %s reloaded: %d merchants in %.2fs",
            self._merchants_path,
            len(table),
            time.perf_counter() - started,
        )
        return table

    # -- background thread ------------------------------------------------------------

    def start(self) -> None:
        """Refresh in daemon threads until :meth:`stop` (or the process ends): one for the
        rules file, one for the merchant table, so that a long table read never holds back
        a rules edit."""
        if self._threads:
            return
        for name, refresh, configured in (
            ("paywatch-rules", self.refresh_rules, self._rules_file is not None),
            ("paywatch-merchants", self.refresh_merchants, self._merchants_path is not None),
        ):
            if configured:
                thread = threading.Thread(target=self._run, args=(refresh,), name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _run(self, refresh: Callable[[], bool]) -> None:
        tick = min(FILE_CHECK_SECONDS, self._refresh)
        while not self._stop.wait(tick):
            try:
                refresh()
            except Exception:  # noqa: BLE001 - the loader must outlive any one bad read
                logger.exception("reference refresh failed; keeping the data in force")

    def stop(self) -> None:
        """End the refresh threads; a merchant read under way is abandoned and its child process ended."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
