"""The on/off state machine every rhythm event shares (AF from probabilities, rate events from rhythm)."""

from __future__ import annotations

__all__ = ["Hysteresis"]


class Hysteresis:
    """On after ``need`` consecutive windows that satisfy the "on" condition, off after ``need``
    consecutive windows that satisfy the "off" one; :meth:`step` returns the onset time of a change."""

    def __init__(self) -> None:
        self.active = False
        self._run = 0
        self._run_t: float | None = None  # centre of the first window of the pending run

    def step(self, hit: bool, need: int, t_start: float, t_end: float) -> float | None:
        """Feed one window (``hit``: it satisfies the condition for the other state). Returns the time the
        confirmed change began (centre of the run's first window) when the state flips, else None."""
        centre = 0.5 * (t_start + t_end)
        if not hit:
            self._run, self._run_t = 0, None
            return None
        if self._run == 0:
            self._run_t = centre
        self._run += 1
        if self._run < need:
            return None
        self.active = not self.active
        t = self._run_t if self._run_t is not None else centre
        self._run, self._run_t = 0, None
        return t
