"""The merchant table read in a child process: the table crosses processes, failures keep the
last good copy, and no child outlives a stop."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import threading
import uuid

import boto3
import orjson
import pytest

from config import load_settings
from connectors.reference.child import ReadStopped, read_in_child
from connectors.reference.loader import ReferenceLoader, ReferenceStartError
from connectors.reference.merchants import MerchantReadError
from observability.registry import REGISTRY
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import NOT_CONFIGURED, MerchantTable
from tests.support.reference_helpers import wait_for

FAILURES = "paywatch_reference_load_failures_total"


def _failures() -> float:
    return REGISTRY.get_sample_value(FAILURES) or 0.0


def test_a_pickled_table_rebuilds_its_index_and_keeps_every_column():
    rows = [(f"m{i}", f"Shop {i}", i % 4 != 0, float(i) if i % 3 else None) for i in range(2_000)]
    rows.append(("with\0nul", "Odd", True, 5.0))  # an id holding the separator: kept as a list
    table = MerchantTable(rows)
    copy = pickle.loads(pickle.dumps(table))
    ids = [row[0] for row in rows] + ["absent", None]
    assert copy.slots(ids).tolist() == table.slots(ids).tolist()
    assert copy.status.tolist() == table.status.tolist()
    assert copy.limit_of("m7") == 7.0 and copy.status_of("m8") == "inactive" and copy.status_of("with\0nul") == "active"
    assert copy.suspicious_names(["shop 12"]).tolist() == table.suspicious_names(["shop 12"]).tolist()
    empty = pickle.loads(pickle.dumps(NOT_CONFIGURED))
    assert len(empty) == 0 and empty.status_of("m1") == "not_loaded" and not empty.loaded


@pytest.mark.integration
def test_a_table_built_in_a_child_is_found_by_this_processs_hashes(tmp_path):
    path = tmp_path / "merchants.jsonl"
    lines = [{"merchant_id": f"m{i}", "name": f"Shop {i}", "active": i % 2 == 0} for i in range(5_000)]
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n{}\n")
    # The child's hash() is salted differently: only a rebuilt index finds the ids here.
    table, skipped, first_bad = read_in_child(str(path), load_settings(environ={}))
    assert (len(table), skipped, first_bad) == (5_000, 1, "line 5001")
    assert table.status_of("m4") == "active" and table.status_of("m5") == "inactive"
    assert table.status_of("m5000") == "unknown"
    assert not multiprocessing.active_children()
    with pytest.raises(MerchantReadError, match="missing.jsonl"):
        read_in_child(str(tmp_path / "missing.jsonl"), load_settings(environ={}))


def _dynamodb_settings(moto_url: str, table: str, refresh: float = 3600):
    return load_settings(
        environ={},
        overrides={
            "aws": {"endpoint_url": moto_url, "region": "us-east-1"},
            "reference": {"merchants": {"path": f"dynamodb://{table}", "refresh_seconds": refresh}},
        },
    )


@pytest.mark.integration
def test_a_failed_dynamodb_refresh_keeps_the_last_good_table_and_a_failed_start_stops(moto):
    name = f"merchants-{uuid.uuid4().hex[:8]}"
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto.url)
    with pytest.raises(ReferenceStartError, match=f"reference.merchants.path: merchant table dynamodb://{name}"):
        ReferenceLoader(_dynamodb_settings(moto.url, name)).load_initial()
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "merchant_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "merchant_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=name, Item={"merchant_id": {"S": "m_1"}, "active": {"BOOL": True}})
    loader = ReferenceLoader(_dynamodb_settings(moto.url, name))
    holder = loader.load_initial()
    first = holder.current
    assert first.merchants.status_of("m_1") == "active"

    dynamodb.update_item(
        TableName=name,
        Key={"merchant_id": {"S": "m_1"}},
        UpdateExpression="SET active = :f",
        ExpressionAttributeValues={":f": {"BOOL": False}},
    )
    assert loader.refresh(force=True)
    second = holder.current
    assert second.merchants.status_of("m_1") == "inactive"

    dynamodb.delete_table(TableName=name)
    before = _failures()
    assert not loader.refresh(force=True)
    assert _failures() == before + 1
    assert holder.current is second
    assert not multiprocessing.active_children()


@pytest.fixture
def silent_endpoint():
    """A loopback port that accepts connections and never answers: a read through it hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.integration
def test_stop_ends_the_reading_child_of_a_hung_refresh(silent_endpoint):
    settings = _dynamodb_settings(silent_endpoint, "hung", refresh=0.05)
    loader = ReferenceLoader(settings)
    loader.holder = ReferenceHolder(LiveReference.of(settings.rules))  # as if the first load had worked
    kept = loader.holder.current
    before = _failures()
    loader.start()
    wait_for(lambda: bool(multiprocessing.active_children()), "the reading child")
    (child,) = multiprocessing.active_children()
    pid = child.pid
    loader.stop()
    assert not multiprocessing.active_children()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert loader.holder.current is kept
    assert _failures() == before  # a read abandoned at stop is not a failed read


@pytest.mark.integration
def test_a_stopped_read_raises_and_leaves_no_child(silent_endpoint):
    settings = _dynamodb_settings(silent_endpoint, "hung")
    stop = threading.Event()
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_in_child("dynamodb://hung", settings, stop)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    wait_for(lambda: bool(multiprocessing.active_children()), "the reading child")
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ReadStopped)
    assert not multiprocessing.active_children()


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in handle)
    except FileNotFoundError:
        return False


@pytest.mark.integration
def test_the_reading_child_leaves_when_the_flow_process_is_killed(silent_endpoint, tmp_path):
    script = tmp_path / "flow.py"
    script.write_text(
        "import multiprocessing, sys, threading, time\n"
        "from config import load_settings\n"
        "from connectors.reference.child import read_in_child\n"
        "def show():\n"
        "    while not multiprocessing.active_children():\n"
        "        time.sleep(0.05)\n"
        "    print(multiprocessing.active_children()[0].pid, flush=True)\n"
        "threading.Thread(target=show, daemon=True).start()\n"
        f"settings = load_settings(environ={{}}, overrides={{'aws': {{'endpoint_url': {silent_endpoint!r}}}}})\n"
        "read_in_child('dynamodb://hung', settings)\n"
    )
    environ = {**os.environ, "PYTHONPATH": os.getcwd()}
    flow = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=environ)
    try:
        assert flow.stdout is not None
        child = int(flow.stdout.readline())
        assert _running(child)
    finally:
        flow.kill()  # SIGKILL: no atexit, no terminate() of the child
        flow.wait()
    wait_for(lambda: not _running(child), "the orphaned child to leave", timeout=15)
