"""A small OpenAI-compatible chat-completions client: retries, back-off, time-outs, usage counters.

Only the standard library is used, so it works against hosted APIs and local servers (vLLM,
Ollama, llama.cpp) alike. Base URL and key default to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``,
as the ``openai`` package reads them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reprogram.errors import ReprogramError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"  # the model the DVP paper used for its cause descriptions
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
DEFAULT_DEADLINE = 180.0  # seconds for a whole request, however slowly the answer trickles in
RERUN_HINT = "nothing was lost; rerun later to continue where this stopped"


class EndpointError(ReprogramError):
    """The endpoint failed in a way that retrying will not fix, or retries ran out."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the failure was one


class AuthenticationError(EndpointError):
    """The endpoint rejected the API key (HTTP 401/403): stop at once, retrying cannot help."""


class _Transient(Exception):
    """A failure worth retrying (rate limit, server error, time-out, garbled answer)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Usage:
    """Counters over a client's lifetime: HTTP requests sent, retries, tokens billed."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def summary(self) -> str:
        return (
            f"{self.requests} requests ({self.retries} retried), {self.total_tokens:,} tokens "
            f"({self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion)"
        )


@dataclass(frozen=True)
class Completion:
    """The answers of one successful request (one text per returned choice) and its token usage."""

    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0


def resolve_base_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$OPENAI_BASE_URL``, else the OpenAI API; without a trailing slash."""
    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


def resolve_api_key(api_key: str | None = None) -> str | None:
    """``api_key``, else ``$OPENAI_API_KEY``; ``None`` if unset (fine for local servers)."""
    return api_key or os.environ.get("OPENAI_API_KEY") or None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After, else
    exponential back-off with jitter; never more than ``cap``."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


def _parse_retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own back-off
        return None


def _error_message(body: bytes) -> str:
    """The server's own error text, from ``{"error": {"message": ...}}`` or the raw body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or err
        return str(err)[:300]
    return text[:300]


