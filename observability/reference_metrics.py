"""Prometheus series of the live reference data (rules file, merchant table).

``paywatch_rules_info{version}`` is 1 for the rules version this process
runs (one series per process at a time), so a dashboard shows a rollout of
new rules reaching every process; a refused or unreadable rules document
counts in ``paywatch_rules_reload_failures_total``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from observability.registry import REGISTRY

RULES_INFO = Gauge(
    "paywatch_rules_info",
    "1 for the rules version (short hash) in force in this process.",
    ["version"],
    registry=REGISTRY,
)
RULES_RELOAD_FAILURES = Counter(
    "paywatch_rules_reload_failures",
    "Rules documents refused (invalid, or changing a restart-only rule) or unreadable at reload.",
    registry=REGISTRY,
)
MERCHANTS = Gauge("paywatch_reference_merchants", "Merchants in the loaded merchant table.", registry=REGISTRY)
MERCHANT_LOAD_FAILURES = Counter(
    "paywatch_reference_load_failures",
    "Merchant table reads that failed (the last good copy stays in force).",
    registry=REGISTRY,
)
MERCHANTS_LOADED_AT = Gauge(
    "paywatch_reference_loaded_timestamp_seconds",
    "Wall-clock time of the last successful merchant table load.",
    registry=REGISTRY,
)


def record_rules_version(version: str) -> None:
    """Show ``version`` as the one version this process runs."""
    RULES_INFO.clear()
    RULES_INFO.labels(version=version).set(1)


def record_rules_failure() -> None:
    RULES_RELOAD_FAILURES.inc()


def record_merchants(count: int, loaded_at: float) -> None:
    MERCHANTS.set(count)
    MERCHANTS_LOADED_AT.set(loaded_at)


def record_merchant_failure() -> None:
    MERCHANT_LOAD_FAILURES.inc()
