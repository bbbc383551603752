"""Helpers for reference-data tests: a source that changes the world between chunks, a poller."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.records import RawChunk

Step = Union[RawChunk, Callable[[], None]]


class _StepPartition(StatefulSourcePartition[RawChunk, int]):
    def __init__(self, steps: list[Step], at: int) -> None:
        self._steps = steps
        self._at = at

    def next_batch(self) -> list[RawChunk]:
        if self._at >= len(self._steps):
            raise StopIteration
        step = self._steps[self._at]
        self._at += 1
        if isinstance(step, RawChunk):
            return [step]
        step()
        return []

    def snapshot(self) -> int:
        return self._at


class StepSource(FixedPartitionedSource[RawChunk, int]):
    """One partition that emits chunks and, between them, runs callables (inside the running flow).

    A callable can change the reference data and wait until the flow's
    loader has picked the change up, so the next chunk is judged by it.
    """

    def __init__(self, steps: list[Step]) -> None:
        self._steps = steps

    def list_parts(self) -> list[str]:
        return ["steps"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _StepPartition:
        return _StepPartition(self._steps, resume_state or 0)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0, poll: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
