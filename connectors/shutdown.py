"""Stopping on SIGINT / SIGTERM: one line on stderr, no panic, no traceback.

Bytewax turns a signal into a Rust panic plus a Python traceback
(``BytewaxRuntimeError: signal received``), which reads like a crash on the
README's own way to stop the flow. Instead, the first SIGINT or SIGTERM
prints one line, gives the sinks a bounded moment to put what they hold where
it belongs, and ends the process:

- JSONL files are flushed, so every line written so far is on disk whole;
- AWS sink buffers get up to ``grace_seconds`` to deliver.

Nothing else is waited for. With recovery on (``-r``) that is safe by
construction: the next start resumes from the last snapshot, file sinks
truncate to their snapshotted offsets and AWS writes carry deterministic
ids, so what ran after the snapshot is replayed, neither lost nor doubled.
Without recovery a stop is a stop: open windows are not emitted. A second
signal exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref
from typing import Any, Protocol


class Flushable(Protocol):
    def flush_on_stop(self, deadline: float) -> None:
        """Push buffered output out, giving up at ``deadline`` (time.monotonic())."""


_FLUSHABLE: weakref.WeakSet[Any] = weakref.WeakSet()
_LOCK = threading.Lock()
_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def flush_on_stop(target: Flushable) -> None:
    """Have ``target.flush_on_stop`` called when the process is asked to stop."""
    with _LOCK:
        _FLUSHABLE.add(target)


def install(recovery: bool, grace_seconds: float = 5.0) -> None:
    """Replace Bytewax's signal handling in this process (the ``bytewax.run`` path only)."""
    stopping = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            os._exit(128 + signum)
        stopping.set()
        after = (
            "the next start with the same -r directory resumes from the last snapshot"
            if recovery
            else "no recovery directory (-r), so the next start begins afresh"
        )
        sys.stderr.write(f"paywatch: stopping on {_NAMES.get(signum, signum)}; output flushed, {after}.\n")
        deadline = time.monotonic() + grace_seconds
        with _LOCK:
            targets = list(_FLUSHABLE)
        for target in targets:
            try:
                target.flush_on_stop(deadline)
            except Exception:  # a sink that cannot flush must not turn a stop into a traceback
                pass
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
