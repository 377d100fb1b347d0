"""OpenAI-compatible chat-completions client (standard library only): vLLM, llama.cpp server, Ollama.

``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature", "max_tokens"}``; the
answer is ``choices[0].message.content``.

Every request has a *total* deadline (``timeout_s``: connect, send, headers and body together), enforced
by a watchdog that shuts the socket down, so a server that drips one byte at a time cannot hold a call
longer; the body is read in chunks up to ``max_response_bytes`` and no further
(:class:`LLMResponseTooLargeError`); a body that is not a chat-completions JSON object (an error object,
text, JSON nested too deeply to parse) is a bad response. Timeouts, connection errors, bad responses,
HTTP 429 and 5xx are retried with exponential backoff (``backoff_s * 2**attempt``, capped); other 4xx and
3xx fail at once with :class:`LLMRequestError`. Retries are counted in :meth:`OpenAIChatBackend.stats`.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ._errors import (
    KnowledgeConfigError,
    LLMBackendError,
    LLMRequestError,
    LLMResponseError,
    LLMResponseTooLargeError,
)

__all__ = ["HTTPConfig", "OpenAIChatBackend"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HTTPConfig:
    """Endpoint and retry policy of :class:`OpenAIChatBackend` (``base_url`` ends in ``/v1`` usually).

    ``timeout_s`` bounds one whole request (not each socket read); ``max_response_bytes`` bounds its body.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 512
    max_response_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise KnowledgeConfigError(f"base_url must be http(s)://..., not {self.base_url!r}")
        if (not self.timeout_s > 0 or self.max_retries < 0 or self.backoff_s < 0
                or self.max_response_bytes < 1024):
            raise KnowledgeConfigError(f"invalid HTTPConfig {self}")


class _Status(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"HTTP {code} {reason}")
        self.code = code
        self.reason = reason


def _content(data: Any) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        err = data.get("error") if isinstance(data, dict) else None
        what = f"an error object: {str(err)[:200]}" if err is not None else f"not a chat-completions response: {str(data)[:200]}"
        raise LLMResponseError(what) from exc
    if content is not None and not isinstance(content, str):
        raise LLMResponseError(f"message content is a {type(content).__name__}, not text")
    return "" if content is None else content


class OpenAIChatBackend:
    """Chat backend over an OpenAI-compatible HTTP endpoint (thread-safe; one request per call)."""

    def __init__(self, config: HTTPConfig) -> None:
        self.config = config
        self.model_id = f"openai-http:{config.model}"
        self.params: dict[str, Any] = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._parts = urllib.parse.urlsplit(self._url)
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _post(self, body: bytes) -> str:
        cfg = self.config
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        u = self._parts
        conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(u.hostname or "", u.port, timeout=cfg.timeout_s)
        expired = threading.Event()
        held: list[socket.socket] = []  # the socket, kept: http.client hands it to the response

        def watchdog() -> None:  # the total deadline: unblock any read by shutting the socket down
            expired.set()
            for sock in held:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(cfg.timeout_s, watchdog)
        timer.daemon = True
        timer.start()
        try:
            try:
                path = u.path + (f"?{u.query}" if u.query else "")
                conn.connect()
                if conn.sock is not None:
                    held.append(conn.sock)
                    if expired.is_set():
                        watchdog()
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                if resp.status != 200:
                    raise _Status(resp.status, resp.reason)
                declared = resp.getheader("Content-Length")
                if declared and declared.isdigit() and int(declared) > cfg.max_response_bytes:
                    raise LLMResponseTooLargeError(
                        f"{self._url} announced {int(declared)} bytes, more than max_response_bytes "
                        f"({cfg.max_response_bytes})"
                    )
                chunks: list[bytes] = []
                total = 0
                while True:
                    chunk = resp.read(min(1 << 16, cfg.max_response_bytes + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > cfg.max_response_bytes:
                        raise LLMResponseTooLargeError(
                            f"{self._url} sent more than max_response_bytes ({cfg.max_response_bytes}); "
                            "stopped reading"
                        )
                    if expired.is_set():
                        break
            except (OSError, http.client.HTTPException) as exc:
                if expired.is_set():
                    raise TimeoutError(f"no complete answer within {cfg.timeout_s:g} s") from None
                if isinstance(exc, http.client.HTTPException):
                    raise ConnectionError(f"broken HTTP response: {exc!r}") from None
                raise
            if expired.is_set():
                raise TimeoutError(f"no complete answer within {cfg.timeout_s:g} s")
        finally:
            timer.cancel()
            conn.close()
        try:
            data = json.loads(b"".join(chunks).decode("utf-8"))
        except RecursionError:
            raise LLMResponseError("response JSON is nested too deeply to parse") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LLMResponseError(f"response is not JSON: {exc}") from None
        return _content(data)

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.config.model, "messages": messages, **self.params}).encode("utf-8")
        last: Exception | None = None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                delay = min(self.config.backoff_s * 2 ** (attempt - 1), self.config.backoff_max_s)
                self._count("retries")
                time.sleep(delay)
            try:
                return self._post(body)
            except _Status as exc:
                if exc.code == 429 or exc.code >= 500:
                    self._count(f"http_{exc.code}")
                    last = exc
                    log.warning("HTTP %d from %s (attempt %d)", exc.code, self._url, attempt + 1)
                    continue
                raise LLMRequestError(f"{self._url} rejected the request: HTTP {exc.code} {exc.reason}") from None
            except LLMResponseTooLargeError:
                self._count("too_large")
                raise
            except TimeoutError as exc:
                self._count("timeouts")
                last = exc
            except LLMResponseError as exc:
                self._count("bad_responses")
                last = exc
            except OSError as exc:  # refused, reset, unreachable, DNS
                self._count("connection_errors")
                last = exc
            log.warning("call to %s failed (attempt %d): %s", self._url, attempt + 1, last)
        self._count("gave_up")
        raise LLMBackendError(f"{self._url}: no answer after {self.config.max_retries + 1} attempts: {last}")
