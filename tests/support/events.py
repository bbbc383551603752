"""Builders for test events and chunks (in-memory, deterministic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Optional

import orjson

from operators.records import RawChunk

T0 = 1752087600  # 2025-07-09T19:00:00Z, a minute boundary


def iso(seconds: float) -> str:
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def event(
    txn: str,
    at: float,
    *,
    status: str = "SUCCESS",
    region: str = "US-WEST",
    user: Optional[str] = "u1",
    amount: Optional[float] = 50.0,
    currency: Optional[str] = "USD",
    merchant: Optional[str] = "Corner Shop",
    **extra: Any,
) -> dict[str, Any]:
    ev: dict[str, Any] = {"transaction_id": txn, "timestamp": iso(at), "payment_status": status, "region": region}
    for name, value in (("user_id", user), ("amount", amount), ("currency", currency), ("merchant_name", merchant)):
        if value is not None:
            ev[name] = value
    ev.update(extra)
    return ev


def line(ev: dict[str, Any]) -> bytes:
    return orjson.dumps(ev)


def chunk(
    events: list, part: str = "test/0", n_parts: int = 1, done: bool = False, skip_blank: bool = False
) -> RawChunk:
    lines = [e if isinstance(e, bytes) else line(e) for e in events]
    return RawChunk(part, n_parts, lines, origin=part, done=done, skip_blank=skip_blank)


def write_jsonl(path, events: list) -> None:
    with open(path, "wb") as f:
        for e in events:
            f.write((e if isinstance(e, bytes) else line(e)) + b"\n")


def simulated(n: int, seconds: float) -> list[tuple[str, bytes]]:
    """``n`` simulator events (key, payload) spread over ``seconds`` of event time from T0.

    The same events every call, so a producer and the flow reading them can be
    compared with a reference run.
    """
    from config.loader import load_settings
    from connectors.simulator.source import iter_events

    overrides = {"events": n, "rate": 0, "users": 50_000, "start": iso(T0), "event_rate": n / seconds}
    return list(iter_events(load_settings(overrides={"simulator": overrides}).simulator))
