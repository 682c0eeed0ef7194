"""The chat-completions client against a real HTTP server on 127.0.0.1, with injected faults."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from test_describe_server import FakeChatServer, serve

from reprogram.errors import ReprogramError
from reprogram.text.describe.client import (
    DEFAULT_BASE_URL,
    AuthenticationError,
    ChatClient,
    EndpointError,
    backoff_delay,
    parse_completion,
)


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


def test_connection_refused_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ChatClient(
        "m", f"http://127.0.0.1:{port}/v1", "k", max_retries=1, sleep=lambda _s: None
    )
    with pytest.raises(EndpointError, match="connection refused"):
        client.complete("x")
    assert client.usage.requests == 1  # nothing listens there: no retry


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


def test_dripping_answer_stops_at_the_deadline(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["drip"]
    chat_server.drip_seconds = 0.05  # a few hundred bytes: ~15 s without a deadline
    client = make_client(chat_server, timeout=2.0, deadline=0.4, max_retries=0)
    start = time.monotonic()
    with pytest.raises(EndpointError, match="0.4 s deadline"):
        client.complete("x")
    assert time.monotonic() - start < 2.0


def test_dripping_answer_is_retried_after_the_deadline(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["drip"]
    chat_server.drip_seconds = 0.05
    client = make_client(chat_server, deadline=0.3)
    assert client.complete("x").texts
    assert (client.usage.requests, client.usage.retries) == (2, 1)


def test_retry_after_beyond_the_cap_stops_at_once(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["wait"]
    sleeps: list[float] = []
    client = make_client(chat_server, sleeps, max_backoff=5.0)
    with pytest.raises(EndpointError, match="3600 s.*Retry-After.*5 s cap.*nothing was lost"):
        client.complete("x")
    assert client.usage.requests == 1 and sleeps == []


def test_one_line_per_retry_and_giving_up_says_nothing_was_lost(
    chat_server: FakeChatServer,
) -> None:
    chat_server.faults = ["500"] * 5
    lines: list[str] = []
    client = make_client(chat_server, max_retries=2, on_retry=lines.append)
    with pytest.raises(EndpointError, match="3 attempts.*nothing was lost; rerun later"):
        client.complete("x")
    assert len(lines) == 2
    assert lines[0].startswith("retry 1/2") and "HTTP 500" in lines[0]


def test_refused_after_an_answer_is_retried(chat_server: FakeChatServer) -> None:
    client = make_client(chat_server, max_retries=1)
    assert client.complete("x").texts
    chat_server.close()  # the server went away after answering: maybe a restart
    with pytest.raises(EndpointError, match="2 attempts"):
        client.complete("x")
    assert client.usage.requests == 3


def test_deadline_must_be_positive(chat_server: FakeChatServer) -> None:
    with pytest.raises(ReprogramError, match="deadline"):
        make_client(chat_server, deadline=0)


def test_all_answers_too_short_says_why_nothing_was_kept(
    chat_server: FakeChatServer, tmp_path
) -> None:
    from reprogram.text.describe.generate import Sampling, generate_descriptions

    chat_server.rule = lambda _index, _payload: "short"
    result = generate_descriptions(
        ["red disc"], "shape", ["colour"], tmp_path, client=make_client(chat_server),
        key="toy", samples=2, sampling=Sampling(max_failed_requests=2),
    )  # fmt: skip
    assert not result.ok and result.incomplete == {"toy_cse_1.json": {"red disc": 0}}
    [warning] = result.warnings
    assert "shorter than 20 characters" in warning and "--max-tokens" in warning


def test_dead_endpoint_leaves_nothing_behind(tmp_path, monkeypatch, capsys) -> None:
    from helpers import cli

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    classes = tmp_path / "classes.txt"
    classes.write_text("red disc\ngreen square\n")
    out = tmp_path / "new" / "descriptions"
    args = ["describe", "--classes", str(classes), "--task", "shape", "--causes", "colour"]
    args += ["--out", str(out), "--base-url", f"http://127.0.0.1:{port}/v1", "--no-progress"]
    start = time.monotonic()
    assert cli(*args) == 2
    assert time.monotonic() - start < 5
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "connection refused" in line
    assert list(tmp_path.iterdir()) == [classes]


@pytest.mark.parametrize("fault", ["drip-all", "drip"])
def test_the_deadline_bounds_the_whole_request_however_the_server_drips(
    chat_server: FakeChatServer, fault: str
) -> None:
    """Status line, headers and body dripped (or only the body, slower than the timeout's
    check would notice): the request ends at its deadline, not when the server stops."""
    chat_server.faults = [fault]
    chat_server.drip_seconds = 0.3  # the whole answer: minutes
    client = make_client(chat_server, timeout=5.0, deadline=0.5, max_retries=0)
    start = time.monotonic()
    with pytest.raises(EndpointError, match="0.5 s deadline"):
        client.complete("x")
    assert time.monotonic() - start < 0.5 + 0.25
