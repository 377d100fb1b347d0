"""OpenAI-compatible chat-completions client (standard library only): vLLM, llama.cpp server, Ollama.

``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature", "max_tokens"}``; the
answer is ``choices[0].message.content``. Timeouts, connection errors, HTTP 429 and 5xx are retried with
exponential backoff (``backoff_s * 2**attempt``, capped); other 4xx fail at once with
:class:`LLMRequestError`. Retries are counted in :meth:`OpenAIChatBackend.stats`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ._errors import LLMBackendError, LLMRequestError

__all__ = ["HTTPConfig", "OpenAIChatBackend"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HTTPConfig:
    """Endpoint and retry policy of :class:`OpenAIChatBackend` (``base_url`` ends in ``/v1`` usually)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be http(s)://..., not {self.base_url!r}")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError(f"invalid HTTPConfig {self}")


class OpenAIChatBackend:
    """Chat backend over an OpenAI-compatible HTTP endpoint (thread-safe; one request per call)."""

    def __init__(self, config: HTTPConfig) -> None:
        self.config = config
        self.model_id = f"openai-http:{config.model}"
        self.params: dict[str, Any] = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        req = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"not a chat-completions response: {str(data)[:200]}") from exc
        return "" if content is None else str(content)

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
            except urllib.error.HTTPError as exc:
                if exc.code == 429 or exc.code >= 500:
                    self._count(f"http_{exc.code}")
                    last = exc
                    log.warning("HTTP %d from %s (attempt %d)", exc.code, self._url, attempt + 1)
                    continue
                raise LLMRequestError(f"{self._url} rejected the request: HTTP {exc.code} {exc.reason}") from exc
            except TimeoutError as exc:
                self._count("timeouts")
                last = exc
            except urllib.error.URLError as exc:
                kind = "timeouts" if isinstance(exc.reason, TimeoutError) else "connection_errors"
                self._count(kind)
                last = exc
            except (ConnectionError, ValueError, json.JSONDecodeError) as exc:
                self._count("bad_responses")
                last = exc
            log.warning("call to %s failed (attempt %d): %s", self._url, attempt + 1, last)
        self._count("gave_up")
        raise LLMBackendError(f"{self._url}: no answer after {self.config.max_retries + 1} attempts: {last}")
