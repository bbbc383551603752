"""Settings: defaults, layering key by key, env overrides, errors that name the key."""

import pytest

from config import SettingsError, load_settings


def test_defaults_match_the_settings_contract():
    s = load_settings(environ={})
    assert s.source.type == "simulator"
    assert (s.simulator.scenario, s.simulator.events, s.simulator.rate, s.simulator.seed) == ("normal", 0, 1000, 1)
    assert s.windows.allowed_lateness_seconds == 10
    fr = s.rules.failure_rate
    assert (fr.threshold_percent, fr.window_seconds, fr.hop_seconds, fr.min_events) == (
        2.0,
        60,
        10,
        30,
    )  # a floor only: the Wilson bound decides (docs/detection.md)
    assert (s.rules.velocity.window_seconds, s.rules.velocity.max_count, s.rules.velocity.max_amount) == (60, 10, 10000)
    assert (s.rules.amount_spike.factor, s.rules.amount_spike.min_history) == (10, 5)
    assert s.rules.impossible_travel.window_seconds == 1800
    assert s.users.idle_seconds == 3600
    assert s.sinks.jsonl.dir is None


def test_file_layers_key_by_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("simulator: {rate: 2000}\nsinks:\n  jsonl: {dir: out/}\n")
    s = load_settings(environ={"PAYWATCH_CONFIG": str(path)})
    assert s.simulator.rate == 2000
    assert s.simulator.seed == 1 and s.simulator.scenario == "normal"
    assert s.sinks.jsonl.dir == "out/"
    assert s.sinks.stdout.alerts is True


def test_environment_overrides_single_keys(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("simulator: {rate: 2000}\n")
    env = {
        "PAYWATCH_CONFIG": str(path),
        "PAYWATCH__SIMULATOR__RATE": "5",
        "PAYWATCH__RULES__FAILURE_RATE__MIN_EVENTS": "7",
    }
    s = load_settings(environ=env)
    assert s.simulator.rate == 5
    assert s.rules.failure_rate.min_events == 7


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("simulator: {ratee: 3}", "simulator.ratee"),
        ("simulator: {rate: fast}", "simulator.rate"),
        ("simulator: {rate: -1}", "simulator.rate"),
        ("rules: {failure_rate: {hop_seconds: 7}}", "rules.failure_rate"),
        ("windows: {allowed_lateness_seconds: -2}", "windows.allowed_lateness_seconds"),
        ("source: {type: carrier-pigeon}", "source.type"),
        ("source: {batch_size: 50000}", "max_batch_size"),
        ("simulator: {scenario: nope}", "simulator.scenario"),
        ("rules: {fraud: {currencies: [DOLLARS]}}", "rules.fraud.currencies"),
        ("sinks: {sns: {topic_name: alerts, sqs_subscription: q.fifo}}", "sqs_subscription"),
        ("sinks: {sns: {topic_name: alerts.fifo, email_subscription: ops@example.com}}", "email_subscription"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SettingsError) as err:
        load_settings(path, environ={})
    assert key in str(err.value)


def test_bad_environment_override_names_the_variable():
    with pytest.raises(SettingsError, match="simulator.rate"):
        load_settings(environ={"PAYWATCH__SIMULATOR__RATE": "lots"})


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path / "absent.yaml", environ={})


@pytest.mark.integration
def test_dataflow_start_fails_naming_the_key(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("users: {shards: 0}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflow"],
        env={"PATH": "/usr/bin:/bin", "PAYWATCH_CONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=__import__("pathlib").Path(__file__).resolve().parents[2],
    )
    assert proc.returncode != 0
    assert "users.shards" in proc.stderr
