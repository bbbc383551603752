"""A process of a cluster on one host waits for its lower-numbered peers to listen (cli/cluster_start.py)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from cli.cluster_start import listening_ports, local_peer_ports, wait_for_peers
from tests.support.config import write_config
from tests.support.flow import ROOT, flow_command, flow_env
from tests.support.output import jsonl_lines
from tests.support.servers import free_port


def test_only_lower_numbered_peers_on_loopback_are_waited_for() -> None:
    addresses = "127.0.0.1:5001;localhost:5002;10.0.0.7:5003;127.0.0.1:5004"
    assert local_peer_ports(["-i", "3", "-a", addresses], {}) == [5001, 5002]
    assert local_peer_ports(["dataflow", "--process-id", "1", "--addresses", addresses], {}) == [5001]
    assert local_peer_ports(["-i", "0", "-a", addresses], {}) == []  # process 0 only listens
    assert local_peer_ports([], {}) == []  # a single process
    assert local_peer_ports(["-w", "2"], {}) == []


def test_the_variables_bytewax_run_reads_count_too() -> None:
    environ = {"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "127.0.0.1:7001;127.0.0.1:7002"}
    assert local_peer_ports([], environ) == [7001]
    assert local_peer_ports(["-i", "0"], environ) == []  # the flag wins, as in bytewax.run


def test_peers_on_other_hosts_are_left_to_timely() -> None:
    hosts = "paywatch-0.paywatch:2101;paywatch-1.paywatch:2101"
    assert local_peer_ports(["-i", "1", "-a", hosts], {}) == []


def test_a_listening_socket_is_found_in_the_tables(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"  # 127.0.0.1:8080 listening
        "   1: 0100007F:1F91 0100007F:CC5B 01 00000000:00000000\n"  # 127.0.0.1:8081 established
    )
    assert listening_ports([table]) == {8080}
    assert listening_ports([tmp_path / "missing"]) is None


@pytest.mark.integration
def test_the_wait_ends_when_the_peer_listens_and_not_before() -> None:
    if listening_ports() is None:
        pytest.skip("no /proc/net/tcp on this host")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not wait_for_peers([port], timeout=0.05)  # bound, not listening
        sock.listen()
        assert wait_for_peers([port], timeout=5.0)


@pytest.mark.integration
def test_process_1_started_first_connects_without_timelys_retry(tmp_path: Path) -> None:
    """Process 1 ready long before process 0: it waits for 0 to listen, so Timely never sleeps a second."""
    events = 2_000
    simulator = {"scenario": "normal", "events": events, "rate": 0, "seed": 7, "partitions": 2}
    config = write_config(tmp_path / "two.yaml", tmp_path / "out", source={"type": "simulator"}, simulator=simulator)
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    procs: dict[int, subprocess.Popen] = {}
    for i in (1, 0):
        with open(tmp_path / f"{i}.stdout", "wb") as out, open(tmp_path / f"{i}.stderr", "wb") as err:
            procs[i] = subprocess.Popen(
                flow_command("-i", str(i), "-a", addresses), cwd=ROOT, env=flow_env(config), stdout=out, stderr=err
            )
        while i == 1 and b"paywatch: reading" not in (tmp_path / "1.stderr").read_bytes():
            assert procs[1].poll() is None, (tmp_path / "1.stderr").read_text()[-2000:]
            time.sleep(0.01)  # process 1's banner: its start-up is done, it is about to connect
    for i, proc in procs.items():
        assert proc.wait(timeout=120) == 0, (tmp_path / f"{i}.stderr").read_text()[-2000:]
    assert b"retrying" not in (tmp_path / "1.stdout").read_bytes()
    assert len(jsonl_lines(tmp_path / "out", "transactions")) == events
