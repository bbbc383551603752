"""Shared fixtures: real servers per session, fresh resources per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import ServerProcess, start_moto, start_tansu  # noqa: E402

# boto3 must never reach a real account from the tests.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def kafka_broker(server_logs) -> ServerProcess:
    """A real Kafka-protocol broker (Tansu) on a free loopback port."""
    server = start_tansu(server_logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto(server_logs) -> ServerProcess:
    """moto_server on a free loopback port: AWS APIs over the real wire protocol."""
    server = start_moto(server_logs)
    yield server
    server.stop()
