"""``sluice serve``: a small HTTP server for ``/health``, ``/metrics`` and ``/stats``.

Connections are read by one asyncio loop, each request head under a deadline
(:data:`READ_TIMEOUT`) and a size limit, so half-sent requests cost a socket, not a thread, and are
closed when their deadline passes. Only complete requests reach the work: a fixed pool of
:data:`WORKER_THREADS` threads, all started with the server, so a crowd of scrapers waits its turn
instead of piling up threads, and the thread count never moves. The standard library is enough:
no framework import slows ``sluice serve`` down at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.monitoring.collector import build_registry
from sluice.monitoring.health import health_report
from sluice.monitoring.stats import collect_stats

log = logging.getLogger(__name__)

#: Seconds a client has to send its request head, and to take the response.
READ_TIMEOUT = 5.0
#: Largest request head accepted (request line and headers).
MAX_HEAD_BYTES = 16 * 1024
#: Threads answering complete requests (checks, scrapes); a fixed number.
WORKER_THREADS = 8
#: Open connections beyond this are closed at once (file descriptors are finite).
MAX_CONNECTIONS = 1024

Response = tuple[HTTPStatus, str, bytes]
_REGISTRY = build_registry()


def _json(status: HTTPStatus, body: Any) -> Response:
    return status, "application/json", json.dumps(body, default=str).encode()


def respond(path: str) -> Response:
    """The response to ``GET path`` (runs in a worker thread: the checks block)."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    try:
        if path == "/health":
            healthy, body = health_report()
            return _json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, body)
        if path == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(_REGISTRY)
        if path == "/stats":
            return _json(HTTPStatus.OK, collect_stats())
        return _json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
    except Exception:
        log.exception("error serving %s", path)
        return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the log"})


class _Refused(Exception):
    """A request answered with an error before any work: the response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response[0].phrase)
        self.response = response


def _parse_request_line(head: bytes) -> tuple[str, str]:
    """``(method, path)`` of a request head; :class:`_Refused` if it is not one we serve."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1].startswith("/"):
        raise _Refused(_json(HTTPStatus.BAD_REQUEST, {"error": "malformed request line"}))
    method, path, _ = parts
    if method not in {"GET", "HEAD"}:
        raise _Refused(
            _json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"method {method!r} not allowed"})
        )
    return method, path


class MonitoringServer:
    """The server behind ``sluice serve``; bound when made (``port=0`` picks a free port).

    The interface is :class:`socketserver.BaseServer`'s: :meth:`serve_forever` (blocks),
    :meth:`shutdown` (from another thread), :meth:`server_close`, ``server_address``.
    """

    def __init__(self, host: str, port: int, read_timeout: float = READ_TIMEOUT) -> None:
        self.read_timeout = read_timeout
        self.socket = socket.create_server((host, port), backlog=512)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="sluice-serve")
        self._start_every_thread()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._connections = 0

    def _start_every_thread(self) -> None:
        # The executor starts threads on demand; making each wait for all the others forces every
        # one to start now, so the count is the same before and after any load.
        barrier = threading.Barrier(WORKER_THREADS)
        for future in [self._pool.submit(barrier.wait) for _ in range(WORKER_THREADS)]:
            future.result()

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or an interrupt)."""
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self.socket, limit=MAX_HEAD_BYTES)
        self._started.set()
        async with server:
            await self._stop.wait()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        if not self._started.wait(5) or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._stopped.wait(30)

    def server_close(self) -> None:
        """Release the socket and the worker threads."""
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections <= MAX_CONNECTIONS:
                await self._answer(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client was too slow, or left: nothing to answer
        finally:
            self._connections -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
            except (asyncio.LimitOverrunError, ValueError):
                raise _Refused(
                    _json(
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        {"error": f"request head over {MAX_HEAD_BYTES} bytes"},
                    )
                ) from None
            method, path = _parse_request_line(head)
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(self._pool, respond, path)
            log.debug("%s %s %d", method, path, response[0])
        except _Refused as refused:
            response = refused.response
        status, content_type, body = response
        writer.write(
            (
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n"
                "Server: sluice\r\n\r\n"
            ).encode("latin-1")
            + (b"" if method == "HEAD" else body)
        )
        await asyncio.wait_for(writer.drain(), self.read_timeout)


def make_server(host: str, port: int) -> MonitoringServer:
    """A bound, not yet serving, server; ``port=0`` picks a free port (see ``server_address``)."""
    return MonitoringServer(host, port)
