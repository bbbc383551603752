"""Readiness: is this process running the dataflow yet?

``/readyz`` (:mod:`observability.server`) answers 200 once
:class:`ReadinessSink` has been built. Bytewax builds dynamic sinks on every
worker after the cluster has formed and the resume point has been read from
the recovery store, which is exactly when the process is really running the
dataflow; before that a pod must not count as ready.
"""

from __future__ import annotations

import threading
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from observability.registry import READY

_ready = threading.Event()


def mark_ready() -> None:
    """The dataflow runs in this process: ``/readyz`` answers 200 from now on."""
    if not _ready.is_set():
        _ready.set()
        READY.set(1)


def is_ready() -> bool:
    """Whether :func:`mark_ready` has been called in this process."""
    return _ready.is_set()


def reset() -> None:
    """Back to not ready (tests start several flows in one process)."""
    _ready.clear()
    READY.set(0)


class _ReadyPartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        """Writes nothing: the sink exists only to be built."""


class ReadinessSink(DynamicSink[Any]):
    """A sink that writes nothing and marks the process ready when built (attach it to any stream)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReadyPartition:
        mark_ready()
        return _ReadyPartition()
