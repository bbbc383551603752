"""Alert records: one shape for every alert type, with deterministic ids.

``alert_id`` is built from what decided the alert (type, key, the window end
or the triggering transaction, state), never from the wall clock or a
counter, so a replay after a crash produces the same ids and every sink can
overwrite or de-duplicate (DynamoDB key, SNS FIFO deduplication id).
"""

from __future__ import annotations

from typing import Any, Optional

from operators.events.timestamps import iso_utc

FAILURE_RATE = "FAILURE_RATE"
TRAFFIC_DROP = "TRAFFIC_DROP"
VELOCITY = "VELOCITY"
AMOUNT_SPIKE = "AMOUNT_SPIKE"
IMPOSSIBLE_TRAVEL = "IMPOSSIBLE_TRAVEL"
FRAUD_SUSPECTED = "FRAUD_SUSPECTED"

ALERT_TYPES = (FAILURE_RATE, TRAFFIC_DROP, VELOCITY, AMOUNT_SPIKE, IMPOSSIBLE_TRAVEL, FRAUD_SUSPECTED)

OPEN = "OPEN"
RESOLVED = "RESOLVED"

SEVERITY = {
    FAILURE_RATE: "CRITICAL",
    TRAFFIC_DROP: "CRITICAL",
    FRAUD_SUSPECTED: "HIGH",
    VELOCITY: "HIGH",
    IMPOSSIBLE_TRAVEL: "MEDIUM",
    AMOUNT_SPIKE: "MEDIUM",
}


def make_alert(
    alert_type: str,
    state: str,
    key: str,
    incident_id: str,
    event_time: float,
    value: float,
    threshold: float,
    message: str,
    *,
    region: Optional[str] = None,
    user_id: Optional[str] = None,
    transaction_id: Optional[str] = None,
    details: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Build an alert record.

    :arg incident_id: shared by an incident's OPEN and RESOLVED records.
    :arg event_time: epoch seconds: the end of the window that decided the
        alert, or the timestamp of the event that triggered it.
    """
    return {
        "alert_id": f"{incident_id}:{state}",
        "incident_id": incident_id,
        "type": alert_type,
        "state": state,
        "severity": SEVERITY[alert_type],
        "key": key,
        "region": region,
        "user_id": user_id,
        "transaction_id": transaction_id,
        "event_time": iso_utc(event_time),
        "value": value,
        "threshold": threshold,
        "message": message,
        "details": details or {},
    }


def compact_time(epoch_seconds: float) -> str:
    """``20250709T190310Z``: an id-friendly event time."""
    return iso_utc(int(epoch_seconds)).replace("-", "").replace(":", "")
