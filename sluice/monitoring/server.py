"""``sluice serve``: a small threaded HTTP server for ``/health``, ``/metrics`` and ``/stats``.

The standard library's ``ThreadingHTTPServer`` keeps start-up fast (no framework import) and gives
each request its own thread, so a slow scrape never delays a health probe.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.monitoring.collector import build_registry
from sluice.monitoring.health import health_report
from sluice.monitoring.stats import collect_stats

log = logging.getLogger(__name__)


class MonitoringHandler(BaseHTTPRequestHandler):
    """Routes ``GET /health``, ``/metrics`` and ``/stats``; anything else is 404."""

    server_version = "sluice"
    registry = build_registry()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/health":
                healthy, body = health_report()
                self._json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, body)
            elif path == "/metrics":
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.registry))
            elif path == "/stats":
                self._json(HTTPStatus.OK, collect_stats())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
        except Exception:
            log.exception("error serving %s", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the log"})

    def _json(self, status: HTTPStatus, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body, default=str).encode())

    def _send(self, status: HTTPStatus, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines go to the sluice logger (so they are redacted and JSON-formatted too).
        log.debug("%s %s", self.address_string(), format % args)


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    """A bound, not yet serving, server; ``port=0`` picks a free port (see ``server_address``)."""
    server = ThreadingHTTPServer((host, port), MonitoringHandler)
    server.daemon_threads = True
    return server
