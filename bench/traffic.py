"""The synthetic payments the throughput benchmarks replay.

One shape for every benchmark (50,000 users over four regions, 1 % failures,
2,000 events per second of event time from 2025-07-09T19:00:00Z), so that
their figures compare with each other and with docs/performance.md.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

REGIONS = ("US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH")
T0 = 1752087600  # 2025-07-09T19:00:00Z
RATE = 2000  # events per second of event time


def iso_ms(ts: float) -> str:
    """ISO-8601 UTC with milliseconds, the way producers write event time."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payment(i: int, rng: random.Random, timestamp: Any = None) -> dict[str, Any]:
    """Event ``i``; ``timestamp`` replaces its ISO event time (epoch millis, a poisoned date)."""
    user = rng.randrange(50_000)
    return {
        "transaction_id": f"txn_{i:09d}",
        "user_id": f"u{user}",
        "timestamp": iso_ms(T0 + i / RATE) if timestamp is None else timestamp,
        "payment_status": "FAIL" if rng.random() < 0.01 else "SUCCESS",
        "region": REGIONS[user % 4],
        "amount": round(rng.uniform(5, 400), 2),
        "currency": "USD",
        "merchant_id": f"m{user % 97}",
        "merchant_name": f"Merchant {user % 97}",
        "device": "mobile",
    }
