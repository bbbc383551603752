"""The flow as a process (``bytewax.run``), writing every source lag update to a file as it is set.

A test that scrapes ``/metrics`` samples the lag gauge: a rise shorter than
the time between two scrapes (librdkafka can fetch a partition's backlog and
the flow read it within a few milliseconds) is missed, so whether a test sees
it depends on the machine's timing. This runner records each value the
sources set instead, so a test sees every one. Each line is the system-wide
monotonic clock (``CLOCK_MONOTONIC``, the same in every process on Linux, so
the test can place an update before, during or after a
:class:`tests.support.tcp_proxy.TcpProxy` cut), the source, the partition and
the value.

``PAYWATCH_LAG_LOG=<file> python -m tests.support.lag_recorder <bytewax.run arguments>``
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path
from typing import NamedTuple

from observability import source_lag

LOG_VARIABLE = "PAYWATCH_LAG_LOG"


class LagUpdate(NamedTuple):
    at: float
    """``time.monotonic()`` when the value was set."""
    source: str
    partition: str
    value: float


class _RecordingLags(dict):
    """The lag registry's dict, appending each value set to the log (under the registry's lock)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def __setitem__(self, key: tuple[str, str], value: float) -> None:
        super().__setitem__(key, value)
        os.write(self._fd, f"{time.monotonic():.6f} {key[0]} {key[1]} {value}\n".encode())


def read_updates(path: Path, offset: int = 0) -> tuple[list[LagUpdate], int]:
    """The complete lines written since ``offset``, and the offset after them (a line being written waits)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            data = log.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    updates = []
    for line in complete.decode().splitlines():
        at, source, partition, value = line.split(" ")
        updates.append(LagUpdate(float(at), source, partition, float(value)))
    return updates, offset + len(complete)


def main() -> None:
    fd = os.open(os.environ[LOG_VARIABLE], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # Before the flow's modules are imported; they reach the registry only through its functions.
    source_lag._lags = _RecordingLags(fd)
    runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
