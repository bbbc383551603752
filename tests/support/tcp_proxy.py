"""A loopback TCP proxy that a test can cut and restore, to simulate a network outage.

moto_server keeps its state in memory, so stopping it would forget every
table and topic; stopping this proxy in front of it cuts the network instead:
open connections are closed and new ones refused until :meth:`start` binds
the same port again.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Optional


class TcpProxy:
    """Forwards ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port`` with plain threads."""

    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        self.target_port = target_port
        self.port = listen_port
        self._server: Optional[socket.socket] = None
        self._conns: set[socket.socket] = set()
        self._spared: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut_after: Optional[int] = None
        self._outage_seconds = 0.0
        self._forwarded = 0
        self.forwarded = 0
        """Bytes sent from the target to clients since the proxy was made."""
        self.rate: Optional[float] = None
        """Bytes per second each connection (but the spared ones) may send to its client; None: no limit."""
        self.cutting = threading.Event()
        """Set while a cut (:meth:`cut_after`, :meth:`cut`) is in effect."""
        self.restored = threading.Event()
        """Set once an armed cut is over (the proxy listens again right after)."""
        self.cut_at: Optional[float] = None
        """``time.monotonic()`` once every connection of the last cut is closed: nothing crosses after it."""
        self.restored_at: Optional[float] = None
        """``time.monotonic()`` just before the proxy listens again after the last cut: nothing crossed before it."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def cut_after(self, nbytes: int, outage_seconds: float) -> None:
        """Cut every connection when ``nbytes`` more bytes would have gone from the target to clients
        (the bytes that reach the count are not sent), then listen again ``outage_seconds`` later.

        Triggered by traffic, not by a timer, so the cut falls in the middle
        of a read however fast the machine is: the reader cannot finish
        without the bytes that come after it.
        """
        with self._lock:
            self._forwarded = 0
            self._cut_after = nbytes
            self._outage_seconds = outage_seconds
        self.cutting.clear()
        self.restored.clear()

    def spare_open(self) -> None:
        """Exempt the connections open now from every later cut (and from the byte counts).

        For a client that must keep working through the outage (a producer
        adding records while the reader is cut off): the broker tells every
        client the proxy's address, so its connections must cross the proxy.
        """
        with self._lock:
            self._spared = set(self._conns)

    def cut(self, outage_seconds: Optional[float] = None) -> None:
        """Cut every connection (but the spared ones) now, and listen again ``outage_seconds`` later
        (None: when :meth:`restore` is called)."""
        self.restored.clear()
        self.stop()
        self.cut_at, self.restored_at = time.monotonic(), None
        self.cutting.set()  # only once every connection is closed: nothing crosses while it is set
        if outage_seconds is not None:
            threading.Thread(target=self._restore_after, args=(outage_seconds,), daemon=True).start()

    def _admit(self, source: socket.socket, nbytes: int) -> bool:
        """Count ``nbytes`` about to go to a client; False when they reach an armed cut.

        The cut is then made here, before they are sent and before
        :attr:`cutting` is set: the bytes that reach the threshold are never
        delivered (the reader's answer stays incomplete), and every connection
        is closed first, so nothing crosses while ``cutting`` is set. (Setting
        it first and closing from another thread let the rest of an answer,
        or a whole one, through, and the reader acted on it during the cut.)
        """
        with self._lock:
            if source in self._spared:  # not the traffic under test
                return True
            if self._cut_after is not None and self._forwarded + nbytes >= self._cut_after:
                self._cut_after = None
            else:
                self.forwarded += nbytes
                if self._cut_after is not None:
                    self._forwarded += nbytes
                return True
        self.stop()
        self.cut_at, self.restored_at = time.monotonic(), None
        self.cutting.set()
        threading.Thread(target=self._restore_after, args=(self._outage_seconds,), daemon=True).start()
        return False

    def _restore_after(self, outage_seconds: float) -> None:
        threading.Event().wait(outage_seconds)
        self.restore()

    def restore(self) -> None:
        """End the cut in effect: listen again."""
        # ``cutting`` is cleared before the proxy listens again, for the same reason it is set
        # only once every connection is closed; ``restored`` first, so no moment reads as "before".
        self.restored_at = time.monotonic()
        self.restored.set()
        self.cutting.clear()
        self.start()

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        server, self._server = self._server, None
        if server is not None:
            _close(server)
        with self._lock:
            conns, self._conns = self._conns - self._spared, set(self._spared)
        for conn in conns:
            _close(conn)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _addr = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or (to_client and not self._admit(src, len(data))):
                    break
                dst.sendall(data)
                if to_client:
                    rate = self.rate
                    if rate and src not in self._spared:
                        threading.Event().wait(len(data) / rate)  # a slow link: the reader waits for its data
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)
            with self._lock:
                self._conns -= {src, dst}
                self._spared -= {src, dst}


def _close(sock: socket.socket) -> None:
    """Shut down both directions (so the peer sees the cut at once), then close."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
