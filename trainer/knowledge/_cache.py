"""A SQLite answer cache for LLM calls, so an interrupted run resumes and never asks twice.

The key is ``sha256`` of the model id, the sampling parameters and the exact chat messages (which contain
the report and the prompt). Every answer is committed as soon as it arrives, so a ``kill -9`` loses at
most the calls in flight. One connection, guarded by a lock, serves all worker threads.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["AnswerCache", "cache_key"]


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any] | None = None) -> str:
    """The cache key of one chat call: sha256 over (model, params, messages) as canonical JSON."""
    blob = json.dumps({"model": model, "params": params or {}, "messages": messages},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Raw LLM answers by :func:`cache_key`. ``path=":memory:"`` keeps them in memory only."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
            "model TEXT, stage TEXT, created REAL)"
        )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, answer: str, *, model: str = "", stage: str = "") -> None:
        """Store one answer and commit it at once (autocommit)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, answer, model, stage, created) VALUES (?, ?, ?, ?, ?)",
                (key, answer, model, stage, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
