"""Prometheus series of the live reference data (rules file, merchant table).

``paywatch_rules_info{version}`` is 1 for the rules version this process
runs (one series per process at a time), so a dashboard shows a rollout of
new rules reaching every process; a refused or unreadable rules document
counts in ``paywatch_rules_reload_failures_total``.
"""

from __future__ import annotations

from observability.registry import (
    MERCHANT_LOAD_FAILURES,
    MERCHANTS,
    MERCHANTS_LOADED_AT,
    RULES_INFO,
    RULES_RELOAD_FAILURES,
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
