"""A loopback HTTP server that speaks the OpenAI chat-completions and embeddings protocol.

The hosted LLM cannot run here, so tests that exercise the OpenAI-compatible provider (directly, or
through workers in other processes) talk to this instead.

Like the real API it counts tokens and enforces limits per model when given them
(:attr:`FakeOpenAI.tpm`, :attr:`FakeOpenAI.rpm`): prompt tokens are counted with OpenAI's
tokenizer (``bpe-openai``), the answer takes ``min(max_tokens, completion_tokens)`` tokens, and a
request that would take the last :attr:`FakeOpenAI.window` seconds' tokens or requests past a limit
is answered 429 with ``Retry-After`` (whole seconds until enough of the window frees) and counted
in :attr:`FakeOpenAI.rejected`.
"""

from __future__ import annotations

import json
import math
import select
import socket
import threading
import time
from collections import deque
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
    #: The reply's status and reported usage, set once it is chosen (0 and None until then).
    status: int = 0
    usage: dict[str, int] | None = None
    #: The caller hung up (timed out, or its process was killed) before the reply was written.
    abandoned: bool = False
    #: The processes holding the caller's end of the connection (``record_callers`` only).
    callers: frozenset[int] = frozenset()


class FakeOpenAI(ThreadingHTTPServer):
    """A loopback server speaking enough of the OpenAI protocol; replies can be scripted."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = []
        self.requests: list[Recorded] = []
        #: Look up which processes sent each request (one scan of the machine's sockets each).
        self.record_callers = False
        self.chat_content: str = json.dumps(FINDINGS)
        #: Seconds every default reply takes, like a real model's latency.
        self.latency = 0.0
        #: Limits per 60 s sliding window (None: unlimited), and what the window holds.
        self.tpm: int | None = None
        self.rpm: int | None = None
        self.window = 60.0
        #: Tokens an answer takes when ``max_tokens`` allows (with limits set).
        self.completion_tokens = 50
        self.rejected = 0
        #: Per model, like OpenAI: ``(arrival, tokens)`` of the calls in the window.
        self.used: dict[str, deque[tuple[float, int]]] = {}
        self.lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.tpm is not None or self.rpm is not None

    def admit(self, path: str, body: dict[str, Any]) -> tuple[Reply | None, dict[str, int]]:
        """Count the request against the limits: ``(429 reply or None, its usage)``."""
        prompt, completion = _usage_of(path, body, self.completion_tokens)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        now = time.monotonic()
        with self.lock:
            used = self.used.setdefault(str(body.get("model")), deque())
            while used and used[0][0] + self.window <= now:
                used.popleft()
            tokens = sum(amount for _, amount in used)
            over_tokens = self.tpm is not None and tokens + prompt + completion > self.tpm
            over_requests = self.rpm is not None and len(used) + 1 > self.rpm
            if not (over_tokens or over_requests):
                used.append((now, prompt + completion))
                return None, usage
            self.rejected += 1
            # Retry-After: when enough of the window will have expired for this request to fit.
            need_tokens = tokens + prompt + completion - (self.tpm or 0) if over_tokens else 0
            need_requests = len(used) + 1 - (self.rpm or 0) if over_requests else 0
            freed_tokens, freed_requests, wait = 0, 0, self.window
            for at, amount in used:
                freed_tokens, freed_requests = freed_tokens + amount, freed_requests + 1
                if freed_tokens >= need_tokens and freed_requests >= need_requests:
                    wait = at + self.window - now
                    break
        kind = "tokens" if over_tokens else "requests"
        message = f"Rate limit reached for {body.get('model')} on {kind} per min"
        headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        return Reply(429, {"error": {"message": message, "type": kind}}, headers), usage

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def default_reply(
        self, path: str, body: dict[str, Any], usage: dict[str, int] | None = None
    ) -> Reply:
        usage = usage or {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
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
        recorded = Recorded(time.monotonic(), self.path, body)
        if self.server.record_callers:
            recorded.callers = _callers(self.client_address[1], self.server.server_address[1])
        self.server.requests.append(recorded)
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {KEY}":
            # Like OpenAI, echo the rejected key: the client must redact it.
            reply = Reply(401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}"}})
        elif self.server.script:
            reply = self.server.script.pop(0)
        elif self.server.limited:
            refused, usage = self.server.admit(self.path, body)
            reply = refused or self.server.default_reply(self.path, body, usage)
            reply.delay = 0.0 if refused else self.server.latency
        else:
            reply = self.server.default_reply(self.path, body)
            reply.delay = self.server.latency
        recorded.status = reply.status
        if isinstance(reply.body, dict) and isinstance(reply.body.get("usage"), dict):
            recorded.usage = reply.body["usage"]
        time.sleep(reply.delay)
        recorded.abandoned = _hung_up(self.connection)
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


def _callers(client_port: int, server_port: int) -> frozenset[int]:
    """The pids with the client end (``client_port`` -> ``server_port``) of a loopback connection."""
    import psutil

    return frozenset(
        c.pid
        for c in psutil.net_connections("tcp")
        if c.pid
        and c.laddr
        and c.raddr
        and (c.laddr.port, c.raddr.port) == (client_port, server_port)
    )


def _hung_up(connection: socket.socket) -> bool:
    """Whether the peer closed the connection: readable with nothing left to read (EOF)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True  # reset by the peer


def _usage_of(path: str, body: dict[str, Any], completion_tokens: int) -> tuple[int, int]:
    """Prompt and answer tokens as OpenAI counts them: 4 per message (plus its role and content
    tokens) and 3 to prime the reply; an embedding is its inputs' tokens and answers nothing."""
    import bpe_openai

    try:
        name = bpe_openai.encoding_name_for_model(body.get("model", ""))
    except KeyError:
        name = "o200k_base"
    encoding = bpe_openai.get_encoding(name)

    def count(text: object) -> int:
        return len(encoding.encode_ordinary(text if isinstance(text, str) else ""))

    if path.endswith("/embeddings"):
        inputs = body.get("input", [])
        return sum(count(t) for t in ([inputs] if isinstance(inputs, str) else inputs)), 0
    messages = body.get("messages", [])
    prompt = 3 + sum(4 + count(m.get("role")) + count(m.get("content")) for m in messages)
    limit = body.get("max_tokens") or completion_tokens
    return prompt, min(int(limit), completion_tokens)


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
