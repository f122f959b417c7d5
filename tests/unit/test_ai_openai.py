from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from sluice.ai import AIProvider, OpenAIProvider, get_provider
from sluice.errors import ConfigurationError, InvalidInput, ProviderError
from sluice.settings import load_settings
from tests.fake_openai import KEY, FakeOpenAI, Reply, running_fake_openai


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as fake:
        yield fake


def make_provider(url: str, api_key: str = KEY, **options: Any) -> OpenAIProvider:
    defaults: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.01}
    return OpenAIProvider(
        base_url=url,
        api_key=api_key,
        model="gpt-test",
        embedding_model="embed-test",
        **{**defaults, **options},
    )


@pytest.fixture
def provider(server: FakeOpenAI) -> Iterator[OpenAIProvider]:
    with make_provider(server.url) as client:
        yield client


def assert_key_hidden(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    rendered = "".join(traceback.format_exception(exc))
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert KEY not in rendered
    assert KEY not in caplog.text
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_analyze_sends_json_mode_request_and_parses_findings(
    server: FakeOpenAI, provider: OpenAIProvider
) -> None:
    result = provider.analyze("import os\n\nresult = eval(x)\n", "py", rules=["security"])
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "gpt-test"
    assert request.body["temperature"] == 0
    assert request.body["response_format"] == {"type": "json_object"}
    system, user = request.body["messages"]
    assert "JSON" in system["content"] and "security" in system["content"]
    assert "    3 | result = eval(x)" in user["content"]
    assert [(f.line, f.rule, f.severity) for f in result.findings] == [
        (2, "quality.naming", "medium"),
        (3, "style.x", "medium"),
        (7, "security.eval", "high"),
    ]
    assert result.language == "python"
    assert result.model == "gpt-test-0613"
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (11, 16)


@pytest.mark.parametrize(
    "content",
    [
        "Sure! Here are the findings: none",
        '{"issues": []}',
        '{"findings": [{"line": "seven", "rule": "x", "message": "m"}]}',
        '{"findings": [{"line": 1, "message": "no rule"}]}',
        '["not", "an", "object"]',
    ],
)
def test_analyze_rejects_answers_that_are_not_the_json_shape(
    server: FakeOpenAI, provider: OpenAIProvider, content: str
) -> None:
    server.chat_content = content
    with pytest.raises(ProviderError):
        provider.analyze("x = 1", "python")


def test_analyze_accepts_fenced_json(server: FakeOpenAI, provider: OpenAIProvider) -> None:
    server.chat_content = '```json\n{"findings": []}\n```'
    assert provider.analyze("x = 1", "python").findings == ()


def test_embed_sends_one_batch_and_orders_by_index(
    server: FakeOpenAI, provider: OpenAIProvider
) -> None:
    result = provider.embed(["a", "bbb", "cc"])
    assert len(server.requests) == 1
    assert server.requests[0].path == "/v1/embeddings"
    assert server.requests[0].body == {"model": "embed-test", "input": ["a", "bbb", "cc"]}
    assert result.vectors == [[1.0, 0.0], [3.0, 1.0], [2.0, 2.0]]
    assert result.model == "embed-test"
    assert result.usage.prompt_tokens == 11


def test_embed_rejects_a_short_batch(server: FakeOpenAI, provider: OpenAIProvider) -> None:
    server.script = [Reply(body={"data": [{"index": 0, "embedding": [1.0]}]})]
    with pytest.raises(ProviderError, match="1 embeddings for 2 inputs"):
        provider.embed(["a", "b"])


def test_complete_passes_params_and_returns_text(
    server: FakeOpenAI, provider: OpenAIProvider
) -> None:
    server.chat_content = "Hello!"
    completion = provider.complete(
        [{"role": "user", "content": "hi"}], model="gpt-other", temperature=0.2, max_tokens=9
    )
    body = server.requests[0].body
    assert body["model"] == "gpt-other"
    assert (body["temperature"], body["max_tokens"]) == (0.2, 9)
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (completion.text, completion.finish_reason) == ("Hello!", "stop")
    assert completion.usage.completion_tokens == 5


def test_retries_429_and_500_then_succeeds_honouring_retry_after(
    server: FakeOpenAI, provider: OpenAIProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluice.ai.openai")
    server.script = [
        Reply(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "1"}),
        Reply(500, {"error": {"message": "boom"}}),
    ]
    completion = provider.complete([{"role": "user", "content": "hi"}])
    assert completion.text
    assert len(server.requests) == 3
    gap = server.requests[1].at - server.requests[0].at
    assert gap >= 1.0 - 0.05
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "HTTP 429" in warnings[0] and "Rate limit reached" in warnings[0]
    assert "HTTP 500" in warnings[1]


def test_retry_after_is_capped(server: FakeOpenAI) -> None:
    server.script = [Reply(503, {}, {"Retry-After": "3600"})]
    with make_provider(server.url, retry_after_max=0.2) as client:
        started = time.monotonic()
        client.embed(["x"])
    assert time.monotonic() - started < 5
    assert len(server.requests) == 2


def test_gives_up_after_max_retries(server: FakeOpenAI) -> None:
    server.script = [Reply(502, {"error": {"message": "bad gateway"}}) for _ in range(5)]
    with make_provider(server.url, max_retries=2) as client, pytest.raises(ProviderError) as info:
        client.embed(["x"])
    assert len(server.requests) == 3
    assert "after 3 attempt(s)" in str(info.value)
    assert "HTTP 502: bad gateway" in str(info.value)


def test_client_errors_fail_at_once(server: FakeOpenAI, provider: OpenAIProvider) -> None:
    server.script = [Reply(400, {"error": {"message": "model 'gpt-test' does not exist"}})]
    with pytest.raises(ProviderError, match=r"HTTP 400: model 'gpt-test' does not exist"):
        provider.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


def test_timeouts_are_retried(server: FakeOpenAI) -> None:
    server.script = [Reply(delay=1.0)]
    with make_provider(server.url, timeout=0.2) as client:
        assert client.embed(["abc"]).vectors == [[3.0, 0.0]]
    assert len(server.requests) == 2


def test_non_json_success_body_is_a_provider_error(
    server: FakeOpenAI, provider: OpenAIProvider
) -> None:
    server.script = [Reply(200, b"<html>gateway</html>")]
    with pytest.raises(ProviderError, match="non-JSON"):
        provider.embed(["x"])


def test_wrong_key_fails_fast_and_is_never_revealed(
    server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = KEY.replace("SECRET", "WRONG!")
    with make_provider(server.url, api_key=wrong) as client, pytest.raises(ProviderError) as info:
        client.analyze("x = 1", "python")
    assert len(server.requests) == 1
    assert "HTTP 401" in str(info.value)
    assert "Incorrect API key provided: [redacted]" in str(info.value)
    assert wrong not in "".join(traceback.format_exception(info.value))
    assert wrong not in caplog.text
    assert wrong not in repr(client)


def test_key_is_not_in_errors_or_logs_after_retries(
    server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script = [Reply(500, {"error": {"message": f"upstream saw {KEY}"}}) for _ in range(3)]
    with make_provider(server.url, max_retries=2) as client, pytest.raises(ProviderError) as info:
        client.complete([{"role": "user", "content": "hi"}])
    assert "[redacted]" in str(info.value)
    assert len(caplog.records) >= 2
    assert_key_hidden(info.value, caplog)
    assert KEY not in repr(client)


def test_connection_errors_are_retried_then_reported_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_provider(f"http://127.0.0.1:{port}/v1", max_retries=2)
    with client, pytest.raises(ProviderError, match="ConnectError") as info:
        client.embed(["x"])
    retries = [r for r in caplog.records if r.name == "sluice.ai.openai"]
    assert len(retries) == 2
    assert_key_hidden(info.value, caplog)


def test_inputs_are_validated_before_any_request(
    server: FakeOpenAI, provider: OpenAIProvider
) -> None:
    with pytest.raises(InvalidInput):
        provider.embed([])
    with pytest.raises(InvalidInput):
        provider.analyze("x", "")
    with pytest.raises(InvalidInput):
        provider.complete([{"role": "wizard", "content": "hi"}])
    with pytest.raises(InvalidInput, match="stream"):
        provider.complete([{"role": "user", "content": "hi"}], stream=True)
    assert server.requests == []


def test_get_provider_builds_openai_from_settings(tmp_path: Any, server: FakeOpenAI) -> None:
    settings = load_settings(
        {
            "SLUICE_DATA_DIR": str(tmp_path),
            "SLUICE_AI_PROVIDER": "openai",
            "SLUICE_AI_BASE_URL": server.url,
            "OPENAI_API_KEY": KEY,
        }
    )
    provider = get_provider(settings)
    assert isinstance(provider, OpenAIProvider)
    assert isinstance(provider, AIProvider)
    assert KEY not in repr(provider)
    assert provider.complete([{"role": "user", "content": "hi"}]).model == "gpt-4o-mini-0613"
    provider.close()


def test_get_provider_needs_a_key_for_openai(tmp_path: Any) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path), "SLUICE_AI_PROVIDER": "openai"})
    with pytest.raises(ConfigurationError) as info:
        get_provider(settings)
    assert (
        str(info.value) == "SLUICE_AI_PROVIDER=openai needs SLUICE_AI_API_KEY (or OPENAI_API_KEY)"
    )
