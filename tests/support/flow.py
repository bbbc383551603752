"""The flow in-process (``run_main``) or as a real process (``python -m bytewax.run dataflow``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from bytewax.inputs import FixedPartitionedSource
from bytewax.testing import run_main

from config import Settings
from dataflow import build_flow

ROOT = Path(__file__).resolve().parents[2]


def run_in_process(settings: Settings, source: Optional[FixedPartitionedSource] = None, **kwargs: Any) -> None:
    """Build the flow from ``settings`` (optionally another source, outputs...) and run it to its end."""
    run_main(build_flow(settings, source=source, **kwargs))


def flow_command(*args: str, recovery: Optional[Path] = None, runner: str = "bytewax.run") -> list[str]:
    """``python -m bytewax.run dataflow ARGS``; with ``recovery``, a snapshot every second and no backup delay.

    ``runner``: another module taking bytewax.run's arguments (``tests.support.lag_recorder``).
    """
    command = [sys.executable, "-m", runner, "dataflow", *args]
    if recovery is not None:
        command += ["-r", str(recovery), "-s", "1", "-b", "0"]
    return command


def flow_env(config: Path, **extra: str) -> dict[str, str]:
    """This environment (a test's ``PAYWATCH__...`` overrides included), reading ``config``, importing from the repo."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PAYWATCH_CONFIG": str(config), **extra}


def start_flow(
    config: Path,
    *args: str,
    recovery: Optional[Path] = None,
    cwd: Path = ROOT,
    log: Optional[Path] = None,
    env: Optional[dict[str, str]] = None,
    runner: str = "bytewax.run",
) -> subprocess.Popen:
    """Start the flow as a process; stderr goes to ``log`` (default: next to the config, ``.log``).

    A file, not a pipe: a pipe nobody reads blocks a long run once it is full.
    """
    log = log or config.with_suffix(".log")
    with open(log, "ab") as stderr:
        return subprocess.Popen(
            flow_command(*args, recovery=recovery, runner=runner),
            cwd=cwd,
            env=env or flow_env(config),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stderr_of(config: Path, log: Optional[Path] = None) -> str:
    """The tail of a process's stderr, for an assertion message."""
    return (log or config.with_suffix(".log")).read_text(errors="replace")[-3000:]


def finish(proc: subprocess.Popen, config: Path, timeout: float = 120, log: Optional[Path] = None) -> None:
    """Wait for a started flow and require a clean exit."""
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, stderr_of(config, log)


def run_flow(
    config: Path, *args: str, recovery: Optional[Path] = None, cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the flow as a process to its end; returns it (exit code unchecked: some tests expect a failure)."""
    return subprocess.run(
        flow_command(*args, recovery=recovery),
        cwd=cwd,
        env=flow_env(config),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
