"""A process of a cluster on one host waits until the processes it connects to listen.

Bytewax runs ``-i/-a`` processes over Timely, whose process ``i`` connects
to every lower-numbered process; when one does not listen yet, Timely
prints ``error connecting to worker ...; retrying`` and sleeps a whole
second before trying again (``timely_communication::networking``). Started
together, processes finish their start-up within milliseconds of each other,
so about every other start of two processes paid that second: on a replay
of 300,000 events it turned a 1.4-1.6x gain of the second process into
0.6-0.9x (docs/performance.md, session 6).

Before the flow is handed to Bytewax, a process with a lower-numbered peer
on a loopback address polls the host's table of listening TCP sockets
(``/proc/net/tcp`` and ``tcp6``) until each such peer's port listens, so
Timely's first connect finds it. A probe must not connect: the peer's
Timely accepts exactly one connection per higher-numbered process and fails
on any other. Peers elsewhere (pods of a StatefulSet), hosts without
``/proc`` and a peer that is still not listening after ``WAIT_SECONDS``
are left to Timely's own retry, as before: the wait only ever saves time.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

WAIT_SECONDS = 10.0
"""Longest wait for the peers; after it Timely connects (and retries) as it always did."""

POLL_SECONDS = 0.005
"""Between two reads of the socket tables (a read costs tens of microseconds)."""

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"  # TCP_LISTEN in the kernel's table


def local_peer_ports(argv: Sequence[str], environ: Mapping[str, str]) -> list[int]:
    """Ports of the lower-numbered processes on a loopback address, from ``bytewax.run``'s ``-i/-a``.

    Reads the same flags and variables as ``bytewax.run`` (``-i``/``BYTEWAX_PROCESS_ID``,
    ``-a``/``BYTEWAX_ADDRESSES``); a process 0, a single process and peers on
    other hosts give none.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-i", "--process-id", type=int, default=None)
    parser.add_argument("-a", "--addresses", default=None)
    args, _ = parser.parse_known_args(list(argv))
    process = args.process_id
    if process is None and environ.get("BYTEWAX_PROCESS_ID", "").strip().isdigit():
        process = int(environ["BYTEWAX_PROCESS_ID"])
    addresses = args.addresses if args.addresses is not None else environ.get("BYTEWAX_ADDRESSES")
    if not process or not addresses:
        return []
    ports = []
    for address in addresses.split(";")[:process]:
        host, _, port = address.strip().rpartition(":")
        if host.lower() in _LOOPBACK_HOSTS and port.isdigit():
            ports.append(int(port))
    return ports


def listening_ports(tables: Sequence[Path] = _TABLES) -> Optional[set[int]]:
    """Ports with a listening TCP socket in this network namespace; None where the tables cannot be read."""
    ports: set[int] = set()
    read_any = False
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports if read_any else None


def wait_for_peers(ports: Sequence[int], timeout: float = WAIT_SECONDS, poll: float = POLL_SECONDS) -> bool:
    """Wait until every port in ``ports`` listens; False when the time is up or the tables cannot be read."""
    deadline = time.monotonic() + timeout
    needed = set(ports)
    while needed:
        listening = listening_ports()
        if listening is None:
            return False
        needed -= listening
        if not needed:
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def wait_for_local_peers(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """The start-up step: wait for this process's loopback peers, if it has any."""
    return wait_for_peers(local_peer_ports(argv, environ))
