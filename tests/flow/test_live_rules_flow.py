"""A running flow (simulator source, a real `bytewax.run` process) whose rules file is rewritten mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from config import load_settings
from config.live_rules import parse_rules_document, rules_version
from tests.support.config import QUIET_STDOUT
from tests.support.reference_helpers import wait_for
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
REFRESH = 0.5
# Normal traffic fails 0.4-0.9 % per region: never above 40 %, always above 0.05 %.
HIGH = "rules:\n  failure_rate: {threshold_percent: 40}\n"
INVALID = "rules:\n  failure_rate: {threshold_percent: 500}\n"
LONGER_WINDOW = "rules:\n  failure_rate: {threshold_percent: 0.05, window_seconds: 120}\n"
LOW = "rules:\n  failure_rate: {threshold_percent: 0.05}\n"


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _try_scrape(port: int) -> dict[str, float]:
    try:
        return _scrape(port)
    except OSError:
        return {}


def _write(path: Path, text: str) -> None:
    """Replace the file in one rename, as a ConfigMap update does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _total(ports: list[int], name: str) -> float:
    return sum(_try_scrape(port).get(name, 0) for port in ports)


@pytest.mark.integration
@pytest.mark.parametrize("processes", [1, 2])
def test_rules_rewritten_mid_run_take_effect_and_bad_ones_are_refused(tmp_path, processes):
    rules = tmp_path / "rules.yaml"
    rules.write_text(HIGH)
    out = tmp_path / "out"
    ports = [free_port() for _ in range(processes)]
    start = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    config = {
        "simulator": {
            "scenario": "normal",
            "rate": 4000,
            "event_rate": 200,
            "seed": 5,
            "start": start.isoformat(),
            "partitions": processes,
        },
        "rules_file": str(rules),
        "reference": {"merchants": {"refresh_seconds": REFRESH}},
        "sinks": {"stdout": QUIET_STDOUT, "jsonl": {"dir": str(out)}},
    }
    settings_path = tmp_path / "paywatch.yaml"
    settings_path.write_text(yaml.safe_dump(config))
    base = load_settings(environ={}).rules
    v_high = rules_version(parse_rules_document(HIGH, base))
    v_low = rules_version(parse_rules_document(LOW, base))
    info = 'paywatch_rules_info{version="%s"}'
    failures = "paywatch_rules_reload_failures_total"
    opened = 'paywatch_alerts_total{state="OPEN",type="FAILURE_RATE"}'
    minutes = "paywatch_window_results_total"

    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bytewax.run",
                "dataflow",
                *(["-i", str(i), "-a", addresses] if processes > 1 else []),
            ],
            cwd=ROOT,
            env={**os.environ, "PAYWATCH_CONFIG": str(settings_path), "PAYWATCH__METRICS__PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, port in enumerate(ports)
    ]
    logs = []
    try:
        # On the first rules, windows close and judge, and nothing opens.
        wait_for(lambda: _total(ports, minutes) >= 3, "three closed minutes", timeout=90)
        assert all(_scrape(port).get(info % v_high) == 1 for port in ports)
        assert _total(ports, opened) == 0

        # Invalid: refused and counted in every process, which keep running on their rules.
        _write(rules, INVALID)
        wait_for(lambda: all(_scrape(port).get(failures, 0) >= 1 for port in ports), "the refused reload")
        # A window length change: refused too ("restart needed"), although its threshold would alert.
        _write(rules, LONGER_WINDOW)
        wait_for(lambda: all(_scrape(port).get(failures, 0) >= 2 for port in ports), "the refused window change")
        closed_before = _total(ports, minutes)
        wait_for(lambda: _total(ports, minutes) >= closed_before + 2, "two more closed minutes")
        assert all(_scrape(port).get(info % v_high) == 1 for port in ports)
        assert _total(ports, opened) == 0
        assert all(proc.poll() is None for proc in procs)

        # Valid and lower: FAILURE_RATE incidents open, judged by the new version, in every process.
        _write(rules, LOW)
        wait_for(lambda: _total(ports, opened) >= 1, "a FAILURE_RATE alert under the new rules")
        wait_for(lambda: all(_scrape(port).get(info % v_low) == 1 for port in ports), "the new version everywhere")
        for port in ports:
            samples = _scrape(port)
            assert samples.get(info % v_high, 0) == 0 and samples[failures] == 2
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            logs.append(err.decode())
    alerts = [orjson.loads(line) for f in sorted(out.glob("alerts*.jsonl")) for line in f.read_bytes().splitlines()]
    failure_rate = [a for a in alerts if a["type"] == "FAILURE_RATE"]
    assert failure_rate, logs
    assert {a["rules_version"] for a in failure_rate} == {v_low}
    assert {a["threshold"] for a in failure_rate if a["state"] == "OPEN"} == {0.05}
    versions = {
        orjson.loads(line)["rules_version"]
        for f in out.glob("transactions*.jsonl")
        for line in f.read_bytes().splitlines()
    }
    assert versions == {v_high, v_low}
    for log in logs:
        # One line per refused document in each process, naming the key and the reason.
        [invalid] = [line for line in log.splitlines() if "rules.failure_rate.threshold_percent" in line]
        assert "refused" in invalid and "less than or equal to 100" in invalid
        [window] = [line for line in log.splitlines() if "rules.failure_rate.window_seconds" in line]
        assert "restart needed" in window
        assert "Traceback" not in log
