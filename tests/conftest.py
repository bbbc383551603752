"""Shared fixtures: real servers per session, fresh resources per test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.servers import ServerProcess, start_moto, start_tansu

# The property tests draw the same examples on every run, so the suite passes or fails the same
# way on every machine (CI lands nothing on a failure). Looking for new counterexamples is a
# choice: `pytest --hypothesis-profile=explore` draws fresh ones, and found failures replay
# from the local example database.
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")

#: Fixtures that start a real server: a test using one (directly or through
#: another fixture) is an integration test whatever its own marks say.
SERVER_FIXTURES = frozenset({"kafka_broker", "moto"})

# boto3 must never reach a real account from the tests.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture, so ``-m "not integration"`` is the fast unit run."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


_Popen = subprocess.Popen


class _RefusedPopen(_Popen):  # type: ignore[type-arg]
    def __init__(self, args, *rest, **kwargs) -> None:
        raise RuntimeError(
            f"this test starts a subprocess ({args!r}) but is not marked @pytest.mark.integration: "
            "mark it (or its module: pytestmark = pytest.mark.integration)"
        )


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked integration may not start a process: the unit run stays fast and self-contained."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setattr(subprocess, "Popen", _RefusedPopen)


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
