"""boto3 clients for the sinks and the provisioning command.

Credentials come only from boto3's default chain (environment, shared
profile, IRSA web identity on EKS); settings hold the region and, for an
emulator, ``aws.endpoint_url``. botocore's own retries are turned off for
sink clients (``total_max_attempts=1``): the sinks retry with their own
backoff in a background thread, so a retry never stalls a worker and every
attempt is counted.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from config.settings import Settings


def aws_client(service: str, settings: Settings, *, sink: bool = True) -> Any:
    """A client for ``service`` in ``aws.region`` (at ``aws.endpoint_url`` if set).

    :arg sink: True for a sink client (no botocore retries, timeouts from
        ``sinks.retry.request_timeout_seconds``); False keeps botocore's
        standard retries, for the provisioning command.
    """
    if sink:
        timeout = settings.sinks.retry.request_timeout_seconds
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=min(timeout, 5.0),
            read_timeout=timeout,
            max_pool_connections=4,
        )
    else:
        config = Config(retries={"max_attempts": 5, "mode": "standard"})
    session = boto3.session.Session(region_name=settings.aws.region)
    return session.client(service, endpoint_url=settings.aws.endpoint_url, config=config)
