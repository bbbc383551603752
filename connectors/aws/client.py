"""The one place boto3 clients are built: sinks, the Kinesis source, the CLI tools.

Credentials come only from boto3's default chain (environment, shared
profile, IRSA web identity on EKS); settings hold the region and, for an
emulator, ``aws.endpoint_url``. What differs between callers is how much
botocore may retry and how long a call may take, so each caller names a
:class:`ClientProfile`:

- sinks: no botocore retries (``attempts=1``): they retry with
  :class:`~connectors.aws.retry.Backoff` in a background thread, so a retry
  never stalls a worker and every attempt is counted;
- the Kinesis reader: no botocore retries either, because they would sleep
  inside ``next_batch``; the source backs off per shard instead;
- control calls (ListShards, GetShardIterator) and the CLI tools: botocore's
  standard retries, since nothing else retries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from config.settings import AwsSettings, Settings


@dataclass(frozen=True)
class ClientProfile:
    """How a client calls AWS: botocore's attempts (1 = the caller retries) and its limits."""

    attempts: int
    connect_timeout: float = 60.0
    read_timeout: float = 60.0
    max_pool_connections: int = 10


#: ``python -m cli.provision``: botocore's standard retries (5 retries, default timeouts).
PROVISION = ClientProfile(attempts=6)


def sink_profile(request_timeout_seconds: float) -> ClientProfile:
    """A sink's client: one attempt per call, bounded by ``sinks.retry.request_timeout_seconds``."""
    return ClientProfile(
        attempts=1,
        connect_timeout=min(request_timeout_seconds, 5.0),
        read_timeout=request_timeout_seconds,
        max_pool_connections=4,
    )


def make_client(service: str, aws: AwsSettings, profile: ClientProfile) -> Any:
    """A client for ``service`` in ``aws.region`` (at ``aws.endpoint_url`` if set)."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": profile.attempts},
        connect_timeout=profile.connect_timeout,
        read_timeout=profile.read_timeout,
        max_pool_connections=profile.max_pool_connections,
    )
    session = boto3.session.Session(region_name=aws.region)
    return session.client(service, endpoint_url=aws.endpoint_url, config=config)


def aws_client(service: str, settings: Settings, *, sink: bool = True) -> Any:
    """A sink's client (``sink=True``) or the provisioning command's (``sink=False``)."""
    profile = sink_profile(settings.sinks.retry.request_timeout_seconds) if sink else PROVISION
    return make_client(service, settings.aws, profile)
