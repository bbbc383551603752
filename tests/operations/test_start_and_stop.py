"""Starting and stopping as an operator does it: signals, unreachable servers,
recovery directories, misspelt settings, and what the banner says."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from cli.startup import banner
from config import load_settings
from config.loader import unmatched_environment
from connectors.recovery_store import read_recovery_store
from tests.support.config import QUIET_STDOUT
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
# A fixed simulated hour: the same events whatever the pace, so a paced run
# that is stopped can be compared with one that ran to the end at full speed.
SIMULATED = {"scenario": "mixed", "events": 40_000, "seed": 3, "start": "2025-07-09T19:00:00Z", "event_rate": 50.0}


def _flow(config: dict, tmp: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    path = tmp / f"settings-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    environ = {**os.environ, "PAYWATCH_CONFIG": str(path), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflow", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_stderr_line(proc: subprocess.Popen, text: str) -> list[bytes]:
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text.encode() in line:
            return seen
    raise AssertionError(f"the flow ended without printing {text!r}: {b''.join(seen)[-2000:]!r}")


def _assert_one_clean_paragraph(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text and "panicked" not in text and "BytewaxRuntimeError" not in text, text
    return text


def _refused_start(config: dict, tmp: Path, *args: str) -> str:
    """Start the flow with settings it must refuse: it ends with code 2 and one clean paragraph, returned."""
    proc = _flow(config, tmp, *args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err.decode()[-2000:]
    return _assert_one_clean_paragraph(err)


@pytest.mark.integration
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_flow_with_one_line(tmp_path, sig, code):
    proc = _flow({"sinks": {"stdout": QUIET_STDOUT}}, tmp_path)
    _wait_for_stderr_line(proc, "paywatch: reading simulator")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    text = _assert_one_clean_paragraph(err)
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text
    assert f"stopping on {signal.Signals(sig).name}" in text


def _outputs(out: Path) -> tuple[list[bytes], list[str], list[str]]:
    def read(kind: str) -> list[dict]:
        return [orjson.loads(line) for f in sorted(out.glob(f"{kind}-*.jsonl")) for line in f.read_bytes().splitlines()]

    metrics = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read("metrics"))
    alerts = sorted(a["alert_id"] for a in read("alerts"))
    txns = sorted(t["transaction_id"] for t in read("transactions"))
    return metrics, alerts, txns


def _committed(recovery: Path) -> bool:
    try:
        with sqlite3.connect(recovery / "part-0.sqlite3") as db:
            return bool(db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0])
    except sqlite3.Error:
        return False


@pytest.mark.integration
def test_a_stopped_flow_resumes_with_nothing_lost_or_doubled(tmp_path):
    def config(out: Path, rate: float) -> dict:
        return {
            "simulator": {**SIMULATED, "rate": rate},
            "sinks": {"stdout": QUIET_STDOUT, "jsonl": {"dir": str(out)}},
        }

    reference = _flow(config(tmp_path / "ref", 0), tmp_path)
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err.decode()[-2000:]
    expected = _outputs(tmp_path / "ref")
    assert len(expected[2]) == len(set(expected[2])) > SIMULATED["events"] * 0.9 and expected[0]

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    # Paced at 4,000 events/s, the 40,000 events take ten seconds: the stop lands mid-run.
    paced = _flow(config(tmp_path / "out", 4000), tmp_path, *args)
    while not _committed(recovery):
        assert paced.poll() is None, "the paced flow ended before its first snapshot"
        time.sleep(0.05)
    paced.send_signal(signal.SIGINT)
    _, err = paced.communicate(timeout=30)
    assert paced.returncode == 130, err.decode()[-2000:]
    assert len(_outputs(tmp_path / "out")[2]) < SIMULATED["events"]  # really stopped part-way

    resumed = _flow(config(tmp_path / "out", 0), tmp_path, *args)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert "resuming from recovery directory" in err.decode()
    assert _outputs(tmp_path / "out") == expected


@pytest.mark.integration
def test_no_kafka_broker_ends_the_start_with_one_paragraph(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    config = {"source": {"type": "kafka", "start_timeout_seconds": 3, "kafka": {"brokers": [address]}}}
    text = _refused_start(config, tmp_path)
    assert address in text and "source.kafka.brokers" in text and "source.start_timeout_seconds" in text


@pytest.mark.integration
def test_missing_kafka_topic_is_named(tmp_path, kafka_broker):
    config = {"source": {"type": "kafka", "kafka": {"brokers": [kafka_broker.address], "topic": "no-such-topic"}}}
    text = _refused_start(config, tmp_path)
    assert "no-such-topic" in text and "source.kafka.topic" in text


@pytest.mark.integration
def test_kinesis_without_credentials_ends_the_start_with_one_paragraph(tmp_path):
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") or name in ("AWS_DEFAULT_REGION",)
    }
    env.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
    )
    path = tmp_path / "kinesis.yaml"
    path.write_text(yaml.safe_dump({"source": {"type": "kinesis"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflow"],
        cwd=ROOT,
        env={**env, "PAYWATCH_CONFIG": str(path)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    text = _assert_one_clean_paragraph(proc.stderr)
    assert "no AWS credentials" in text and "IRSA" in text


@pytest.mark.integration
def test_kinesis_stream_that_does_not_exist_is_named(tmp_path, moto):
    config = {
        "source": {"type": "kinesis", "kinesis": {"stream_name": "no-such-stream"}},
        "aws": {"endpoint_url": moto.url},
    }
    text = _refused_start(config, tmp_path)
    assert "no-such-stream" in text and "source.kinesis.stream_name" in text


@pytest.mark.integration
def test_missing_recovery_directory_names_the_command_that_creates_it(tmp_path):
    missing = tmp_path / "nowhere"
    text = _refused_start({"sinks": {"stdout": QUIET_STDOUT}}, tmp_path, "-r", str(missing), "-s", "5", "-b", "0")
    assert f"python -m bytewax.recovery {missing}" in text


@pytest.mark.integration
def test_recovery_directory_of_another_source_is_refused_and_a_sink_change_is_not(tmp_path):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    simulated = {"simulator": {**SIMULATED, "events": 2000, "rate": 0}, "sinks": {"stdout": QUIET_STDOUT}}
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    first = _flow(simulated, tmp_path, *args)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()[-2000:]
    assert read_recovery_store(recovery).resumes

    events = tmp_path / "events.jsonl"
    events.write_text('{"transaction_id":"a","timestamp":1752087600000,"payment_status":"SUCCESS","region":"EU"}\n')
    text = _refused_start(
        {"source": {"type": "file", "path": str(events)}, "sinks": {"stdout": QUIET_STDOUT}}, tmp_path, *args
    )
    assert "simulator/0" in text and "another source" in text

    changed_sinks = {**simulated, "sinks": {"stdout": QUIET_STDOUT, "jsonl": {"dir": str(tmp_path / "out")}}}
    again = _flow(changed_sinks, tmp_path, *args)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 0, err.decode()[-2000:]
    assert "resuming from recovery directory" in err.decode()


def test_misspelt_environment_variables_are_reported_with_the_closest_key(caplog):
    warnings = unmatched_environment(
        {"PAYWATCH_SIMULATOR_RATE": "5", "PAYWATCH_CONFIG": "x.yaml", "PAYWATCH_DEBUG": "1", "PAYWATCHER": "1"}
    )
    assert warnings == [
        "environment variable PAYWATCH_SIMULATOR_RATE is not a Paywatch setting and is ignored: "
        "did you mean PAYWATCH__SIMULATOR__RATE (setting simulator.rate)?"
    ]
    with caplog.at_level("WARNING", logger="config.loader"):
        load_settings(
            environ={
                "PAYWATCH_NONSENSE": "1",
                "PAYWATCH__SOURCE__KAFKA__SASL_PASSWORD_ENV": "PAYWATCH_PW",
                "PAYWATCH_PW": "secret",
            }
        )
    assert [r.getMessage() for r in caplog.records if "PAYWATCH_" in r.getMessage()] == [
        "paywatch: environment variable PAYWATCH_NONSENSE is not a Paywatch setting and is ignored: "
        "overrides are spelt PAYWATCH__SECTION__KEY (two underscores), see config/defaults.yaml"
    ]


def test_a_value_that_is_not_yaml_is_a_plain_string_where_a_string_is_expected():
    assert load_settings(environ={"PAYWATCH__SOURCE__PATH": "data/*.jsonl"}).source.path == "data/*.jsonl"
    with pytest.raises(ValueError, match="simulator.rate"):
        load_settings(environ={"PAYWATCH__SIMULATOR__RATE": "*fast"})


def test_banner_says_what_a_rerun_replaces(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "alerts-0.jsonl").write_text("{}\n")
    (out / "metrics-0.jsonl").write_text("")
    (out / "notes.txt").write_text("kept")
    settings = load_settings(environ={}, overrides={"sinks": {"jsonl": {"dir": str(out)}}})
    text = banner(settings)
    assert f"replacing 1 non-empty output file(s) of an earlier run in {out}: alerts-0.jsonl." in text
    assert "replacing" not in banner(load_settings(environ={}))
