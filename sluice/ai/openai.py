"""A provider for any OpenAI-compatible HTTP API (OpenAI, Azure-style gateways, vLLM, Ollama, ...).

Calls retry with backoff on rate limits, server errors and connection failures, honouring
``Retry-After``. With an :class:`~sluice.ai.admission.Admission`, every call is reserved against
the cluster-wide limits first and settled with its usage after, and a 429 (or a 503 with
``Retry-After``) pauses the provider for the whole cluster and raises
:class:`~sluice.errors.RetryLater` instead of sleeping in the worker.

The API key is only ever put in the ``Authorization`` header: it is redacted from
every error message and log line, and kept out of ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from sluice.ai.admission import Admission
from sluice.ai.base import (
    SEVERITIES,
    AnalysisResult,
    Completion,
    EmbeddingResult,
    Finding,
    Usage,
    sort_findings,
)
from sluice.ai.inputs import check_code, check_messages, check_texts
from sluice.ai.languages import normalize_language
from sluice.ai.rules import RULES
from sluice.errors import ConfigurationError, InvalidInput, ProviderError
from sluice.retrying import RETRYABLE_STATUSES, backoff_with_jitter, parse_retry_after

log = logging.getLogger(__name__)

_REDACTED = "[redacted]"
_SEVERITY_ALIASES = {
    "blocker": "critical",
    "fatal": "critical",
    "error": "high",
    "major": "high",
    "warning": "medium",
    "warn": "medium",
    "moderate": "medium",
    "minor": "low",
    "note": "info",
    "information": "info",
    "informational": "info",
    "hint": "info",
}

#: Most tokens an analysis answer may take (a JSON list of findings).
ANALYSIS_MAX_TOKENS = 4096

_SYSTEM_PROMPT = """You are a meticulous code reviewer. Report real defects only: security \
vulnerabilities, bugs, and maintainability problems, never praise.
Answer with one JSON object and nothing else, in exactly this shape:
{{"findings": [{{"line": <1-based line number>, "rule": "<category>.<name>", \
"severity": "<{severities}>", "message": "<what is wrong and how to fix it>"}}]}}
Use categories security, quality, style. Known rule ids: {rule_ids}.
Return {{"findings": []}} when the code has no problems."""
_USER_PROMPT = "Language: {language}\n\n{numbered}"
#: The analysis request apart from the code: what the model is told and how it is asked.
_ANALYSIS_REQUEST = {
    "temperature": 0,
    # A bound on the answer, so admission control can reserve what it may cost.
    "max_tokens": ANALYSIS_MAX_TOKENS,
    "response_format": {"type": "json_object"},
}


def _analysis_system_prompt(rules: Sequence[str] | None) -> str:
    system = _SYSTEM_PROMPT.format(
        severities="|".join(SEVERITIES), rule_ids=", ".join(sorted(RULES))
    )
    if rules is not None:
        system += f"\nOnly report these categories or rule ids: {', '.join(rules)}."
    return system


#: A digest of the analysis prompt and request: part of every analysis cache key, so a changed
#: prompt never serves the findings the old one produced.
PROMPT_VERSION = hashlib.sha256(
    json.dumps([_analysis_system_prompt(None), _USER_PROMPT, _ANALYSIS_REQUEST]).encode()
).hexdigest()[:16]


class OpenAIProvider:
    """Analysis, embeddings and chat through ``{base_url}/chat/completions`` and ``/embeddings``.

    ``backoff_base``/``backoff_max`` shape the exponential backoff between retries and
    ``retry_after_max`` caps how long a server's ``Retry-After`` may make a call wait.
    Pass ``client`` to share a connection pool; otherwise the provider owns one (see :meth:`close`).
    ``admission`` puts every call under cluster-wide admission control (see the module docstring).
    """

    name: str = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        embedding_model: str,
        timeout: float = 60.0,
        max_retries: int = 4,
        client: httpx.Client | None = None,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        admission: Admission | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("OpenAIProvider needs an API key (set SLUICE_AI_API_KEY)")
        if max_retries < 0 or timeout <= 0:
            raise ConfigurationError(
                f"need timeout > 0 and max_retries >= 0, got {timeout!r} and {max_retries!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.embedding_model = embedding_model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.admission = admission
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client()

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={self.base_url!r}, model={self.model!r})"

    def cache_identity(self, kind: str) -> dict[str, Any]:
        """See :meth:`AIProvider.cache_identity`; the server counts: another one is another model."""
        identity = {"provider": self.name, "base_url": self.base_url}
        if kind == "analysis":
            return {**identity, "model": self.model, "prompt": PROMPT_VERSION}
        if kind == "embedding":
            return {**identity, "model": self.embedding_model}
        if kind == "response":
            return {**identity, "model": self.model}
        raise InvalidInput(f"unknown result kind {kind!r}; use analysis, embedding or response")

    def close(self) -> None:
        """Close the connection pool if this provider created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> OpenAIProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The AIProvider protocol

    def analyze(
        self,
        code: str,
        language: str,
        rules: Sequence[str] | None = None,
        model: str | None = None,
    ) -> AnalysisResult:
        """Ask the model for JSON findings; raise :class:`ProviderError` if it answers otherwise."""
        check_code(code, language)
        language = normalize_language(language)
        if rules is not None and (isinstance(rules, str) or not rules):
            raise InvalidInput(
                f"rules must be a non-empty list such as ['security'], got {rules!r}"
            )
        system = _analysis_system_prompt(rules)
        # Numbered lines: models count lines badly, and wrong line numbers make findings useless.
        numbered = "\n".join(f"{n:>5} | {line}" for n, line in enumerate(code.splitlines(), 1))
        body = self._post(
            "/chat/completions",
            {
                "model": model or self.model,
                **_ANALYSIS_REQUEST,
                "messages": [
                    {"role": "system", "content": system},
                    {
                        "role": "user",
                        "content": _USER_PROMPT.format(language=language, numbered=numbered),
                    },
                ],
            },
        )
        content, _ = _first_choice(body)
        return AnalysisResult(
            findings=sort_findings(_parse_findings(content)),
            language=language,
            model=str(body.get("model") or model or self.model),
            usage=_usage(body),
        )

    def embed(self, texts: Sequence[str], model: str | None = None) -> EmbeddingResult:
        """Embed all ``texts`` in one request; vectors are returned in input order."""
        batch = check_texts(texts)
        body = self._post("/embeddings", {"model": model or self.embedding_model, "input": batch})
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(batch):
            raise ProviderError(
                f"/embeddings returned {len(data) if isinstance(data, list) else 'no'} "
                f"embeddings for {len(batch)} inputs"
            )
        try:
            # Servers may return items out of order; "index" is what ties each to its input.
            ordered = sorted(data, key=lambda item: int(item["index"]))
            if [int(item["index"]) for item in ordered] != list(range(len(batch))):
                raise ValueError("indices are not 0..n-1")
            vectors = [[float(value) for value in item["embedding"]] for item in ordered]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"/embeddings returned a malformed embedding list: {exc}") from None
        return EmbeddingResult(
            vectors=vectors,
            model=str(body.get("model") or model or self.embedding_model),
            usage=_usage(body),
        )

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        **params: Any,
    ) -> Completion:
        """Send the conversation; ``params`` (temperature, max_tokens, ...) go into the request."""
        history = check_messages(messages)
        if params.get("stream"):
            raise InvalidInput("stream=True is not supported; complete() returns whole answers")
        body = self._post(
            "/chat/completions",
            {**params, "model": model or self.model, "messages": [dict(m) for m in history]},
        )
        text, finish_reason = _first_choice(body)
        return Completion(
            text=text,
            model=str(body.get("model") or model or self.model),
            usage=_usage(body),
            finish_reason=finish_reason,
        )

    # HTTP with retries

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.admission is None:
            return self._send(path, payload)
        ticket = self.admission.admit(payload)
        try:
            body = self._send(path, payload)
        except _RateLimited as limited:
            raise self.admission.rate_limited(ticket, limited.retry_after) from None
        except BaseException:
            ticket.release()
            raise
        ticket.settle(_usage(body))
        return body

    def _send(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; under admission control a rate limit raises :class:`_RateLimited`."""
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self._api_key}"}
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            wait: float | None = None
            try:
                response = self._client.post(
                    url, json=payload, headers=headers, timeout=self.timeout
                )
            except httpx.TransportError as exc:  # refused/reset connections, timeouts
                reason = self._redact(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 400:
                    return self._json(response, path)
                reason = f"HTTP {response.status_code}: {self._api_error(response)}"
                if response.status_code not in RETRYABLE_STATUSES:
                    raise ProviderError(f"POST {path} failed with {reason}")
                wait = parse_retry_after(response.headers, cap=self.retry_after_max)
                limited = response.status_code == 429 or (
                    response.status_code == 503 and wait is not None
                )
                if limited and self.admission is not None:
                    raise _RateLimited(wait)
            if attempt + 1 == attempts:
                break
            delay = (
                wait
                if wait is not None
                else backoff_with_jitter(attempt, self.backoff_base, self.backoff_max)
            )
            log.warning(
                "POST %s failed (%s); retry %d of %d in %.2fs",
                path,
                reason,
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        raise ProviderError(f"POST {path} failed after {attempts} attempt(s): {reason}")

    def _json(self, response: httpx.Response, path: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(
                f"POST {path} returned HTTP {response.status_code} with a non-JSON body: "
                f"{self._redact(response.text[:200])!r}"
            ) from None
        if not isinstance(body, dict):
            raise ProviderError(f"POST {path} returned a JSON {type(body).__name__}, not an object")
        return body

    def _api_error(self, response: httpx.Response) -> str:
        """The API's own error message (OpenAI: ``{"error": {"message": ...}}``), redacted."""
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            error = error.get("message")
        message = str(error) if error else response.text or response.reason_phrase
        return self._redact(message[:500])

    def _redact(self, text: str) -> str:
        # Some APIs echo the key they rejected; it must not reach logs or exception messages.
        return text.replace(self._api_key, _REDACTED)


class _RateLimited(Exception):
    """The provider answered 429 (or 503 with Retry-After) to a call under admission control."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"rate limited; Retry-After {retry_after}")
        self.retry_after = retry_after


def _first_choice(body: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(content, finish_reason)`` of the first choice of a chat completion."""
    try:
        choice = body["choices"][0]
        content = choice["message"].get("content") or ""
        finish_reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError("/chat/completions returned no choices[0].message") from None
    if not isinstance(content, str):
        raise ProviderError(f"choices[0].message.content is a {type(content).__name__}, not text")
    return content, finish_reason if isinstance(finish_reason, str) else None


def _usage(body: Mapping[str, Any]) -> Usage:
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return Usage()
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    total = _count(usage.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _parse_findings(content: str) -> list[Finding]:
    """Findings from the model's JSON answer; any deviation from the shape is a ProviderError."""
    text = content.strip()
    # Some models wrap JSON in a Markdown fence even in JSON mode.
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except ValueError:
        raise ProviderError(f"the model did not answer with JSON: {content[:200]!r}") from None
    items = data.get("findings") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProviderError(f'the model\'s JSON has no "findings" list: {content[:200]!r}')
    return [_finding(item, index) for index, item in enumerate(items)]


def _finding(item: object, index: int) -> Finding:
    if not isinstance(item, dict):
        raise ProviderError(f"findings[{index}] is a {type(item).__name__}, not an object")
    line, rule, message = item.get("line"), item.get("rule"), item.get("message")
    if isinstance(line, str) and line.strip().isdigit():
        line = int(line)
    if not isinstance(line, int) or isinstance(line, bool) or line < 0:
        raise ProviderError(f"findings[{index}].line is {line!r}, not a line number")
    if not isinstance(rule, str) or not rule.strip() or not isinstance(message, str):
        raise ProviderError(f"findings[{index}] needs a str rule and message, got {item!r}")
    return Finding(
        line=line,
        rule=rule.strip(),
        severity=_severity(item.get("severity")),
        message=message.strip(),
        column=_count(item.get("column")),
    )


def _severity(value: object) -> str:
    """Map whatever the model wrote to one of SEVERITIES; unknown values become "medium"."""
    name = str(value).strip().lower()
    if name in SEVERITIES:
        return name
    return _SEVERITY_ALIASES.get(name, "medium")
