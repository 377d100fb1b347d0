"""Smoothing across windows and rhythm events with hysteresis (see :class:`EventRule`)."""

from __future__ import annotations

from collections import deque

import numpy as np

from ._stream_types import EventRule, RhythmEvent

__all__ = ["Smoother", "EventDetector"]


class Smoother:
    """Mean of the probability vectors of the last ``n`` scored windows that ended within ``n`` hops."""

    def __init__(self, n: int, hop_s: float) -> None:
        self.n = int(n)
        self.span_s = self.n * float(hop_s)
        self._hist: deque[tuple[float, np.ndarray]] = deque(maxlen=self.n)

    def __call__(self, t_end: float, probs: np.ndarray) -> np.ndarray:
        if self.n == 1:
            return probs
        while self._hist and (t_end - self._hist[0][0] >= self.span_s - 1e-9 or t_end < self._hist[0][0]):
            self._hist.popleft()
        self._hist.append((t_end, probs))
        return np.mean([p for _, p in self._hist], axis=0)


class EventDetector:
    """Hysteresis state machine for one :class:`EventRule` on one class's probability.

    Feed it scored windows in time order with :meth:`update`; it returns the event a window confirms,
    if any. ``active`` tells whether the rhythm is currently on.
    """

    def __init__(self, rule: EventRule, label_set: str, query_index: int, device_id: str | None = None) -> None:
        self.rule = rule
        self.label_set = label_set
        self.query_index = int(query_index)
        self.device_id = device_id
        self.active = False
        self._run = 0
        self._run_t: float | None = None  # centre of the first window of the pending run

    def update(self, index: int, t_start: float, t_end: float, probs: np.ndarray) -> RhythmEvent | None:
        p = float(probs[self.query_index])
        r = self.rule
        if self.active:
            hit = p <= r.off_threshold
            need = r.min_off_windows
        else:
            hit = p >= r.on_threshold
            need = r.min_on_windows
        if not hit:
            self._run = 0
            self._run_t = None
            return None
        if self._run == 0:
            self._run_t = 0.5 * (t_start + t_end)
        self._run += 1
        if self._run < need:
            return None
        self.active = not self.active
        t = self._run_t if self._run_t is not None else 0.5 * (t_start + t_end)
        self._run = 0
        self._run_t = None
        return RhythmEvent(
            kind="started" if self.active else "ended",
            label=r.label,
            label_set=self.label_set,
            t=t,
            t_confirmed=t_end,
            probability=p,
            window_index=index,
            device_id=self.device_id,
        )
