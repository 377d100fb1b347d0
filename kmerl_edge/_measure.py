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
from typing import NamedTuple

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


class _Plan(NamedTuple):
    """Sample offsets at one rate (the R peak is sample ``a`` of a beat)."""

    a: int  # samples before the R peak
    width: int  # samples per beat (a + after)
    kernel: np.ndarray  # the velocity's smoothing kernel
    lo: int  # QRS search: onset at or after this sample of the beat
    hi: int  # QRS search: offset before this sample
    core: int  # the velocity peak within ± this of the R peak
    pr0: int  # baseline: from this long before the onset
    pr1: int  # to this long before it
    d60: int  # J + 60 ms
    d80: int  # T start after J
    dt: int  # T end after J


@lru_cache(maxsize=16)
def _plan(fs: float) -> _Plan:
    a, b = round(BEAT_S[0] * fs), round(BEAT_S[1] * fs)
    k = max(1, round(0.02 * fs))
    kernel = np.ones(k) / k
    kernel.setflags(write=False)
    return _Plan(a, a + b, kernel, a - round(_QRS_SEARCH_S[0] * fs), a + round(_QRS_SEARCH_S[1] * fs),
                 round(0.05 * fs), round(0.02 * fs), round(0.004 * fs), round(0.06 * fs), round(0.08 * fs),
                 round(T_END_S * fs))


def _beats(x: np.ndarray, starts: list[int], width: int) -> np.ndarray:
    """(L, width, B) float64: ``x[:, s : s + width]`` for each start ``s``, beats last. Gathered through the
    strided view v[l, j, s] = x[l, s + j] (``sliding_window_view(x, width, axis=1)`` with the last two axes
    swapped, built without its per-call overhead)."""
    if x.dtype.hasobject or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float64 if x.dtype.hasobject else x.dtype)
    n_leads, n = x.shape
    step = x.strides[1]
    view = np.ndarray((n_leads, width, n - width + 1), x.dtype, x, 0, (x.strides[0], step, step))
    return view[:, :, np.array(starts)].astype(np.float64, order="C")


@lru_cache(maxsize=64)
def _axis_rows(leads: tuple[str, ...]) -> tuple[int, int] | None:
    """The rows of leads I and II among ``leads``, or None without both."""
    names = leads if "I" in leads and "II" in leads else tuple(canonical_lead(name) for name in leads)
    return (names.index("I"), names.index("II")) if "I" in names and "II" in names else None


def measure_window(window: np.ndarray, leads: Sequence[str], r_peaks: Sequence[int] | np.ndarray, *,
                   fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-lead measurements (L, len(PER_LEAD)), window measurements (len(GLOBAL),)) of ``window``
    (L, S) with lead names ``leads`` and R peaks ``r_peaks`` (sample indices into the window)."""
    x = np.asarray(window)
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ValueError(f"window {x.shape} does not match {len(leads)} leads")
    n_leads, n = x.shape
    a, width, kernel, lo, hi, core, pr0, pr1, d60, d80, dt = _plan(float(fs))
    last = n - (width - a)  # the last R peak whose beat fits
    rp = [p for p in np.asarray(r_peaks, dtype=np.int64).reshape(-1).tolist() if a <= p <= last]
    if len(rp) < MIN_BEATS or n_leads == 0:
        return _nan_result(n_leads)
    segs = _beats(x, [p - a for p in rp], width)  # (L, width, B)
    finite = np.isfinite(np.add.reduce(segs.reshape(n_leads, -1), axis=1)).tolist()  # a NaN / Inf sample: no sum
    if not all(finite):
        segs[[not f for f in finite]] = 0.0  # so flat
    nb = len(rp)
    mid = nb // 2
    segs.partition([mid - 1, mid] if nb % 2 == 0 else mid, axis=2)  # the middle value(s)
    med = segs[:, :, mid] if nb % 2 else (segs[:, :, mid - 1] + segs[:, :, mid]) / 2.0  # median beat
    ptp = np.maximum.reduce(med, axis=1) - np.minimum.reduce(med, axis=1)
    good = [v > _FLAT for v in ptp.tolist()]
    all_good = all(good)
    if not any(good):
        return _nan_result(n_leads)
    # QRS onset / offset from the smoothed spatial velocity of the usable leads, each at unit peak-to-peak
    unit = med / ptp[:, None] if all_good else med[good] / ptp[good][:, None]
    d = unit[:, 1:] - unit[:, :-1]
    d *= d
    speed = np.sqrt(d[0] if len(d) == 1 else np.add.reduce(d, axis=0))
    vel = np.correlate(speed, kernel, mode="same")  # = np.convolve: the kernel is symmetric
    ipk = a - core + int(vel[a - core:a + core].argmax())
    thr = _QRS_THRESHOLD * float(vel[ipk])
    below = (vel[lo:ipk] < thr).nonzero()[0]
    on = lo + int(below[-1]) + 1 if below.size else lo
    above = (vel[ipk:hi] < thr).nonzero()[0]
    off = min(ipk + int(above[0]) if above.size else hi, width - 1)
    # baseline: the PR segment just before the onset (its mean, as ndarray.mean computes it)
    b0, b1 = max(0, on - pr0), max(1, on - pr1)
    m = med - (np.add.reduce(med[:, b0:b1], axis=1, keepdims=True) / (b1 - b0) if b1 > b0
               else med[:, b0:b1].mean(axis=1, keepdims=True))
    qrs = m[:, on:off + 1]
    rows = np.arange(n_leads)
    ir = qrs.argmax(axis=1)
    per = np.empty((n_leads, len(PER_LEAD)))
    # the deepest points up to and from the largest positive deflection: running minima from the left / right
    per[:, 0] = -np.minimum.accumulate(qrs, axis=1)[rows, ir]
    per[:, 1] = np.maximum.reduce(qrs, axis=1)
    per[:, 2] = -np.minimum.accumulate(qrs[:, ::-1], axis=1)[rows, qrs.shape[1] - 1 - ir]
    np.maximum(per[:, :3], 0.0, out=per[:, :3])
    area = per[:, 3] = np.add.reduce(qrs, axis=1) / fs
    per[:, 4] = m[:, off]
    per[:, 5] = m[:, min(off + d60, width - 1)]
    rr = sorted([q - p for p, q in zip(rp, rp[1:])])
    k = len(rr) // 2
    rr_med = float(rr[k]) if len(rr) % 2 else float(rr[k - 1] + rr[k]) / 2.0
    t0 = off + d80
    t1 = min(off + dt, width, a + int(rr_med) - (a - lo))
    if t1 - t0 >= 2:
        tw = m[:, t0:t1]
        per[:, 6] = tw[rows, np.abs(tw).argmax(axis=1)]
        per[:, 7] = np.add.reduce(tw, axis=1) / (t1 - t0)
    else:
        per[:, 6:] = np.nan
    if not all_good:
        per[[not g for g in good]] = np.nan
    axis_ok, axis_cos, axis_sin = 0.0, math.nan, math.nan
    i12 = _axis_rows(tuple(leads))
    if i12 is not None and good[i12[0]] and good[i12[1]]:
        ax_i = float(area[i12[0]])
        ax_f = float(area[i12[1]]) - ax_i / 2.0
        r = math.hypot(ax_i, ax_f)
        if r > 0:
            axis_ok, axis_cos, axis_sin = 1.0, ax_i / r, ax_f / r
    hr = 60.0 * fs / rr_med if rr_med > 0 else math.nan
    return per, np.array([1.0, (off - on) / fs * 1000.0, hr, axis_ok, axis_cos, axis_sin])  # GLOBAL's order
