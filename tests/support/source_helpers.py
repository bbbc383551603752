"""Drive a StatefulSourcePartition by hand, as Bytewax would, for source tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Optional

from operators.records import RawChunk


def step(part) -> Optional[list[RawChunk]]:
    """One ``next_batch`` call after honouring ``next_awake``; None at the end."""
    awake = part.next_awake()
    if awake is not None:
        delay = (awake - datetime.now(UTC)).total_seconds()
        if delay > 0:
            time.sleep(delay)
    try:
        return list(part.next_batch())
    except StopIteration:
        return None


def drain(part, until: Optional[Callable[[list[RawChunk]], bool]] = None, timeout: float = 20.0) -> list[RawChunk]:
    """Chunks of ``part`` until it ends (StopIteration) or ``until(chunks)``.

    :raises TimeoutError: neither happened within ``timeout`` seconds.
    """
    chunks: list[RawChunk] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = step(part)
        if batch is None:
            return chunks
        chunks.extend(batch)
        if until is not None and until(chunks):
            return chunks
    raise TimeoutError(f"partition did not finish in {timeout}s; {sum(len(c.lines) for c in chunks)} lines read")


def lines_of(chunks: list[RawChunk]) -> list[bytes]:
    return [line for c in chunks for line in c.lines]


def count_lines(n: int) -> Callable[[list[RawChunk]], bool]:
    return lambda chunks: sum(len(c.lines) for c in chunks) >= n


def read_all(source, states: Optional[dict] = None) -> tuple[dict, dict]:
    """Drain every partition of a bounded source; return chunks and final snapshots by partition."""
    chunks, snaps = {}, {}
    for name in source.list_parts():
        part = source.build_part("in", name, (states or {}).get(name))
        chunks[name] = drain(part)
        snaps[name] = part.snapshot()
        part.close()
    return chunks, snaps
