"""`/health` beside `/metrics` on the Prometheus port: one small WSGI server, in a thread, for both."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["serve_metrics_and_health"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes are not worth a log line each."""


def serve_metrics_and_health(port: int, status: Callable[[], dict[str, Any]], addr: str = "127.0.0.1") -> Any:
    """Serve `/health` (200 when `status()["ok"]`, else 503, JSON body) and `/metrics`; returns the server.

    Any other path is 404: a probe of `/ready` or `/healthz` must fail loudly, not pass on the metrics' 200.
    """
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/health":
            body = status()
            start_response("200 OK" if body.get("ok") else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics and /health are served here\n"]

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics-and-health").start()
    return server
