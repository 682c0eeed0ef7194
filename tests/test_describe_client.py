"""The chat-completions client against a real HTTP server on 127.0.0.1, with injected faults."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from test_describe_server import FakeChatServer, serve

from reprogram.describe.client import (
    DEFAULT_BASE_URL,
    AuthenticationError,
    ChatClient,
    EndpointError,
    backoff_delay,
    parse_completion,
)
from reprogram.errors import ReprogramError


@pytest.fixture()
def chat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatServer]:
    yield from serve(monkeypatch)


def make_client(server: FakeChatServer, sleeps: list[float] | None = None, **kw) -> ChatClient:
    options = {"timeout": 2.0, "max_retries": 3, "backoff": 0.001, "max_backoff": 0.01}
    options.update(kw)
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    return ChatClient("fake-model", server.base_url, "sk-test", sleep=record, **options)


def test_request_shape_answers_and_usage(chat_server: FakeChatServer) -> None:
    client = make_client(chat_server)
    completion = client.complete("Describe it", n=3, system="You are a helpful assistant.")
    assert len(completion.texts) == 3
    entry = chat_server.log[0]
    payload = entry["payload"]
    assert payload["model"] == "fake-model"
    assert payload["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Describe it"},
    ]
    assert (payload["n"], payload["temperature"], payload["max_tokens"], payload["stop"]) == (
        3, 0.99, 50, ["."],
    )
    assert entry["headers"]["Authorization"] == "Bearer sk-test"
    assert (client.usage.requests, client.usage.retries) == (1, 0)
    assert (client.usage.prompt_tokens, client.usage.completion_tokens) == (2, 30)
    assert "sk-test" not in repr(client)


def test_base_url_and_key_from_environment(
    chat_server: FakeChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", chat_server.base_url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    client = ChatClient("m")
    assert client.base_url == chat_server.base_url
    client.complete("x")
    assert chat_server.log[0]["headers"]["Authorization"] == "Bearer sk-env"


def test_local_server_needs_no_key(
    chat_server: FakeChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ChatClient("m", chat_server.base_url).complete("x")
    assert "Authorization" not in chat_server.log[0]["headers"]


def test_hosted_default_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ReprogramError, match="OPENAI_API_KEY.*--template"):
        ChatClient("m")
    assert ChatClient("m", api_key="k").base_url == DEFAULT_BASE_URL


def test_429_then_success_honours_retry_after(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["429"]
    sleeps: list[float] = []
    client = make_client(chat_server, sleeps)
    assert len(client.complete("x", n=2).texts) == 2
    assert (client.usage.requests, client.usage.retries) == (2, 1)
    assert sleeps == [0.0]  # the server's Retry-After: 0


def test_500_is_retried_then_succeeds(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["500", "500"]
    client = make_client(chat_server)
    assert client.complete("x").texts
    assert client.usage.requests == 3


def test_500_gives_up_after_max_retries(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["500"] * 10
    sleeps: list[float] = []
    client = make_client(chat_server, sleeps, max_retries=2)
    with pytest.raises(EndpointError, match="3 attempts.*HTTP 500"):
        client.complete("x")
    assert len(chat_server.log) == 3
    assert len(sleeps) == 2 and all(0 < s <= 0.01 for s in sleeps)


def test_hang_past_timeout_is_retried(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["hang"]
    chat_server.hang_seconds = 1.5
    client = make_client(chat_server, timeout=0.2)
    start = time.monotonic()
    assert client.complete("x").texts
    assert time.monotonic() - start < 1.4  # did not wait for the hanging answer
    assert (client.usage.requests, client.usage.retries) == (2, 1)


def test_hang_every_time_gives_up_with_timeout_message(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["hang", "hang"]
    chat_server.hang_seconds = 0.6
    client = make_client(chat_server, timeout=0.15, max_retries=1)
    with pytest.raises(EndpointError, match="no answer within 0.15 s"):
        client.complete("x")


def test_malformed_json_is_retried(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["badjson"]
    client = make_client(chat_server)
    assert client.complete("x").texts
    assert client.usage.requests == 2


def test_malformed_json_every_time_is_an_error(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["badjson"] * 3
    with pytest.raises(EndpointError, match="malformed"):
        make_client(chat_server, max_retries=2).complete("x")


def test_401_stops_at_once_with_clear_message(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["401"]
    client = make_client(chat_server)
    with pytest.raises(AuthenticationError) as info:
        client.complete("x")
    assert isinstance(info.value, ReprogramError)
    message = str(info.value)
    assert "HTTP 401" in message and "Incorrect API key" in message and "OPENAI_API_KEY" in message
    assert len(chat_server.log) == 1 and client.usage.retries == 0


def test_404_is_not_retried_and_hints_at_v1(chat_server: FakeChatServer) -> None:
    client = ChatClient("m", chat_server.base_url.removesuffix("/v1"), "k", max_retries=3)
    with pytest.raises(EndpointError, match="/v1"):
        client.complete("x")
    assert client.usage.requests == 1


def test_connection_refused_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ChatClient(
        "m", f"http://127.0.0.1:{port}/v1", "k", max_retries=1, sleep=lambda _s: None
    )
    with pytest.raises(EndpointError, match="cannot reach"):
        client.complete("x")
    assert client.usage.requests == 2


def test_backoff_is_exponential_capped_and_uses_retry_after() -> None:
    assert 0.5 <= backoff_delay(0, 1.0, 60.0) <= 1.0
    assert 4.0 <= backoff_delay(3, 1.0, 60.0) <= 8.0
    assert backoff_delay(10, 1.0, 5.0) <= 5.0
    assert backoff_delay(0, 1.0, 60.0, retry_after=7.0) == 7.0
    assert backoff_delay(0, 1.0, 60.0, retry_after=600.0) == 60.0


def test_parse_completion_accepts_text_choices_and_rejects_garbage() -> None:
    completion = parse_completion({"choices": [{"text": "a"}, {"message": {"content": None}}]})
    assert completion.texts == ["a", ""] and completion.prompt_tokens == 0
    for bad in ({}, {"choices": "x"}, {"choices": [1]}, [1]):
        with pytest.raises(ValueError):
            parse_completion(bad)
