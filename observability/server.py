"""One HTTP server per process: ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` is prometheus-client's own WSGI app over
:data:`observability.registry.REGISTRY` (text or OpenMetrics by ``Accept``,
gzip, ``name[]`` filters); ``/healthz`` is liveness (the process answers);
``/readyz`` is readiness (:mod:`observability.readiness`: the dataflow is
running). Served by prometheus-client's threading WSGI server in a daemon
thread, started once per process whatever the number of workers or of
``build_flow`` calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Optional
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from observability import readiness
from observability.registry import REGISTRY, SERVER_START

logger = logging.getLogger(__name__)

_PLAIN = [("Content-Type", "text/plain; charset=utf-8")]
_metrics_app = make_wsgi_app(REGISTRY)
_server_lock = threading.Lock()
_server: Optional[ThreadingWSGIServer] = None


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI app behind the port: Prometheus's for ``/metrics``, two probes beside it."""
    path = environ.get("PATH_INFO", "")
    if path == "/metrics":
        return _metrics_app(environ, start_response)
    if path == "/healthz":
        start_response("200 OK", _PLAIN)
        return [b"ok\n"]
    if path == "/readyz":
        if readiness.is_ready():
            start_response("200 OK", _PLAIN)
            return [b"ready\n"]
        start_response("503 Service Unavailable", _PLAIN)
        return [b"dataflow not running yet\n"]
    start_response("404 Not Found", _PLAIN)
    return [b"not found; try /metrics, /healthz or /readyz\n"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds would flood the log; say nothing."""


def start_server(port: Optional[int], host: str = "0.0.0.0") -> Optional[int]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` in a daemon thread.

    Once per process: later calls return the port already serving. Port 0
    picks a free port (tests).

    :arg port: ``settings.metrics.port``; None leaves metrics off.
    :returns: the port serving, or None when off.
    :raises OSError: the port is taken (``metrics.port``: give each process
        on one host its own, e.g. ``PAYWATCH__METRICS__PORT``).
    """
    global _server
    if port is None:
        return None
    with _server_lock:
        if _server is None:
            try:
                server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"metrics.port {port}: cannot listen ({exc.strerror}); give each process on one "
                    "host its own port, e.g. PAYWATCH__METRICS__PORT",
                ) from None
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="paywatch-metrics", daemon=True
            )
            thread.start()
            SERVER_START.set(time.time())
            _server = server
            logger.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
        return _server.server_address[1]


def stop_server() -> None:
    """Stop the server (tests); the series keep their values."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.shutdown()
            _server.server_close()
            _server = None
