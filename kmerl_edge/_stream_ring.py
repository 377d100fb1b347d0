"""Per-lead ring buffers at the device rate, with a gap mask and per-lead fault codes.

Nothing is ever interpolated: a sample lost in a source gap is marked missing (``gap``), a sample of a
lead reported off or non-finite is marked with a code in ``bad``; the window reader decides what to do.
"""

from __future__ import annotations

import numpy as np

from ._stream_errors import StreamConfigError

__all__ = ["RingBuffer", "BAD_OK", "BAD_LEAD_OFF", "BAD_NONFINITE"]

BAD_OK = 0
BAD_LEAD_OFF = 1
BAD_NONFINITE = 2


class RingBuffer:
    """The last ``capacity`` samples of ``n_leads`` leads; ``n_total`` counts every sample slot written
    (gaps included), so a slot's absolute index is its device sample index since the session began."""

    def __init__(self, n_leads: int, capacity: int) -> None:
        if capacity < 1 or n_leads < 1:
            raise StreamConfigError("a ring buffer needs at least one lead and one sample")
        self.capacity = int(capacity)
        self.n_leads = int(n_leads)
        self.data = np.zeros((n_leads, capacity), dtype=np.float32)
        self.gap = np.ones(capacity, dtype=bool)  # nothing received yet counts as missing
        self.bad = np.zeros((n_leads, capacity), dtype=np.int8)
        self.n_total = 0

    def _spans(self, start_abs: int, n: int) -> list[tuple[int, int, int]]:
        """Ring slices for ``n <= capacity`` slots starting at absolute index ``start_abs``:
        (ring start, ring stop, offset into the new samples)."""
        pos = start_abs % self.capacity
        first = min(n, self.capacity - pos)
        spans = [(pos, pos + first, 0)]
        if first < n:
            spans.append((0, n - first, first))
        return spans

    def write(self, x: np.ndarray, bad: np.ndarray) -> None:
        """Append samples ``x`` (n_leads, n) with fault codes ``bad`` (n_leads, n) int8."""
        n = int(x.shape[1])
        if n == 0:
            return
        start = self.n_total
        if n > self.capacity:  # only the newest samples can ever be read back
            start += n - self.capacity
            x = x[:, -self.capacity :]
            bad = bad[:, -self.capacity :]
        for a, b, off in self._spans(start, x.shape[1]):
            k = b - a
            self.data[:, a:b] = x[:, off : off + k]
            self.bad[:, a:b] = bad[:, off : off + k]
            self.gap[a:b] = False
        self.n_total += n

    def write_gap(self, n: int) -> None:
        """Append ``n`` missing sample slots."""
        if n <= 0:
            return
        if n >= self.capacity:
            self.gap[:] = True
            self.bad[:] = BAD_OK
        else:
            for a, b, _ in self._spans(self.n_total, n):
                self.gap[a:b] = True
                self.bad[:, a:b] = BAD_OK
        self.n_total += n

    def invalidate(self) -> None:
        """Mark everything held as missing (the device clock was reset: no stitching across it)."""
        self.gap[:] = True

    def window(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the last ``n`` slots in time order: data (n_leads, n), gap (n,), bad (n_leads, n)."""
        if n > self.capacity:
            raise StreamConfigError(f"window of {n} samples exceeds the ring capacity {self.capacity}")
        start = (self.n_total - n) % self.capacity
        if start + n <= self.capacity:
            sl = slice(start, start + n)
            return self.data[:, sl].copy(), self.gap[sl].copy(), self.bad[:, sl].copy()
        # the window wraps around the end of the ring: its two slices joined (the same copy as indexing the
        # ring with every slot's position, without building and gathering that index)
        a, b = slice(start, self.capacity), slice(0, start + n - self.capacity)
        return (
            np.concatenate((self.data[:, a], self.data[:, b]), axis=1),
            np.concatenate((self.gap[a], self.gap[b])),
            np.concatenate((self.bad[:, a], self.bad[:, b]), axis=1),
        )

    def gap_window(self, n: int) -> np.ndarray:
        """The gap mask of the last ``n`` slots (cheap check before copying data)."""
        start = (self.n_total - n) % self.capacity
        if start + n <= self.capacity:
            return self.gap[start : start + n]
        return np.concatenate((self.gap[start:], self.gap[: start + n - self.capacity]))
