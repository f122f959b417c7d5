"""A loopback HTTP server that speaks the OpenAI chat-completions and embeddings protocol.

The hosted LLM cannot run here, so tests that exercise the OpenAI-compatible provider (directly, or
through workers in other processes) talk to this instead.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "sk-test-0123456789abcdefSECRET"

FINDINGS = {
    "findings": [
        {"line": 7, "rule": "security.eval", "severity": "HIGH", "message": "eval of input"},
        {"line": 2, "rule": "quality.naming", "severity": "warning", "message": "bad name"},
        {"line": 3, "rule": "style.x", "severity": "catastrophic", "message": "odd"},
    ]
}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    at: float
    path: str
    body: dict[str, Any]


class FakeOpenAI(ThreadingHTTPServer):
    """A loopback server speaking enough of the OpenAI protocol; replies can be scripted."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = []
        self.requests: list[Recorded] = []
        self.chat_content: str = json.dumps(FINDINGS)
        #: Seconds every default reply takes, like a real model's latency.
        self.latency = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def default_reply(self, path: str, body: dict[str, Any]) -> Reply:
        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        if path == "/v1/chat/completions":
            return Reply(
                body={
                    "model": body["model"] + "-0613",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.chat_content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        if path == "/v1/embeddings":
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(text)), float(i)]}
                for i, text in enumerate(body["input"])
            ]
            # Real servers may answer out of order; "index" is authoritative.
            return Reply(body={"model": body["model"], "data": data[::-1], "usage": usage})
        return Reply(404, {"error": {"message": f"no route {path}"}})


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(Recorded(time.monotonic(), self.path, body))
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {KEY}":
            # Like OpenAI, echo the rejected key: the client must redact it.
            reply = Reply(401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}"}})
        elif self.server.script:
            reply = self.server.script.pop(0)
        else:
            reply = self.server.default_reply(self.path, body)
            reply.delay = self.server.latency
        time.sleep(reply.delay)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client timed out and hung up, which is what a timeout test wants

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running_fake_openai(latency: float = 0.0) -> Iterator[FakeOpenAI]:
    """A started :class:`FakeOpenAI`, shut down afterwards."""
    fake = FakeOpenAI()
    fake.latency = latency
    thread = threading.Thread(target=fake.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.shutdown()
        fake.server_close()
