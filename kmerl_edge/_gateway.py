"""Many patches in one process: stream sessions sharing one inference worker that batches windows
across devices (windows with the same lead set go into one backend call)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import KmerlError
from ._stream_errors import UnknownDeviceError
from ._stream_session import StreamSession
from ._stream_types import StreamConfig, WindowResult
from ._stream_worker import InferenceWorker

__all__ = ["Gateway", "GatewayStats"]


@dataclass(frozen=True)
class GatewayStats:
    """Totals over every session of a gateway, and the shared worker's batching."""

    sessions: int
    windows: int
    scored: int
    skipped: dict[str, int]
    dropped: int
    latency_ms_median: float
    latency_ms_p99: float
    latency_ms_max: float
    batches: int
    mean_batch: float
    max_queue: int
    worker_busy_s: float
    open_sessions: int = 0  #: ``sessions`` counts every session the gateway served, closed ones too

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "windows": self.windows,
            "scored": self.scored,
            "skipped": dict(self.skipped),
            "dropped": self.dropped,
            "latency_ms_median": round(self.latency_ms_median, 3),
            "latency_ms_p99": round(self.latency_ms_p99, 3),
            "latency_ms_max": round(self.latency_ms_max, 3),
            "batches": self.batches,
            "mean_batch": round(self.mean_batch, 2),
            "max_queue": self.max_queue,
            "worker_busy_s": round(self.worker_busy_s, 3),
            "open_sessions": self.open_sessions,
        }


class Gateway:
    """A process receiving many patches: ``open()`` one :class:`StreamSession` per device; all share
    one :class:`InferenceWorker` (a bounded queue of ``queue_size`` windows, batches of up to
    ``max_batch``), so the backend sees large batches instead of one call per window.

    >>> gw = Gateway(clf)
    >>> s = gw.open("patch-17", fs=130.0, leads=["I"])
    >>> s.push(chunk, t0)             # from that patch's reader
    >>> gw.close()
    """

    def __init__(
        self,
        classifier: Any,
        *,
        config: StreamConfig | None = None,
        queue_size: int = 4096,
        max_batch: int = 128,
    ) -> None:
        self.classifier = classifier
        self.config = config or StreamConfig()
        self.worker = InferenceWorker(
            classifier, queue_size=queue_size, max_batch=max_batch, name="kmerl-gateway-inference"
        )
        self._sessions: dict[str, StreamSession] = {}
        self._lock = threading.Lock()
        self._closed = False
        # totals of the sessions already closed (their counters outlive them)
        self._done_sessions = 0
        self._done_windows = 0
        self._done_scored = 0
        self._done_skipped: dict[str, int] = {}
        self._done_latencies: deque[float] = deque(maxlen=self.config.latency_history)

    def open(self, device_id: str, *, fs: float, leads: Sequence[str], **overrides: Any) -> StreamSession:
        """A new session for ``device_id`` (unique while open) on the shared worker."""
        with self._lock:
            if self._closed:
                raise KmerlError("gateway is closed")
            if device_id in self._sessions:
                raise KmerlError(f"device {device_id!r} already has an open session")
            s = StreamSession(
                self.classifier,
                fs=fs,
                leads=leads,
                config=self.config,
                worker=self.worker,
                device_id=device_id,
                **overrides,
            )
            self._sessions[device_id] = s
            return s

    def __getitem__(self, device_id: str) -> StreamSession:
        try:
            return self._sessions[device_id]
        except KeyError:
            raise UnknownDeviceError(f"device {device_id!r} has no open session") from None

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def sessions(self) -> dict[str, StreamSession]:
        return dict(self._sessions)

    def close_session(self, device_id: str, timeout: float | None = 30.0) -> list[WindowResult]:
        """Close one device's session (waits for its pending windows) and forget it."""
        with self._lock:
            if device_id not in self._sessions:
                raise UnknownDeviceError(f"device {device_id!r} has no open session")
            s = self._sessions.pop(device_id)
        out = s.close(timeout)
        self._retire(s)
        return out

    def _retire(self, s: StreamSession) -> None:
        st = s.stats()
        with self._lock:
            self._done_sessions += 1
            self._done_windows += st.windows
            self._done_scored += st.scored
            for k, v in st.skipped.items():
                self._done_skipped[k] = self._done_skipped.get(k, 0) + v
            self._done_latencies.extend(s.latencies())

    def close(self, timeout: float | None = 60.0) -> None:
        """Close every session and stop the shared worker."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.close(timeout)
            self._retire(s)
        self.worker.stop(timeout)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> GatewayStats:
        """Totals over every session the gateway served, open and closed."""
        with self._lock:
            sessions = list(self._sessions.values())
            lat: list[float] = list(self._done_latencies)
            windows, scored = self._done_windows, self._done_scored
            skipped: dict[str, int] = dict(self._done_skipped)
            n_done = self._done_sessions
        for s in sessions:
            st = s.stats()
            windows += st.windows
            scored += st.scored
            for k, v in st.skipped.items():
                skipped[k] = skipped.get(k, 0) + v
            lat.extend(s.latencies())
        arr = np.asarray(lat, dtype=np.float64)
        ws = self.worker.stats
        return GatewayStats(
            sessions=len(sessions) + n_done,
            windows=windows,
            scored=scored,
            skipped=skipped,
            dropped=skipped.get("dropped_backlog", 0),
            latency_ms_median=float(np.median(arr)) if arr.size else float("nan"),
            latency_ms_p99=float(np.percentile(arr, 99)) if arr.size else float("nan"),
            latency_ms_max=float(arr.max()) if arr.size else float("nan"),
            batches=ws.batches,
            mean_batch=ws.mean_batch,
            max_queue=ws.max_queue,
            worker_busy_s=ws.busy_s,
            open_sessions=len(sessions),
        )
