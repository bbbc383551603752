"""One Kafka client configuration for every Kafka client: source, dead-letter producer, producer command.

Tansu (the test broker) cannot be run with TLS or SASL here: ``--cert``
does not turn TLS on in 0.6.0, and with ``--authentication`` no user can
be created. So these tests record the arguments each client is built with,
through the real code paths (settings -> outputs -> writer -> KafkaProducer).
"""

from __future__ import annotations

from typing import Any

import confluent_kafka
import kafka
import pytest
from kafka.protocol.consumer import IsolationLevel

from cli.producer import publish_kafka
from config import SettingsError
from config.loader import load_settings
from connectors.kafka.client_config import consumer_config
from connectors.kafka.confluent_source import consumer_config as librdkafka_consumer_config
from connectors.sinks.dead_letter import DeadLetterSink
from connectors.sinks.outputs import build_outputs

SECURE = {
    "brokers": ["b-1.msk.example:9096", "b-2.msk.example:9096"],
    "topic": "payments",
    "client_id": "paywatch-prod",
    "security_protocol": "SASL_SSL",
    "ssl_cafile": "/etc/kafka/ca.pem",
    "ssl_certfile": "/etc/kafka/client.pem",
    "ssl_keyfile": "/etc/kafka/client.key",
    "ssl_password_env": "PW_TLS_KEY",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "paywatch",
    "sasl_password_env": "PW_SASL",
}
SECURITY_KEYS = {
    "client_id",
    "security_protocol",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_check_hostname",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
}


class _RecordingProducer:
    """Stands in for kafka.KafkaProducer: records its arguments, acknowledges every send."""

    built: list[dict[str, Any]] = []

    def __init__(self, **config: Any) -> None:
        _RecordingProducer.built.append(config)

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        class _Done:
            def get(self, timeout: float = 0) -> None:
                return None

            def add_errback(self, _fn: Any) -> _Done:
                return self

        return _Done()

    def flush(self, timeout: float = 0) -> None:
        return None

    def close(self, timeout: float = 0) -> None:
        return None


@pytest.fixture
def recorded(monkeypatch):
    _RecordingProducer.built = []
    monkeypatch.setattr(kafka, "KafkaProducer", _RecordingProducer)
    monkeypatch.setenv("PW_TLS_KEY", "key-passphrase")
    monkeypatch.setenv("PW_SASL", "sasl-secret")
    return _RecordingProducer.built


def _security(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k in SECURITY_KEYS}


def test_dead_letter_producer_gets_the_sources_tls_and_sasl_settings(recorded):
    settings = load_settings(
        overrides={
            "source": {"type": "kafka", "kafka": SECURE},
            "sinks": {"dead_letter": {"type": "kafka", "kafka_bootstrap_servers": ["b-3.msk.example:9096"]}},
        }
    )
    sinks = [s for s in build_outputs(settings).dead_letters if isinstance(s, DeadLetterSink)]
    assert len(sinks) == 1
    part = sinks[0].build("dead_letters_to_dead_letter", 0, 1)
    part.write_batch([("file:x", {"reason": "invalid_json", "source": "file:x", "raw": "{"})])
    part.close()

    (config,) = recorded
    assert config["bootstrap_servers"] == ["b-3.msk.example:9096"]  # its own brokers, the same security
    assert config["security_protocol"] == "SASL_SSL"
    assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "paywatch",
        "sasl-secret",
    )
    assert (config["ssl_cafile"], config["ssl_certfile"], config["ssl_keyfile"], config["ssl_password"]) == (
        "/etc/kafka/ca.pem",
        "/etc/kafka/client.pem",
        "/etc/kafka/client.key",
        "key-passphrase",
    )
    assert config["client_id"] == "paywatch-prod"
    assert config["acks"] == "all"  # a dead letter may be the only copy of a payload

    # The same security as the source's consumers and the producer command.
    publish_kafka(settings.source.kafka, [("u1", b"{}")])
    assert _security(recorded[1]) == _security(config)
    assert _security(consumer_config(settings.source.kafka, 100)) == _security(config)
    assert recorded[1]["bootstrap_servers"] == SECURE["brokers"]


def test_unset_password_variable_stops_the_start_naming_the_key(monkeypatch):
    monkeypatch.delenv("PW_SASL", raising=False)
    monkeypatch.setenv("PW_TLS_KEY", "x")
    settings = load_settings(
        overrides={"source": {"type": "kafka", "kafka": SECURE}, "sinks": {"dead_letter": {"type": "kafka"}}}
    )
    with pytest.raises(SettingsError, match=r"source\.kafka\.sasl_password_env: environment variable PW_SASL"):
        build_outputs(settings)


def test_msk_iam_sends_no_password(recorded):
    iam = {"brokers": ["b-1:9098"], "security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"}
    settings = load_settings(overrides={"source": {"kafka": iam}, "sinks": {"dead_letter": {"type": "kafka"}}})
    part = next(s for s in build_outputs(settings).dead_letters if isinstance(s, DeadLetterSink)).build("d", 0, 1)
    part.write_batch([("k", {"reason": "x", "source": "k"})])
    (config,) = recorded
    assert config["sasl_mechanism"] == "AWS_MSK_IAM"
    assert "sasl_plain_password" not in config and "sasl_plain_username" not in config


@pytest.mark.parametrize("level", [None, "read_committed", "read_uncommitted"])
def test_both_source_clients_are_built_with_the_one_isolation_level(level):
    """kafka-python's own default is read_uncommitted, librdkafka's read_committed: both get the setting.

    ``None`` leaves the key out of the settings: the default, read_committed,
    reaches both. Each client's own config check accepts the value (neither
    connects while being built).
    """
    kafka_settings = {"brokers": ["127.0.0.1:1"], "topic": "payments"}
    if level is not None:
        kafka_settings["isolation_level"] = level
    settings = load_settings(overrides={"source": {"type": "kafka", "kafka": kafka_settings}}).source.kafka
    expected = level or "read_committed"

    python_config = consumer_config(settings, 100)
    librdkafka = librdkafka_consumer_config(settings)
    assert python_config["isolation_level"] == expected
    assert librdkafka["isolation.level"] == expected

    assert IsolationLevel.build_from(python_config["isolation_level"]).name.lower() == expected
    consumer = confluent_kafka.Consumer(librdkafka)  # raises KafkaException on a value librdkafka rejects
    consumer.close()


def test_an_unknown_isolation_level_stops_the_start_naming_the_key():
    with pytest.raises(SettingsError, match=r"source\.kafka\.isolation_level"):
        load_settings(overrides={"source": {"kafka": {"isolation_level": "read_uncommited"}}})
