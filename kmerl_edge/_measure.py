"""Classical ECG measurements of one window from its R peaks (numpy only).

A median beat per lead (:data:`BEAT_S` around each R peak, at least :data:`MIN_BEATS` beats that fit in the
window), QRS onset and offset from the smoothed spatial velocity of the leads' median beats (each lead
scaled to unit peak-to-peak, so no lead dominates), the baseline from the PR segment just before the QRS
onset, then per lead (:data:`PER_LEAD`, amplitudes in the window's own units: mV on a band-passed window,
standard deviations on a z-scored model window):

- ``q_amp`` / ``s_amp``: depth of the negative deflection before / after the lead's largest positive
  deflection within the QRS (≥ 0); ``r_amp``: that largest positive deflection (≥ 0);
- ``qrs_area``: the QRS integral (units · s);
- ``st_j`` / ``st_60``: the level at the J point (QRS offset) and 60 ms after it;
- ``t_peak``: the signed extreme from 80 ms after the J point to :data:`T_END_S` after it (or the next
  beat's QRS); ``t_mean``: the mean level there;

and for the window (:data:`GLOBAL`): ``measured`` (1 when the beats sufficed, else 0 and every other value
NaN), ``qrs_ms``, ``hr_bpm`` (from the median RR), and the frontal axis as ``axis_cos`` / ``axis_sin`` of
the QRS areas of I and aVF (aVF = II − I/2; ``axis_ok`` 1 only with leads I and II).

A flat lead or one with non-finite samples gives NaN for that lead; too few beats give ``measured = 0``.
Never raises for a window's content.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._leads import canonical_lead

__all__ = ["BEAT_S", "GLOBAL", "MIN_BEATS", "PER_LEAD", "T_END_S", "measure_window"]

#: per-lead measurements, in this order
PER_LEAD = ("q_amp", "r_amp", "s_amp", "qrs_area", "st_j", "st_60", "t_peak", "t_mean")
#: window measurements, in this order
GLOBAL = ("measured", "qrs_ms", "hr_bpm", "axis_ok", "axis_cos", "axis_sin")
#: the median beat spans this many seconds before and after the R peak
BEAT_S = (0.25, 0.45)
#: fewer beats than this inside the window: nothing measured
MIN_BEATS = 3
#: the T wave is looked for up to this long after the J point
T_END_S = 0.40
#: QRS search: onset at most this long before the beat's fiducial, offset at most this long after it
_QRS_SEARCH_S = (0.12, 0.16)
#: share of the peak spatial velocity below which the QRS has begun / ended
_QRS_THRESHOLD = 0.12
_FLAT = 1e-6


def _nan_result(n_leads: int) -> tuple[np.ndarray, np.ndarray]:
    per = np.full((n_leads, len(PER_LEAD)), np.nan)
    glob = np.full(len(GLOBAL), np.nan)
    glob[GLOBAL.index("measured")] = 0.0
    glob[GLOBAL.index("axis_ok")] = 0.0
    return per, glob


def measure_window(window: np.ndarray, leads: Sequence[str], r_peaks: Sequence[int] | np.ndarray, *,
                   fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-lead measurements (L, len(PER_LEAD)), window measurements (len(GLOBAL),)) of ``window``
    (L, S) with lead names ``leads`` and R peaks ``r_peaks`` (sample indices into the window)."""
    x = np.asarray(window, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ValueError(f"window {x.shape} does not match {len(leads)} leads")
    n_leads, n = x.shape
    per, glob = _nan_result(n_leads)
    a, b = round(BEAT_S[0] * fs), round(BEAT_S[1] * fs)
    rp = np.asarray(r_peaks, dtype=np.int64).reshape(-1)
    rp = rp[(rp - a >= 0) & (rp + b <= n)]
    if rp.size < MIN_BEATS or n_leads == 0:
        return per, glob
    segs = x[:, rp[:, None] + np.arange(-a, b)[None, :]]  # (L, B, a + b)
    good: np.ndarray = np.asarray(np.isfinite(x).all(axis=1))
    med = np.median(np.where(good[:, None, None], segs, 0.0), axis=1)  # (L, a + b)
    ptp = np.ptp(np.where(good[:, None], med, 0.0), axis=1)
    good &= ptp > _FLAT
    if not good.any():
        return per, glob
    # QRS onset / offset from the smoothed spatial velocity of the usable leads, each at unit peak-to-peak
    unit = med[good] / ptp[good][:, None]
    vel = np.sqrt(np.add.reduce(np.diff(unit, axis=1) ** 2, axis=0))
    k = max(1, round(0.02 * fs))
    vel = np.convolve(vel, np.ones(k) / k, mode="same")
    lo, hi = a - round(_QRS_SEARCH_S[0] * fs), a + round(_QRS_SEARCH_S[1] * fs)
    core = round(0.05 * fs)
    ipk = a - core + int(np.argmax(vel[a - core:a + core]))
    thr = _QRS_THRESHOLD * float(vel[ipk])
    below = np.flatnonzero(vel[lo:ipk] < thr)
    on = lo + int(below[-1]) + 1 if below.size else lo
    above = np.flatnonzero(vel[ipk:hi] < thr)
    off = ipk + int(above[0]) if above.size else hi
    off = min(off, med.shape[1] - 1)
    # baseline: the PR segment just before the onset
    b0, b1 = max(0, on - round(0.02 * fs)), max(1, on - round(0.004 * fs))
    base = med[:, b0:b1].mean(axis=1, keepdims=True)
    m = med - base
    qrs = m[:, on:off + 1]
    ir = np.argmax(qrs, axis=1)
    cols = np.arange(qrs.shape[1])[None, :]
    r_amp = np.maximum(qrs.max(axis=1), 0.0)
    q_amp = np.maximum(-np.where(cols <= ir[:, None], qrs, np.inf).min(axis=1), 0.0)
    s_amp = np.maximum(-np.where(cols >= ir[:, None], qrs, np.inf).min(axis=1), 0.0)
    area = qrs.sum(axis=1) / fs
    j60 = min(off + round(0.06 * fs), m.shape[1] - 1)
    rr = np.diff(rp)
    rr_med = float(np.median(rr)) if rr.size else math.inf
    t0 = off + round(0.08 * fs)
    t1 = min(off + round(T_END_S * fs), m.shape[1], a + int(rr_med) - round(_QRS_SEARCH_S[0] * fs))
    if t1 - t0 >= 2:
        tw = m[:, t0:t1]
        it = np.argmax(np.abs(tw), axis=1)
        t_peak = tw[np.arange(n_leads), it]
        t_mean = tw.mean(axis=1)
    else:
        t_peak = t_mean = np.full(n_leads, np.nan)
    vals = np.stack([q_amp, r_amp, s_amp, area, m[:, off], m[:, j60], t_peak, t_mean], axis=1)
    per[good] = vals[good]
    glob[GLOBAL.index("measured")] = 1.0
    glob[GLOBAL.index("qrs_ms")] = (off - on) / fs * 1000.0
    glob[GLOBAL.index("hr_bpm")] = 60.0 * fs / rr_med if rr.size and rr_med > 0 else np.nan
    names = [canonical_lead(name) for name in leads]
    if "I" in names and "II" in names:
        i1, i2 = names.index("I"), names.index("II")
        if good[i1] and good[i2]:
            ax_i = area[i1]
            ax_f = area[i2] - area[i1] / 2.0
            r = math.hypot(ax_i, ax_f)
            if r > 0:
                glob[GLOBAL.index("axis_ok")] = 1.0
                glob[GLOBAL.index("axis_cos")] = ax_i / r
                glob[GLOBAL.index("axis_sin")] = ax_f / r
    return per, glob