class _Deadline:
    """Shuts the sockets of one request at its deadline, so that no wait (for the status line,
    the headers or the body, however slowly a server drips them) outlives it."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's opener whose HTTP(S) connections this deadline watches."""
        deadline = self

        def watched(kind: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
            class Watched(kind):  # type: ignore[valid-type, misc]
                def connect(self) -> None:
                    super().connect()
                    deadline.watch(self.sock)

            return Watched

        class HTTP(urllib.request.HTTPHandler):
            def do_open(self, http_class, req, **kw):  # type: ignore[no-untyped-def]
                return super().do_open(watched(http_class), req, **kw)

        class HTTPS(urllib.request.HTTPSHandler):
            def do_open(self, http_class, req, **kw):  # type: ignore[no-untyped-def]
                return super().do_open(watched(http_class), req, **kw)

        return urllib.request.build_opener(HTTP, HTTPS)


def parse_completion(data: Any) -> Completion:
    """Read choices and usage from a chat-completions answer; raise ``ValueError`` if malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise ValueError("no 'choices' list in the answer")
    texts = []
    for choice in data["choices"]:
        if not isinstance(choice, dict):
            raise ValueError("a choice is not an object")
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else choice.get("text")
        texts.append(content if isinstance(content, str) else "")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        texts,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


class ChatClient:
    """Calls ``POST {base_url}/chat/completions``, retrying what is worth retrying.

    Retried, with exponential back-off (or the server's ``Retry-After``): HTTP 429, 408/409 and 5xx,
    time-outs, dropped connections and malformed answers, up to ``max_retries`` times. A 401/403
    raises :class:`AuthenticationError` at once; any other 4xx raises :class:`EndpointError`.
    Also at once: a ``Retry-After`` longer than ``max_backoff``, and a refused connection before
    the server ever answered (nothing listens there). ``timeout`` bounds each wait for data,
    ``deadline`` each whole request (connection, status line, headers and body: at the deadline
    the connection is shut, however slowly the server drips). ``on_retry`` gets one line per retry.
    ``usage`` counts requests, retries and tokens, and is safe to share between threads.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        deadline: float = DEFAULT_DEADLINE,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
            raise ReprogramError(
                f"no API key for {DEFAULT_BASE_URL}: set OPENAI_API_KEY or pass --api-key; for a "
                "local server pass --base-url (or set OPENAI_BASE_URL); without any LLM use "
                "--template (weaker)"
            )
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        if not deadline > 0:
            raise ReprogramError(f"the request deadline must be positive, got {deadline}")
        self.deadline = deadline
        self.sleep = sleep
        self.on_retry = on_retry
        self.usage = Usage()
        self._lock = threading.Lock()
        self._answered = False  # the server has sent at least one HTTP answer

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient(model={self.model!r}, base_url={self.base_url!r})"

    def complete(
        self,
        prompt: str,
        *,
        n: int = 1,
        temperature: float = 0.99,
        max_tokens: int = 50,
        stop: Sequence[str] = (".",),
        system: str | None = None,
    ) -> Completion:
        """Ask for ``n`` answers to ``prompt`` (servers may return fewer; callers must cope)."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": n,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if stop:
            payload["stop"] = list(stop)
        return self._post(json.dumps(payload).encode("utf-8"))

    def _post(self, body: bytes) -> Completion:
        for attempt in range(self.max_retries + 1):
            try:
                completion = self._attempt(body)
            except _Transient as err:
                if attempt == self.max_retries:
                    raise EndpointError(
                        f"{self.url}: giving up after {attempt + 1} attempts: {err}; {RERUN_HINT}"
                    ) from None
                if err.retry_after is not None and err.retry_after > self.max_backoff:
                    raise EndpointError(
                        f"{self.url}: {err}; the server asks to wait {err.retry_after:g} s "
                        f"(Retry-After), more than the {self.max_backoff:g} s cap: {RERUN_HINT}"
                    ) from None
                delay = backoff_delay(attempt, self.backoff, self.max_backoff, err.retry_after)
                with self._lock:
                    self.usage.retries += 1
                if self.on_retry is not None:
                    self.on_retry(f"retry {attempt + 1}/{self.max_retries} in {delay:.1f} s: {err}")
                self.sleep(delay)
                continue
            with self._lock:
                self.usage.prompt_tokens += completion.prompt_tokens
                self.usage.completion_tokens += completion.completion_tokens
            return completion
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, body: bytes) -> Completion:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.usage.requests += 1
        wait = min(self.timeout, self.deadline)
        late = _Transient(f"no complete answer within the {self.deadline:g} s deadline")
        try:
            with _Deadline(self.deadline) as deadline:
                try:
                    with deadline.opener().open(request, timeout=wait) as response:
                        self._answered = True
                        raw = self._read_body(response, deadline)
                except urllib.error.HTTPError as err:
                    self._answered = True
                    raise self._http_error(err) from None
                except (http.client.HTTPException, OSError):
                    if deadline.expired:  # the deadline shut the connection
                        raise late from None
                    raise
        except TimeoutError:
            raise _Transient(f"no answer within {wait:g} s") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise _Transient(f"no answer within {wait:g} s") from None
            if isinstance(err.reason, ConnectionRefusedError) and not self._answered:
                raise EndpointError(
                    f"cannot reach {self.url} (connection refused): is the server running and "
                    "the --base-url right?"
                ) from None
            raise _Transient(f"cannot reach the server ({err.reason})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as err:
            raise _Transient(f"connection failed ({err.__class__.__name__}: {err})") from None
        try:
            return parse_completion(json.loads(raw))
        except ValueError as err:
            raise _Transient(f"malformed answer ({err}): {raw[:120]!r}") from None

    def _read_body(self, response: Any, deadline: _Deadline) -> bytes:
        """The answer's body, read as it arrives; at the deadline (the connection shut: the
        body ends early) a server too slow overall is a time-out."""
        chunks = []
        while chunk := response.read1(65536):
            chunks.append(chunk)
        if deadline.expired:
            raise _Transient(f"no complete answer within the {self.deadline:g} s deadline")
        return b"".join(chunks)

    def _http_error(self, err: urllib.error.HTTPError) -> Exception:
        try:
            body = err.read()
        except (OSError, http.client.HTTPException):
            body = b""
        message = _error_message(body) or err.reason
        if err.code in (401, 403):
            return AuthenticationError(
                f"{self.url} rejected the API key (HTTP {err.code}: {message}); set OPENAI_API_KEY "
                "or pass --api-key. Nothing was lost: rerun to continue where this stopped.",
                err.code,
            )
        if err.code in RETRY_STATUS or err.code >= 500:
            return _Transient(
                f"HTTP {err.code}: {message}", _parse_retry_after(err.headers.get("Retry-After"))
            )
        hint = " (does the base URL end in /v1?)" if err.code == 404 else ""
        return EndpointError(f"{self.url}: HTTP {err.code}: {message}{hint}", err.code)
