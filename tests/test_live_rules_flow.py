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
from tests.reference_helpers import wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"alerts": False, "metrics": False, "dead_letters": False}
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


@pytest.mark.integration
def test_rules_rewritten_mid_run_take_effect_and_bad_ones_are_refused(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(HIGH)
    out = tmp_path / "out"
    port = free_port()
    start = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    config = {
        "simulator": {"scenario": "normal", "rate": 4000, "event_rate": 200, "seed": 5, "start": start.isoformat()},
        "rules_file": str(rules),
        "reference": {"merchants": {"refresh_seconds": REFRESH}},
        "sinks": {"stdout": QUIET, "jsonl": {"dir": str(out)}},
        "metrics": {"port": port},
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

    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflow"],
        cwd=ROOT,
        env={**os.environ, "PAYWATCH_CONFIG": str(settings_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # On the first rules, windows close and judge, and nothing opens.
        wait_for(lambda: _try_scrape(port).get(minutes, 0) >= 3, "three closed minutes", timeout=60)
        samples = _scrape(port)
        assert samples.get(info % v_high) == 1
        assert samples.get(opened, 0) == 0

        # Invalid: refused, counted, the flow keeps running on its rules.
        _write(rules, INVALID)
        wait_for(lambda: _scrape(port).get(failures, 0) >= 1, "the refused reload")
        # A window length change: refused too ("restart needed"), although its threshold would alert.
        _write(rules, LONGER_WINDOW)
        wait_for(lambda: _scrape(port).get(failures, 0) >= 2, "the refused window change")
        closed_before = _scrape(port)[minutes]
        wait_for(lambda: _scrape(port)[minutes] >= closed_before + 2, "two more closed minutes")
        samples = _scrape(port)
        assert samples.get(info % v_high) == 1 and samples.get(opened, 0) == 0
        assert proc.poll() is None

        # Valid and lower: FAILURE_RATE incidents open, judged by the new version.
        _write(rules, LOW)
        wait_for(lambda: _scrape(port).get(opened, 0) >= 1, "a FAILURE_RATE alert under the new rules")
        samples = _scrape(port)
        assert samples.get(info % v_low) == 1 and samples.get(info % v_high, 0) == 0
        assert samples[failures] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    log = err.decode()
    alerts = [orjson.loads(line) for f in sorted(out.glob("alerts*.jsonl")) for line in f.read_bytes().splitlines()]
    failure_rate = [a for a in alerts if a["type"] == "FAILURE_RATE"]
    assert failure_rate, log[-2000:]
    assert {a["rules_version"] for a in failure_rate} == {v_low}
    assert {a["threshold"] for a in failure_rate if a["state"] == "OPEN"} == {0.05}
    transactions = [f for f in out.glob("transactions*.jsonl")]
    versions = {orjson.loads(line)["rules_version"] for f in transactions for line in f.read_bytes().splitlines()}
    assert versions == {v_high, v_low}
    # One line per refused document, naming the key and the reason.
    [invalid] = [line for line in log.splitlines() if "rules.failure_rate.threshold_percent" in line]
    assert "refused" in invalid and "less than or equal to 100" in invalid
    [window] = [line for line in log.splitlines() if "rules.failure_rate.window_seconds" in line]
    assert "restart needed" in window
    assert "Traceback" not in log
