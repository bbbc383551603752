"""The one Kafka client configuration: client arguments from ``source.kafka``.

Every Kafka client of the product is built from it: the source's consumers,
the dead-letter producer (``sinks.dead_letter.type: kafka``), the producer
command and the benchmark. Brokers, TLS files, SASL mechanism and
credentials, and the client id are therefore set once; a secured cluster
(MSK with TLS and SASL/SCRAM or IAM) secures every connection, not only the
source's. Passwords are read from the environment variables the settings
name, never from the settings file, so a settings file or a ConfigMap can be
shown to anyone. kafka-python clients take :func:`client_config`; the
confluent-kafka source client takes the same settings in librdkafka's names
(:func:`librdkafka_config`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

from config.settings import KafkaSourceSettings


def _secret(environ: Mapping[str, str], var: Optional[str], key: str) -> Optional[str]:
    if var is None:
        return None
    try:
        return environ[var]
    except KeyError:
        raise ValueError(f"source.kafka.{key}: environment variable {var} is not set") from None


def client_config(
    settings: KafkaSourceSettings,
    environ: Optional[Mapping[str, str]] = None,
    brokers: Optional[list[str]] = None,
) -> dict[str, Any]:
    """Connection and security arguments common to KafkaConsumer, KafkaProducer
    and KafkaAdminClient.

    :arg brokers: other bootstrap servers of the same cluster security (the
        dead-letter topic's ``sinks.dead_letter.kafka_bootstrap_servers``);
        default ``source.kafka.brokers``.
    :raises ValueError: a password variable named in the settings is unset.
    """
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {
        "bootstrap_servers": list(brokers if brokers is not None else settings.brokers),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        config.update(
            ssl_cafile=settings.ssl_cafile,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            ssl_password=_secret(environ, settings.ssl_password_env, "ssl_password_env"),
            ssl_check_hostname=settings.ssl_check_hostname,
        )
    if settings.sasl_mechanism is not None:
        config["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism != "AWS_MSK_IAM":
            config["sasl_plain_username"] = settings.sasl_username
            config["sasl_plain_password"] = _secret(environ, settings.sasl_password_env, "sasl_password_env")
    return config


def consumer_config(settings: KafkaSourceSettings, max_poll_records: int) -> dict[str, Any]:
    """Arguments of a group-less consumer: recovery, not the broker, owns offsets."""
    config = client_config(settings)
    config.update(
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=max_poll_records,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        fetch_max_bytes=max(settings.max_partition_fetch_bytes, 50 * 1024 * 1024),
        check_crcs=True,
        # Set explicitly: kafka-python's default (read_uncommitted) is not librdkafka's (read_committed).
        isolation_level=settings.isolation_level,
    )
    return config


def librdkafka_config(settings: KafkaSourceSettings, environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The same connection and security settings in librdkafka's names (confluent-kafka clients).

    :raises ValueError: a password variable named in the settings is unset,
        or the SASL mechanism has no librdkafka equivalent here.
    """
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(settings.brokers),
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol.lower(),
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        tls = {
            "ssl.ca.location": settings.ssl_cafile,
            "ssl.certificate.location": settings.ssl_certfile,
            "ssl.key.location": settings.ssl_keyfile,
            "ssl.key.password": _secret(environ, settings.ssl_password_env, "ssl_password_env"),
        }
        config.update({key: value for key, value in tls.items() if value is not None})
        config["ssl.endpoint.identification.algorithm"] = "https" if settings.ssl_check_hostname else "none"
    if settings.sasl_mechanism == "AWS_MSK_IAM":
        raise ValueError("source.kafka.sasl_mechanism: AWS_MSK_IAM needs source.kafka.client kafka-python")
    if settings.sasl_mechanism is not None:
        config["sasl.mechanisms"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = _secret(environ, settings.sasl_password_env, "sasl_password_env")
    return config


def producer_config(
    settings: KafkaSourceSettings,
    brokers: Optional[list[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    **options: Any,
) -> dict[str, Any]:
    """Arguments of a KafkaProducer: the client configuration plus ``options``
    (acks, linger_ms, batch_size, retries: what the producer is for)."""
    config = client_config(settings, environ, brokers)
    config.update(options)
    return config
