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

import orjson
import yaml

from config import Settings, load_settings

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


def run_overrides(simulator: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Settings layer for an evaluation run: simulator source, JSONL sinks only."""
    return {
        "source": {"type": "simulator"},
        "simulator": {"rate": 0, **simulator},
        "sinks": {"jsonl": {"dir": str(out_dir)}, "stdout": {"alerts": False, "metrics": False, "dead_letters": False}},
    }


def build_settings(simulator: Mapping[str, Any], out_dir: Path, config: Optional[str] = None) -> Settings:
    """Defaults, then ``config`` (e.g. tuned rules), then the evaluation layer.

    The environment is ignored so that a report is reproducible from its
    command line alone.
    """
    return load_settings(path=config, environ={}, overrides=run_overrides(simulator, out_dir))


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
