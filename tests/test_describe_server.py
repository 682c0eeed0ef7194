"""A fake OpenAI-compatible chat-completions server for the ``describe`` tests, with faults.

Other ``test_describe_*`` modules import :class:`FakeChatServer` from here; the tests below only
check that the fake itself speaks the protocol.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

FAULTS = ("ok", "429", "500", "hang", "badjson", "401", "404", "short", "drip", "drip-all")
FAULTS += ("wait",)


class FakeChatServer:
    """Answers ``POST /v1/chat/completions`` on 127.0.0.1 (port 0), logging every request.

    Faults come from ``faults`` (consumed one per request) or ``rule(index, payload)``; ``hang``
    sleeps ``hang_seconds`` before answering. ``max_choices`` caps the choices returned (servers
    that ignore ``n``); ``short_first`` makes that many choices of each prompt's first answer too
    short; ``single_choice_only`` refuses ``n > 1`` with HTTP 400 (llama.cpp); ``block_after``
    holds every request from that index on until ``release()``. ``drip`` sends a good answer one
    byte every ``drip_seconds`` (``drip-all``: its status line and headers too); ``wait`` is a 429
    asking to wait ``retry_after`` seconds.
    """

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.rule: Callable[[int, dict[str, Any]], str | None] | None = None
        self.log: list[dict[str, Any]] = []
        self.hang_seconds = 1.0
        self.drip_seconds = 0.1
        self.retry_after = "3600"
        self.max_choices: int | None = None
        self.short_first = 0
        self.ignore_stop = False
        self.single_choice_only = False  # llama.cpp: HTTP 400 unless n == 1
        self.block_after: int | None = None
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self._seen_prompts: set[str] = set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> FakeChatServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def release(self) -> None:
        self.gate.set()

    def prompts(self) -> list[str]:
        """The user prompt of every logged request, in order."""
        with self.lock:
            return [entry["payload"]["messages"][-1]["content"] for entry in self.log]

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.log) >= count:
                    return
            time.sleep(0.02)
        raise AssertionError(f"server saw {len(self.log)} requests, expected {count}")

    def next_action(self, payload: dict[str, Any], headers: dict[str, str]) -> tuple[str, bool]:
        """Log the request; return its fault and whether it is the first for its prompt."""
        with self.lock:
            index = len(self.log)
            self.log.append({"payload": payload, "headers": headers})
            action = self.faults.pop(0) if self.faults else None
            if action is None and self.rule is not None:
                action = self.rule(index, payload)
            prompt = payload["messages"][-1]["content"]
            first = prompt not in self._seen_prompts
            if (action or "ok") == "ok":
                self._seen_prompts.add(prompt)
        if self.block_after is not None and index >= self.block_after:
            self.gate.wait(timeout=60)
        return action or "ok", first

    def answer(self, payload: dict[str, Any], first: bool, short: bool) -> dict[str, Any]:
        prompt = payload["messages"][-1]["content"]
        n = int(payload.get("n", 1))
        if self.max_choices is not None:
            n = min(n, self.max_choices)
        texts = []
        for i in range(n):
            if short or (first and i < self.short_first):
                texts.append("  tiny ")
            else:
                text = f"Answer {i} to the question {prompt} in some detail"
                texts.append(text + (". And a second sentence" if self.ignore_stop else ""))
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 10 * n}
        return {"id": "fake", "object": "chat.completion", "choices": choices, "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out, kill)
            pass

    def _drip(self, body: bytes, seconds: float, headers_too: bool = False) -> None:
        """Headers at once (or ``headers_too``: dripped as well), then the body one byte at a
        time (a server that never quite stops)."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if headers_too:  # what end_headers would send, one byte at a time
                body = b"".join(self._headers_buffer) + b"\r\n" + body
                self._headers_buffer = []
            else:
                self.end_headers()
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(seconds)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"error": {"message": message}}).encode(), headers)

    def do_POST(self) -> None:  # noqa: N802
        fake: FakeChatServer = self.server.fake  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        payload = json.loads(body)
        action, first = fake.next_action(payload, dict(self.headers))
        if action == "429":
            self._error(429, "Rate limit reached", {"Retry-After": "0"})
        elif action == "wait":
            self._error(429, "Rate limit reached", {"Retry-After": fake.retry_after})
        elif action in ("drip", "drip-all"):
            answer = fake.answer(payload, first, short=False)
            self._drip(json.dumps(answer).encode(), fake.drip_seconds, action == "drip-all")
        elif action == "500":
            self._error(500, "The server had an error")
        elif action == "401":
            self._error(401, "Incorrect API key provided")
        elif action == "404":
            self._error(404, "The model does not exist")
        elif fake.single_choice_only and payload.get("n", 1) != 1:
            self._error(400, "Only one completion choice is allowed")
        elif action == "badjson":
            self._send(200, b'{"choices": [ {"message": ')
        else:
            if action == "hang":
                time.sleep(fake.hang_seconds)
            answer = fake.answer(payload, first, short=action == "short")
            self._send(200, json.dumps(answer).encode())


def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatServer]:
    """Body of the ``chat_server`` fixtures: a started server, closed afterwards."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = FakeChatServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def chat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatServer]:
    yield from serve(monkeypatch)


def _post(url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_fake_server_speaks_chat_completions(chat_server: FakeChatServer) -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "Describe x"}], "n": 3}
    status, body = _post(f"{chat_server.base_url}/chat/completions", payload)
    assert status == 200
    data = json.loads(body)
    assert len(data["choices"]) == 3
    assert "Describe x" in data["choices"][0]["message"]["content"]
    assert data["usage"]["completion_tokens"] == 30


def test_fake_server_faults_are_consumed_in_order(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["429", "401"]
    payload = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    url = f"{chat_server.base_url}/chat/completions"
    assert [_post(url, payload)[0] for _ in range(3)] == [429, 401, 200]
    assert len(chat_server.log) == 3


def test_fake_server_drips_and_asks_to_wait(chat_server: FakeChatServer) -> None:
    chat_server.faults = ["drip", "drip-all", "wait"]
    chat_server.drip_seconds = 0.001
    payload = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    url = f"{chat_server.base_url}/chat/completions"
    for _ in range(2):  # body dripped, then status line and headers too
        status, body = _post(url, payload)
        assert status == 200 and json.loads(body)["choices"]
    request = urllib.request.Request(url, data=json.dumps(payload).encode())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 429 and err.value.headers["Retry-After"] == "3600"
