"""Runs the real dataflow, bounded, on the simulator and reads back its JSONL output.

In process (``bytewax.testing.run_main`` on ``dataflow.build_flow``) by
default: the same flow as ``python -m bytewax.run dataflow`` without the
process start-up. ``subprocess=True`` runs exactly that command with
``PAYWATCH_CONFIG`` pointing at the generated settings file, for checking the
shipped entry point (and ``workers`` > 1).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from zlib import crc32

import orjson
import yaml

from config import Settings, load_settings
from config.settings import SimulatorSettings
from connectors.simulator.source import iter_events

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunOutput:
    """What one run produced."""

    settings: Settings
    out_dir: Path
    alerts: list[dict]
    metrics: list[dict]
    dead_letters: list[dict]
    n_events: int  # valid events counted by the metrics plus dead letters
    wall_seconds: float


# How the generated events are spread over files (one source partition each):
# every Nth event; by user, as a keyed producer would; or N contiguous stretches of
# the run, so one partition is a quarter of the hour ahead of the next (a backfill,
# a replay after an outage: maximal skew when the files are read at once).
LAYOUTS = ("round-robin", "by-user", "time-ranges")
INPUT_DIR = "input"


def run_overrides(simulator: Mapping[str, Any], out_dir: Path, input_glob: Optional[str] = None) -> dict[str, Any]:
    """Settings layer for an evaluation run: simulator source (or its events replayed from
    files matching ``input_glob``), JSONL sinks only."""
    source = {"type": "simulator"} if input_glob is None else {"type": "file", "path": input_glob}
    return {
        "source": source,
        "simulator": {"rate": 0, **simulator},
        "sinks": {"jsonl": {"dir": str(out_dir)}, "stdout": {"alerts": False, "metrics": False, "dead_letters": False}},
    }


def build_settings(
    simulator: Mapping[str, Any], out_dir: Path, config: Optional[str] = None, input_glob: Optional[str] = None
) -> Settings:
    """Defaults, then ``config`` (e.g. tuned rules), then the evaluation layer.

    The environment is ignored so that a report is reproducible from its
    command line alone.
    """
    return load_settings(path=config, environ={}, overrides=run_overrides(simulator, out_dir, input_glob))


def write_layout(simulator: SimulatorSettings, n_files: int, layout: str, directory: Path) -> str:
    """Write the simulation's events as ``n_files`` JSONL files in ``layout``; return their glob.

    The events are the simulator's, in its order (one partition's view of the
    whole stream), so labels and alerts are comparable across layouts.

    :raises ValueError: for an unknown layout, fewer than one file, or an
        endless simulation.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if n_files < 1:
        raise ValueError(f"partitions must be at least 1, got {n_files}")
    if not simulator.events:
        raise ValueError("simulator.events is 0 (endless): a file layout needs a bounded simulation")
    single = simulator.model_copy(update={"partitions": 1})
    directory.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(str(directory / "part-*.jsonl")):
        os.remove(stale)
    width = len(str(n_files - 1))
    files = [open(directory / f"part-{k:0{width}d}.jsonl", "wb") for k in range(n_files)]  # noqa: SIM115
    try:
        if layout == "time-ranges":
            total = sum(1 for _ in iter_events(single))
            for index, (_user, payload) in enumerate(iter_events(single)):
                files[index * n_files // total].write(payload + b"\n")
        elif layout == "by-user":
            for user_id, payload in iter_events(single):
                files[crc32(user_id.encode()) % n_files].write(payload + b"\n")
        else:
            for index, (_user, payload) in enumerate(iter_events(single)):
                files[index % n_files].write(payload + b"\n")
    finally:
        for handle in files:
            handle.close()
    return str(directory / "part-*.jsonl")


def run(settings: Settings, use_subprocess: bool = False, workers: int = 1) -> RunOutput:
    """Run the flow to its end and load its alerts, metrics and dead letters.

    :raises RuntimeError: when the subprocess fails (its stderr included).
    """
    import time

    out_dir = Path(settings.sinks.jsonl.dir or "")
    if not settings.sinks.jsonl.dir:
        raise ValueError("sinks.jsonl.dir must be set: the evaluation reads the JSONL output")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(str(out_dir / "*.jsonl")):
        os.remove(stale)
    began = time.perf_counter()
    if use_subprocess or workers > 1:
        _run_subprocess(settings, out_dir, workers)
    else:
        from bytewax.testing import run_main

        from dataflow import build_flow

        run_main(build_flow(settings))
    wall = time.perf_counter() - began
    alerts = list(_records(out_dir, "alerts"))
    metrics = list(_records(out_dir, "metrics"))
    dead = list(_records(out_dir, "dead_letter"))
    n_events = sum(m["count"] for m in metrics) + len(dead)
    return RunOutput(settings, out_dir, alerts, metrics, dead, n_events, wall)


def _run_subprocess(settings: Settings, out_dir: Path, workers: int) -> None:
    config_path = out_dir / "paywatch-eval.yaml"
    data = settings.model_dump(mode="json")
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "PAYWATCH_CONFIG": str(config_path)}
    env = {k: v for k, v in env.items() if not k.startswith("PAYWATCH__")}
    command = [sys.executable, "-m", "bytewax.run", "dataflow", "-w", str(workers)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-4000:]}")


def _records(out_dir: Path, name: str) -> Iterator[dict]:
    for path in sorted(glob.glob(str(out_dir / f"{name}*.jsonl"))):
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield orjson.loads(line)
