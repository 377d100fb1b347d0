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

A flat lead or one with non-finite samples within its beats gives NaN for that lead; too few beats give ``measured = 0``.
Never raises for a window's content.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

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


@lru_cache(maxsize=16)
def _plan(fs: float) -> tuple[int, int, np.ndarray, np.ndarray, int, int, int, int, int, int, int, int]:
    """Sample offsets at ``fs``: before / after the R peak, the beat's sample offsets, the smoothing kernel,
    the QRS search bounds and core, the baseline span, J+60 ms, T start / end and the QRS search before."""
    a, b = round(BEAT_S[0] * fs), round(BEAT_S[1] * fs)
    k = max(1, round(0.02 * fs))
    offsets = np.arange(-a, b)[:, None]
    offsets.setflags(write=False)
    kernel = np.ones(k) / k
    kernel.setflags(write=False)
    return (a, b, offsets, kernel, a - round(_QRS_SEARCH_S[0] * fs), a + round(_QRS_SEARCH_S[1] * fs),
            round(0.05 * fs), round(0.02 * fs), round(0.004 * fs), round(0.06 * fs), round(0.08 * fs),
            round(T_END_S * fs))


_MEASURED, _QRS_MS, _HR, _AXIS_OK, _AXIS_COS, _AXIS_SIN = (GLOBAL.index(n) for n in GLOBAL)


def measure_window(window: np.ndarray, leads: Sequence[str], r_peaks: Sequence[int] | np.ndarray, *,
                   fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-lead measurements (L, len(PER_LEAD)), window measurements (len(GLOBAL),)) of ``window``
    (L, S) with lead names ``leads`` and R peaks ``r_peaks`` (sample indices into the window)."""
    x = np.asarray(window)
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ValueError(f"window {x.shape} does not match {len(leads)} leads")
    n_leads, n = x.shape
    per, glob = _nan_result(n_leads)
    a, b, offsets, kernel, lo, hi, core, pr0, pr1, d60, d80, dt = _plan(float(fs))
    rp = np.asarray(r_peaks, dtype=np.int64).reshape(-1)
    rp = rp[(rp >= a) & (rp <= n - b)]
    if rp.size < MIN_BEATS or n_leads == 0:
        return per, glob
    segs = np.take(x, offsets + rp, axis=1).astype(np.float64)  # (L, a + b, B)
    good: np.ndarray = np.isfinite(np.add.reduce(segs.reshape(n_leads, -1), axis=1))  # a NaN / Inf sample: no sum
    if not good.all():
        segs[~good] = 0.0
    nb = segs.shape[2]
    segs.partition([nb // 2 - 1, nb // 2] if nb % 2 == 0 else nb // 2, axis=2)  # the middle value(s)
    med = segs[:, :, nb // 2] if nb % 2 else (segs[:, :, nb // 2 - 1] + segs[:, :, nb // 2]) / 2.0  # median beat
    ptp = med.max(axis=1) - med.min(axis=1)
    good &= ptp > _FLAT
    if not good.any():
        return per, glob
    # QRS onset / offset from the smoothed spatial velocity of the usable leads, each at unit peak-to-peak
    unit = med[good] / ptp[good][:, None]
    d = unit[:, 1:] - unit[:, :-1]
    vel = np.convolve(np.sqrt(np.add.reduce(d * d, axis=0)), kernel, mode="same")
    ipk = a - core + int(vel[a - core:a + core].argmax())
    thr = _QRS_THRESHOLD * float(vel[ipk])
    below = (vel[lo:ipk] < thr).nonzero()[0]
    on = lo + int(below[-1]) + 1 if below.size else lo
    above = (vel[ipk:hi] < thr).nonzero()[0]
    off = min(ipk + int(above[0]) if above.size else hi, med.shape[1] - 1)
    # baseline: the PR segment just before the onset
    b0, b1 = max(0, on - pr0), max(1, on - pr1)
    m = med - med[:, b0:b1].mean(axis=1, keepdims=True)
    qrs = m[:, on:off + 1]
    ir = qrs.argmax(axis=1)[:, None]
    cols = np.arange(qrs.shape[1])
    vals = np.empty((n_leads, len(PER_LEAD)))
    vals[:, 0] = -np.where(cols <= ir, qrs, np.inf).min(axis=1)
    vals[:, 1] = qrs.max(axis=1)
    vals[:, 2] = -np.where(cols >= ir, qrs, np.inf).min(axis=1)
    np.maximum(vals[:, :3], 0.0, out=vals[:, :3])
    area = vals[:, 3] = qrs.sum(axis=1) / fs
    vals[:, 4] = m[:, off]
    vals[:, 5] = m[:, min(off + d60, m.shape[1] - 1)]
    rr = np.sort(rp[1:] - rp[:-1])
    rr_med = (float(rr[rr.size // 2]) if rr.size % 2 else float(rr[rr.size // 2 - 1] + rr[rr.size // 2]) / 2.0)
    t0 = off + d80
    t1 = min(off + dt, m.shape[1], a + int(rr_med) - (a - lo))
    if t1 - t0 >= 2:
        tw = m[:, t0:t1]
        vals[:, 6] = tw[np.arange(n_leads), np.abs(tw).argmax(axis=1)]
        vals[:, 7] = tw.mean(axis=1)
    else:
        vals[:, 6:] = np.nan
    per[good] = vals[good]
    glob[_MEASURED] = 1.0
    glob[_QRS_MS] = (off - on) / fs * 1000.0
    glob[_HR] = 60.0 * fs / rr_med if rr_med > 0 else np.nan
    names = leads if "I" in leads and "II" in leads else [canonical_lead(name) for name in leads]
    if "I" in names and "II" in names:
        i1, i2 = list(names).index("I"), list(names).index("II")
        if good[i1] and good[i2]:
            ax_i = float(area[i1])
            ax_f = float(area[i2]) - ax_i / 2.0
            r = math.hypot(ax_i, ax_f)
            if r > 0:
                glob[_AXIS_OK] = 1.0
                glob[_AXIS_COS] = ax_i / r
                glob[_AXIS_SIN] = ax_f / r
    return per, glob
