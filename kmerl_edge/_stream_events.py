"""Smoothing across windows and rhythm events with hysteresis (see :class:`EventRule`)."""

from __future__ import annotations

from collections import deque

import numpy as np

from ._hysteresis import Hysteresis
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
        self._h = Hysteresis()
        self._recent: deque[float] = deque(maxlen=rule.smooth_windows)

    @property
    def active(self) -> bool:
        return self._h.active

    def update(
        self, index: int, t_start: float, t_end: float, probs: np.ndarray, *, rhythm_ok: bool = True
    ) -> RhythmEvent | None:
        """``rhythm_ok``: whether the window's rhythm analysis found usable beats (``quality_gating``)."""
        r = self.rule
        if r.quality_gating and not rhythm_ok:
            return None
        p = float(probs[self.query_index])
        if r.smooth_windows > 1:
            self._recent.append(p)
            p = float(np.mean(self._recent))
        if self.active:
            t = self._h.step(p <= r.off_threshold, r.min_off_windows, t_start, t_end)
        else:
            t = self._h.step(p >= r.on_threshold, r.min_on_windows, t_start, t_end)
        if t is None:
            return None
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
