"""Start-up checks: fail in seconds with one paragraph, not a traceback.

Bytewax builds sources inside its Rust runtime, so a broker that cannot be
reached, a stream that does not exist or a missing credential surfaces there
as a long chained traceback ending in ``error building production
dataflow``, after kafka-python's own 30 s bootstrap wait. These checks run
before the flow is handed to Bytewax, each bounded by
``source.start_timeout_seconds``, and raise :class:`StartError` whose
message names the address or stream, the setting to check and the fix. They
apply only to the start: once running, a lost server is an outage the
sources wait out (docs/sources.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Optional

from config.settings import Settings
from connectors.recovery_store import RecoveryStore, RecoveryStoreError, read_recovery_store


class StartError(RuntimeError):
    """The flow cannot start; the message is one paragraph for the operator."""


def check_servers(settings: Settings) -> None:
    """Reach the configured source and find AWS credentials if anything needs them.

    :raises StartError: naming what could not be reached and the setting to check.
    """
    timeout = settings.source.start_timeout_seconds
    if settings.source.type == "kafka":
        _bounded(lambda: _check_kafka(settings), timeout, _kafka_unreachable(settings, timeout))
    if _needs_aws(settings):
        _check_credentials()
    if settings.source.type == "kinesis":
        _check_kinesis(settings, timeout)


def check_recovery(directory: str, source_parts: Iterable[str], source_step: str) -> RecoveryStore:
    """Open the recovery directory read-only and check it belongs to this source.

    A change of sinks or rules is never a mismatch (their steps' state is
    kept or reported elsewhere); another source type, topic, stream or set
    of partitions is, because Bytewax cannot route the stored positions.

    :raises StartError: the directory is missing, unreadable or holds
        another source's positions.
    """
    create = f"mkdir -p {directory} && python -m bytewax.recovery {directory} 4"
    try:
        store = read_recovery_store(directory)
    except RecoveryStoreError as exc:
        raise StartError(
            f"{exc}. Create one before the first run with `{create}` (4 partitions: at least as many as "
            "the most worker processes you will ever run), or start without -r / BYTEWAX_RECOVERY_DIRECTORY."
        ) from None
    stored = store.state_keys.get(source_step, set())
    current = set(source_parts)
    foreign = sorted(stored - current)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        now = ", ".join(sorted(current)[:4]) + (" ..." if len(current) > 4 else "")
        raise StartError(
            f"recovery directory {directory} holds the positions of another source ({shown}); this run reads "
            f"{now}. A recovery directory belongs to one source type, topic or stream and its partitions: "
            "resume with the settings it was made with, or start afresh in an empty directory "
            f"(`rm -r {directory} && {create}`)."
        )
    return store


def _needs_aws(settings: Settings) -> bool:
    sinks = settings.sinks
    return (
        settings.source.type == "kinesis"
        or sinks.cloudwatch.enabled
        or sinks.sns.enabled
        or sinks.dynamodb.enabled
        or sinks.dead_letter.type == "sqs"
    )


def _bounded(check: Callable[[], None], timeout: float, timeout_message: str) -> None:
    """Run ``check`` with a deadline; a client library that hangs cannot hold the start."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            check()
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="paywatch-preflight", daemon=True)
    worker.start()
    worker.join(timeout + 2.0)
    if not outcome:
        raise StartError(timeout_message)
    if outcome[0] is not None:
        raise outcome[0]


def _kafka_unreachable(settings: Settings, timeout: float, cause: str = "") -> str:
    kafka = settings.source.kafka
    brokers = ", ".join(kafka.brokers)
    detail = f" ({cause})" if cause else ""
    return (
        f"cannot reach the Kafka brokers {brokers} within {timeout:g} s{detail}. Check source.kafka.brokers "
        f"(the address must be reachable from this process; security_protocol is {kafka.security_protocol}) "
        "and that the brokers are running; source.start_timeout_seconds sets how long the start waits."
    )


def _check_kafka(settings: Settings) -> None:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from connectors.kafka.client_config import client_config

    kafka = settings.source.kafka
    timeout = settings.source.start_timeout_seconds
    try:
        config = client_config(kafka)
    except ValueError as exc:
        raise StartError(f"{exc}: set it in the environment of this process (never in the settings file).") from None
    try:
        consumer = KafkaConsumer(**config, bootstrap_timeout_ms=int(timeout * 1000))
    except KafkaError as exc:
        raise StartError(_kafka_unreachable(settings, timeout, str(exc))) from None
    try:
        missing = [topic for topic in kafka.topics if not consumer.partitions_for_topic(topic)]
    finally:
        consumer.close()
    if missing:
        raise StartError(
            f"topic {', '.join(missing)} does not exist on the Kafka brokers {', '.join(kafka.brokers)}. "
            "Create it (or let the producer command create it), or fix source.kafka.topic."
        )


def _check_credentials() -> None:
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise StartError(
            "no AWS credentials found, and the Kinesis source or an enabled AWS sink needs them. Provide them "
            "through the default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a shared profile (AWS_PROFILE), "
            "or IRSA on EKS (serviceAccount.roleArn in the chart); they are never read from the settings."
        )


def _check_kinesis(settings: Settings, timeout: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from connectors.aws.client import aws_client
    from connectors.aws.retry import NOT_FOUND_CODES, classify, error_code

    stream = settings.source.kinesis.stream_name
    where = f"region {settings.aws.region}" + (f" at {settings.aws.endpoint_url}" if settings.aws.endpoint_url else "")
    client = aws_client("kinesis", settings)
    deadline = time.monotonic() + timeout
    last: Optional[str] = None
    while time.monotonic() < deadline:
        try:
            client.describe_stream_summary(StreamName=stream)
            return
        except NoCredentialsError:
            _check_credentials()
            raise
        except ClientError as exc:
            code = error_code(exc)
            if code in NOT_FOUND_CODES:
                raise StartError(
                    f"Kinesis stream {stream} does not exist in {where}. Create it with "
                    "`python -m connectors.provision up`, or fix source.kinesis.stream_name / aws.region."
                ) from None
            if classify(exc).transient:
                last = code
            else:
                raise StartError(
                    f"Kinesis refused DescribeStreamSummary on stream {stream} in {where}: {code}: "
                    f"{exc.response.get('Error', {}).get('Message', '')}. Check the AWS credentials and the IAM "
                    "policy (k8s/iam-policy.json)."
                ) from None
        except BotoCoreError as exc:
            last = str(exc)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise StartError(
        f"cannot reach Kinesis stream {stream} in {where} within {timeout:g} s ({last}). Check aws.region, "
        "aws.endpoint_url and the network path to Kinesis; source.start_timeout_seconds sets how long the start waits."
    )
