"""Rhythm analysis on the device: R peaks, heart rate, RR irregularity and HRV (numpy/scipy only).

One call for a recording or a window::

    from kmerl_edge.rhythm import analyse
    r = analyse(signal_mv, fs=250.0, lead="II")
    r.hr_bpm, r.rr_irregularity, r.quality      # None / None / "noisy" rather than a wrong number

and a streaming detector whose beats do not depend on how the stream is cut into chunks::

    det = BeatDetector(fs=250.0)
    for chunk in chunks:
        new_beats = det.push(chunk)             # absolute sample indices, each beat exactly once
    new_beats = det.finish()                    # end of the record: the beats its last samples confirm

The detector is an energy detector of the Pan–Tompkins family, chosen by measurement (``kmerl-bench
rhythm``): the signal is median-filtered at the device rate (pacing spikes up to 2 ms wide: 3 samples
up to 500 Hz, 5 above), block-averaged to about 125 Hz, band-passed (8–20 Hz), differentiated,
rectified and integrated over 100 ms; local maxima of that envelope are
classified with adaptive signal / noise levels, a T-wave check, a search back after 1.66 mean RR
intervals and, after a regular run, a search back of any gap over 1.4 mean RR intervals (a small
premature beat before its compensatory pause); each beat is then placed on the largest deflection of
the raw signal at the device rate.
Every stage is causal and carries its state, so a stream cut anywhere gives the same beats as the
whole record. Polarity and scale do not change the beats (all thresholds are relative); absolute
levels (mV) are used only to call a window flat.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import NonFiniteSignalError, SignalShapeError
from ._hysteresis import Hysteresis
from ._leads import canonical_lead
from ._preprocess import _check_fs

if TYPE_CHECKING:  # pragma: no cover
    from ._stream_types import RhythmEvent

__all__ = [
    "DetectorConfig",
    "RhythmConfig",
    "RhythmResult",
    "BeatDetector",
    "RhythmTracker",
    "RateEventRule",
    "RateEventDetector",
    "DEFAULT_RATE_EVENTS",
    "analyse",
    "detect_beats",
    "summarise_beats",
    "choose_rhythm_lead",
    "QUALITY_OK",
    "QUALITY_FLAT",
    "QUALITY_NOISY",
    "QUALITY_TOO_FEW_BEATS",
    "QUALITY_LEVELS",
]

#: Beats were found with a clear margin over the noise; every number is reported.
QUALITY_OK = "ok"
#: The signal (or every beat) is below ``RhythmConfig.flat_mv``: no heart rate.
QUALITY_FLAT = "flat"
#: The beats do not stand out from the rest of the signal (or their intervals are implausible): no
#: heart rate rather than a wrong one.
QUALITY_NOISY = "noisy"
#: Fewer than ``RhythmConfig.min_beats`` beats in the window: no heart rate.
QUALITY_TOO_FEW_BEATS = "too_few_beats"
QUALITY_LEVELS = (QUALITY_OK, QUALITY_FLAT, QUALITY_NOISY, QUALITY_TOO_FEW_BEATS)

#: Order in which a lead is chosen for rhythm analysis when several are available.
_LEAD_PREFERENCE = ("II", "I", "V5", "V4", "V6", "V2", "V3", "V1", "III", "aVF", "aVR", "aVL")


# ------------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of :class:`BeatDetector` (seconds and Hz; no sampling rate here).

    - ``internal_fs``: the envelope runs at about this rate (the device rate divided by an integer).
    - ``band_hz``: band of the QRS energy filter; ``integration_s``: moving-window integration.
    - ``refractory_s``: two beats are at least this far apart (highest rate 60 / refractory_s bpm).
    - ``learning_s``: signal used to set the first signal/noise levels.
    - ``threshold``: detection threshold between noise (0) and signal (1) level;
      ``searchback_rr``: search back for a missed beat after this many mean RR intervals, accepting
      the largest candidate above ``searchback_threshold`` × threshold. Search back also takes a
      candidate that failed the T-wave test when it rises at least ``searchback_prominence`` times over
      the lowest envelope within ``refractory_s`` of it and reaches ``searchback_height`` × the last
      beat's envelope (a premature beat; a T wave is broad and has no quiet floor; 0: off).
    - ``gap_rr`` / ``gap_regular``: when a beat comes more than ``gap_rr`` mean RR intervals after the
      last one, before search back has covered that gap, and the rhythm before was regular (mean |RR(i) − RR(i − lag)| ≤ ``gap_regular`` × the
      mean RR for lag 1 or 2, over the last 8 intervals, at least 3 of them), the gap is searched back
      for a missed beat (as above, but every beat taken rises ``searchback_prominence`` times over its
      floor): a premature beat too small for the threshold, followed by its compensatory pause. Off in
      irregular rhythms (AF), where long gaps are no evidence of a missed beat (0: off).
    - ``twave_s`` / ``twave_rr`` / ``twave_ratio``: a candidate sooner than ``twave_s`` (and than
      ``twave_rr`` × the mean RR) after a beat, whose steepest slope is below ``twave_ratio`` × that
      beat's, is a T wave.
    - ``envelope_power``: the envelope integrates |derivative| ** this (1: robust to large artefacts).
    - ``level_cap``: one candidate raises the signal level by at most this factor × the level (an
      artefact does not blind the detector for the next beats).
    - ``median``: also a 3-sample median at the internal rate (off: it blunts narrow QRS complexes; the
      device-rate median that removes spikes up to 2 ms wide is always on, at every rate).
    - ``locate_before_s`` / ``locate_after_s``: where the raw-signal peak of a beat is searched around
      the envelope's estimate.
    """

    internal_fs: float = 125.0
    band_hz: tuple[float, float] = (8.0, 20.0)
    integration_s: float = 0.1
    refractory_s: float = 0.2
    learning_s: float = 2.0
    threshold: float = 0.45
    searchback_rr: float = 1.66
    searchback_threshold: float = 0.5
    twave_s: float = 0.5
    twave_ratio: float = 0.6
    envelope_power: float = 1.0
    level_cap: float = 4.0
    twave_rr: float = 0.7
    searchback_prominence: float = 10.0
    searchback_height: float = 0.4
    gap_rr: float = 1.4
    gap_regular: float = 0.2
    median: bool = False
    locate_before_s: float = 0.09
    locate_after_s: float = 0.05


@dataclass(frozen=True)
class RhythmConfig:
    """How beats become a :class:`RhythmResult`.

    - ``min_beats``: fewer beats than this → no heart rate (``too_few_beats``).
    - ``flat_mv``: a signal (or median beat) with a smaller peak-to-peak amplitude (mV) is ``flat``.
    - ``min_snr``: median beat envelope over the 80th percentile of the non-beat candidates; below it
      the window is ``noisy``. ``min_prominence`` / ``max_weak_share``: a beat is weak when its envelope
      rises less than ``min_prominence`` times over the lowest envelope within ``refractory_s`` of it
      (noise has no quiet floor between its peaks); more weak beats than ``max_weak_share`` of them make
      the window ``noisy`` (a noise burst over part of the window).
    - ``min_rr_s``: a shorter interval makes the window ``noisy`` (long ones are pauses, reported in
      ``max_rr_ms``).
    - ``max_searchback_share``: more beats found only by search back than this share → ``noisy``.
    - ``ectopic_early`` / ``ectopic_late``: a beat whose interval is below ``ectopic_early`` × the
      median RR and is followed by one above ``ectopic_late`` × the median is counted as ectopic.
    """

    min_beats: int = 4
    flat_mv: float = 0.05
    min_snr: float = 2.0
    min_prominence: float = 4.0
    max_weak_share: float = 0.2
    min_rr_s: float = 0.24
    max_searchback_share: float = 0.34
    ectopic_early: float = 0.8
    ectopic_late: float = 1.1


_DEFAULT_RHYTHM = RhythmConfig()


# ------------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------------
def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass(frozen=True)
class RhythmResult:
    """Rhythm of one window or recording on one lead.

    - ``r_peaks``: sample indices of the beats (into the analysed signal / window);
      ``beat_times_s``: their times (``t0`` + index / fs; device time in a stream).
    - ``beat_confident``: per beat, ``True`` when it cleared the adaptive threshold, ``False`` when it
      was found only by search back (weaker evidence).
    - ``rr_ms``: intervals between consecutive beats (never across a gap); ``hr_instant_bpm``: 60000 / RR.
    - ``hr_bpm``: mean heart rate (60000 / mean RR); ``sdnn_ms``, ``rmssd_ms``, ``pnn50`` (share of
      successive RR differences > 50 ms, 0–1), ``nrmssd`` (RMSSD / mean RR).
    - ``rr_irregularity``: the smallest over lags 1–3 of median |RR(i) − RR(i − lag)|, divided by the
      median RR — the AF evidence: irregularly irregular intervals give large values; one ectopic beat
      or a regular alternation (bigeminy, trigeminy) stays low.
    - ``ectopic_beats``: premature beats followed by a compensatory pause.
    - ``quality``: one of :data:`QUALITY_LEVELS`; every rate/RR number is ``None`` unless ``"ok"``.
    - ``snr``: median beat envelope / 80th percentile of the other envelope peaks (``None`` without
      beats).
    """

    lead: str
    fs: float
    r_peaks: tuple[int, ...]
    beat_times_s: tuple[float, ...]
    beat_confident: tuple[bool, ...]
    rr_ms: tuple[float, ...]
    hr_instant_bpm: tuple[float, ...]
    hr_bpm: float | None
    sdnn_ms: float | None
    rmssd_ms: float | None
    pnn50: float | None
    nrmssd: float | None
    rr_irregularity: float | None
    max_rr_ms: float | None
    ectopic_beats: int
    quality: str
    snr: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_beats(self) -> int:
        return len(self.r_peaks)

    @property
    def usable(self) -> bool:
        return self.quality == QUALITY_OK

    def to_dict(self, *, beats: bool = True) -> dict[str, Any]:
        """JSON-ready (strict: missing numbers are ``None``, never NaN)."""
        d: dict[str, Any] = {
            "lead": self.lead,
            "quality": self.quality,
            "n_beats": self.n_beats,
            "hr_bpm": _r(self.hr_bpm, 2),
            "sdnn_ms": _r(self.sdnn_ms, 2),
            "rmssd_ms": _r(self.rmssd_ms, 2),
            "pnn50": _r(self.pnn50, 4),
            "nrmssd": _r(self.nrmssd, 4),
            "rr_irregularity": _r(self.rr_irregularity, 4),
            "max_rr_ms": _r(self.max_rr_ms, 1),
            "ectopic_beats": self.ectopic_beats,
            "snr": _r(self.snr, 2),
            "notes": list(self.notes),
        }
        if beats:
            d["beat_times_s"] = [round(t, 4) for t in self.beat_times_s]
            d["rr_ms"] = [round(v, 1) for v in self.rr_ms]
        return d

    def summary(self) -> str:
        """One line for people: ``heart rate 72 bpm (12 beats, RR irregularity 0.03)``."""
        if self.hr_bpm is None:
            return f"heart rate: n/a ({self.quality}, {self.n_beats} beats)"
        extra = f", RR irregularity {self.rr_irregularity:.2f}" if self.rr_irregularity is not None else ""
        ect = f", {self.ectopic_beats} ectopic" if self.ectopic_beats else ""
        return f"heart rate {self.hr_bpm:.0f} bpm ({self.n_beats} beats{extra}{ect})"


# ------------------------------------------------------------------------------------------------------
# the streaming detector
# ------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _design(fs_i: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second-order Butterworth band-pass as one (b, a) pair and its unit-step initial state: at these
    band edges the 4th-order transfer function is well conditioned (same output as the SOS cascade to
    1e-14), and ``lfilter`` costs a fraction of ``sosfilt``'s per-call overhead."""
    from scipy.signal import butter, lfilter_zi

    hi = min(hi, 0.45 * fs_i)
    b, a = butter(2, [lo, hi], btype="band", fs=fs_i)
    return b, a, lfilter_zi(b, a)


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def _running_median(aa: np.ndarray, width: int) -> np.ndarray:
    """Median of every ``width`` (3 or 5) consecutive samples along the last axis (``width - 1`` fewer
    values): exactly the textbook min/max networks of the shifted slices, with the pairwise minima and
    maxima shared between neighbouring windows (4 or 8 passes instead of 4 or 10, fewer temporaries)."""
    mn = np.minimum(aa[..., :-1], aa[..., 1:])
    mx = np.maximum(aa[..., :-1], aa[..., 1:])
    if width == 3:  # max(min(a, b), min(max(a, b), c))
        np.minimum(mx[..., :-1], aa[..., 2:], out=mx[..., :-1])
        return np.maximum(mn[..., :-1], mx[..., :-1], out=mn[..., :-1])
    m = aa.shape[-1] - 4
    lo = np.maximum(mn[..., :m], mn[..., 2 : m + 2])  # max(min(a, b), min(c, d))
    hi = np.minimum(mx[..., :m], mx[..., 2 : m + 2])  # min(max(a, b), max(c, d))
    e = aa[..., 4:]
    t = np.maximum(e, lo)  # median3(e, lo, hi)
    np.minimum(t, hi, out=t)
    np.minimum(e, lo, out=lo)
    return np.maximum(lo, t, out=lo)


def _moving_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Sums of ``w`` consecutive samples (``x.size - w + 1`` of them) from sums over 1, 2, 4, … samples:
    about log2(w) element-wise additions, each sum from the same samples in the same order wherever it
    lies in the array (so the result does not depend on how a stream was cut)."""
    n = x.size - w + 1
    out: np.ndarray | None = None
    p, size, off = x, 1, 0
    while True:
        if w & size:
            seg = p[off : off + n]
            out = seg.copy() if out is None else np.add(out, seg, out=out)
            off += size
        if 2 * size > w:
            break
        p = p[:-size] + p[size:]
        size *= 2
    assert out is not None
    return out


_DEFAULT_DETECTOR = DetectorConfig()
_EMPTY = np.zeros(0)
_EMPTY.setflags(write=False)


def _cached_plan(fs: float, cfg: DetectorConfig) -> tuple[Any, ...]:
    try:
        return _plan_lru(fs, cfg)
    except TypeError:  # a configuration holding a list (unhashable): computed, not cached
        return _plan(fs, cfg)


def _plan(fs: float, cfg: DetectorConfig) -> tuple[Any, ...]:
    """Everything a :class:`BeatDetector` derives from its rate and configuration, computed once per
    (rate, configuration): a detector per 10-s window costs no set-up. The arrays are only read."""
    k = max(1, int(round(fs / cfg.internal_fs)))
    fs_i = fs / k
    b, a, zi0 = _design(round(fs_i, 6), float(cfg.band_hz[0]), float(cfg.band_hz[1]))
    w = max(1, int(round(cfg.integration_s * fs_i)))
    r = max(1, int(round(cfg.refractory_s * fs_i)))
    learn = max(r, int(round(cfg.learning_s * fs_i)))
    twave = int(round(cfg.twave_s * fs_i))
    # refinement at the device rate
    loc_before = int(round(cfg.locate_before_s * fs))
    loc_after = int(round(cfg.locate_after_s * fs))
    base_half = int(round(0.15 * fs))
    mk = 1 if fs < 250 else (3 if fs < 700 else 5)
    pad = (mk - 1) // 2
    woffs = np.arange(-loc_before - pad, loc_after + pad + 1)
    boffs = np.arange(-base_half, base_half + 1, max(1, int(round(fs / 250.0))))
    despike = True
    # device-rate median that removes pacing spikes up to 2 ms wide: 3 samples up to 500 Hz, 5 above
    dk = 5 if fs > 500.0 else 3
    # the envelope's fixed delay behind the signal, in internal samples (calibrated on MIT-BIH 100)
    delay_i = 1.0 + (w - 1) / 2.0 + 0.025 * fs_i + (0.5 * (dk - 1) / k if despike else 0.0)
    for arr in (b, a, zi0):
        arr.setflags(write=False)
    consts = (np.arange(-r, r + 1), np.arange(1 - w, 1), woffs, boffs, np.zeros(w - 1))
    for arr in consts:
        arr.setflags(write=False)
    roffs, woffs_i, woffs, boffs, etail0 = consts
    from scipy.ndimage import maximum_filter1d
    from scipy.signal import lfilter

    return (k, fs_i, b, a, zi0, w, r, learn, roffs, woffs_i, twave, loc_before, loc_after,
            base_half, mk, woffs, boffs, despike, dk, delay_i, lfilter, maximum_filter1d, etail0)


_plan_lru = lru_cache(maxsize=32)(_plan)


class BeatDetector:
    """R-peak detector with state: :meth:`push` chunks of one lead (mV at ``fs``) in order, get the
    absolute sample indices (from the first pushed sample) of the beats each chunk confirms.

    A beat is reported once, about ``refractory_s`` + ``integration_s`` after it happened (search back
    can report a beat up to 1.66 RR intervals late), in increasing order. The beats never depend on
    how the stream was cut. :meth:`finish` ends the record (the last beats need no later samples);
    :meth:`reset` starts a new one (after a gap) while the sample count keeps running.
    """

    def __init__(self, *, fs: float, config: DetectorConfig | None = None) -> None:
        self.fs = _check_fs(fs)
        self.config = cfg = config or _DEFAULT_DETECTOR
        (
            self.k,
            self.fs_i,
            self._b,
            self._a,
            self._zi0,
            self.w,
            self.r,
            self.learn,
            self._roffs,
            self._woffs_i,
            self.twave,
            self._loc_before,
            self._loc_after,
            self._base_half,
            self._mk,
            self._woffs,
            self._boffs,
            self._despike,
            self._dk,
            self._delay_i,
            self._lfilter,
            self._maxfilt,
            self._etail0,
        ) = _cached_plan(self.fs, cfg)
        self._cap = float(cfg.level_cap)
        self._n = 0  # native samples consumed (absolute)
        self._last_out = -(10**12)  # last reported beat (absolute)
        self.reset()

    # -- state -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new record at the current sample count (filters, levels and RR history cleared)."""
        self._seg0 = self._n  # absolute native index where this record starts
        # (the empty and zero arrays are shared and read-only: every stage replaces, never writes, them)
        self._rem = _EMPTY  # native samples not yet forming a block
        self._stail: np.ndarray | None = None  # last 2 or 4 native samples (despiking median)
        self._ni = 0  # internal samples produced in this record
        self._ytail: np.ndarray | None = None  # last 2 block means (median3)
        self._zi: np.ndarray | None = None
        self._bptail: np.ndarray | None = None  # last 2 band-passed samples
        self._etail = self._etail0
        self._env = _EMPTY  # envelope from internal index _env0
        self._ad = _EMPTY  # |derivative|, same indices as the envelope
        self._dtail = self._etail0
        self._env0 = 0
        self._next_cand = 0  # first internal index not yet examined as a candidate
        self._last_cand = -(10**9)
        self._raw = _EMPTY  # native samples from absolute index _raw0
        self._raw0 = self._n
        self._init = False
        self._spk = 0.0
        self._npk = 0.0
        self._beats_i: list[int] = []  # internal indices of beats (this record; last few kept)
        self._beat_s: list[float] = []
        self._beat_h = 0.0
        self._rr: list[int] = []
        self._rrm = 1.0 * self.fs_i  # mean of the last 8 RR intervals (1 s before there are any)
        self._ref = 0  # search-back reference (last beat or last failed search)
        # non-beat candidates after the last beat: (internal index, height, slope, envelope floor)
        self._noise: list[tuple[int, float, float, float]] = []
        self._pending: list[tuple[int, float, bool, float]] = []  # accepted, not yet located (+ floor)
        if not hasattr(self, "_info"):
            # (envelope height, confident, mV, height / envelope floor) per reported beat
            self._info: list[tuple[float, bool, float, float]] = []
            self._noise_out: list[tuple[int, float]] = []  # (abs native index, height) of non-beats

    @property
    def n_samples(self) -> int:
        """Samples consumed so far (gaps included): the absolute index of the next sample."""
        return self._n

    def take_beat_info(self) -> list[tuple[float, bool, float, float]]:
        """(envelope height, confident, peak-to-peak mV, prominence) of each beat reported since the
        last call, in the order the beats were reported (the last 8192 are kept). The prominence is the
        height over the lowest envelope within ``refractory_s`` of the beat."""
        out, self._info = self._info, []
        return out

    def take_noise(self) -> list[tuple[int, float]]:
        """(absolute index, envelope height) of the candidates classified as not a beat since the last
        call (quality evidence; the last 8192 are kept)."""
        out, self._noise_out = self._noise_out, []
        return out

    def gap(self, n_samples: int) -> np.ndarray:
        """``n_samples`` are missing: the record so far ends (its last beats are returned), the count
        moves on by ``n_samples`` and a new record starts after the gap. Nothing is interpolated."""
        out = self.finish()
        self._n += int(n_samples)
        self.reset()
        return out

    # -- public ----------------------------------------------------------------------------------------------
    def push(self, x: Any, *, last: bool = False) -> np.ndarray:
        """Feed the next samples (1-D, mV). Returns the absolute indices of newly confirmed beats.

        ``last=True``: these are the record's last samples (the same as ``push(x)`` then
        :meth:`finish`, in one pass)."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1:
            raise SignalShapeError(f"BeatDetector.push takes one lead (1-D), got shape {a.shape}")
        if a.size and not np.isfinite(a).all():
            raise NonFiniteSignalError("BeatDetector.push: samples must be finite (report a gap instead)")
        return self._push(a, last)

    def _push(self, a: np.ndarray, last: bool) -> np.ndarray:
        if a.size == 0:
            return self.finish() if last else np.zeros(0, dtype=np.int64)
        self._n += a.size
        self._raw = np.concatenate((self._raw, a)) if self._raw.size else a
        self._feed(a)
        self._decide(final=last)
        return self._locate()

    def finish(self) -> np.ndarray:
        """The record ends here: decide the remaining candidates with the samples there are."""
        self._decide(final=True)
        out = self._locate()
        return out

    # -- stages ------------------------------------------------------------------------------------------------
    def _feed(self, a: np.ndarray) -> None:
        k = self.k
        if self._despike:  # median at the device rate: spikes up to 2 ms wide (pacing, ESD) go
            t = self._dk - 1
            if self._stail is None:
                self._stail = np.full(t, a[0])
            aa = np.concatenate((self._stail, a))
            self._stail = aa[-t:].copy()
            a = _running_median(aa, self._dk)
        if self._rem.size:
            a = np.concatenate((self._rem, a))
        nb = a.size // k
        self._rem = a[nb * k :].copy()
        if nb == 0:
            return
        if k > 1:  # element-wise sums (not a BLAS product: its summation order may depend on the position
            # of a block in the call, and the beats must not depend on chunking): pairs while k is even
            y, kk = a[: nb * k], k
            while kk % 2 == 0:
                y = y[0::2] + y[1::2]
                kk //= 2
            if kk > 1:
                z = y[0::kk].copy()
                for i in range(1, kk):
                    z += y[i::kk]
                y = z
            y *= 1.0 / k
        else:
            y = a[:nb].copy()
        if self._ytail is None:
            self._ytail = np.array([y[0], y[0]])
            self._zi = self._zi0 * y[0]
        yy = np.concatenate((self._ytail, y))
        self._ytail = yy[-2:].copy()
        m = _median3(yy[:-2], yy[1:-1], yy[2:]) if self.config.median else yy[1:-1]
        bp, self._zi = self._lfilter(self._b, self._a, m, zi=self._zi)
        if self._bptail is None:
            self._bptail = np.array([bp[0], bp[0]])
        bb = np.concatenate((self._bptail, bp))
        self._bptail = bb[-2:].copy()
        d = bb[2:] - bb[:-2]
        pw = self.config.envelope_power
        e = d * d if pw == 2.0 else np.abs(d) if pw == 1.0 else np.abs(d) ** pw
        ee = np.concatenate((self._etail, e))
        ad = ee if pw == 1.0 else np.concatenate((self._dtail, np.abs(d)))
        if self.w > 1:
            self._etail = ee[-(self.w - 1) :].copy()
            self._dtail = self._etail if pw == 1.0 else ad[-(self.w - 1) :].copy()
            env = _moving_sum(ee, self.w)
            env *= 1.0 / self.w
        else:
            env = ee
        ad = ad[self.w - 1 :]
        self._env = np.concatenate((self._env, env)) if self._env.size else env
        self._ad = np.concatenate((self._ad, ad)) if self._ad.size else ad
        self._ni += nb

    def _candidates(self, final: bool) -> list[tuple[int, float, float, float]]:
        """Local maxima (±r) of the envelope not yet examined, with their full right context."""
        env, e0, r = self._env, self._env0, self.r
        end = self._ni if final else self._ni - r  # examine internal indices < end
        lo = self._next_cand
        if end <= lo:
            return []
        a = max(lo - r, e0)
        seg = env[a - e0 :]
        i0, i1 = lo - a, end - a
        self._next_cand = end
        # a maximum over ±r is first of all a maximum over its two neighbours: test those few only
        v = seg[i0:i1]
        left = seg[i0 - 1 : i1 - 1] if i0 >= 1 else np.concatenate(([-np.inf], seg[: i1 - 1]))
        right = seg[i0 + 1 : i1 + 1] if i1 < seg.size else np.concatenate((seg[i0 + 1 : i1], [-np.inf]))
        idx = np.flatnonzero((v >= left) & (v >= right)) + i0
        if not idx.size:
            return []
        # the largest envelope within ±r of each sample (edges held), O(n) in C
        top = seg[idx] >= self._maxfilt(seg, 2 * r + 1, mode="nearest")[idx]
        idx = idx[top]
        if not idx.size:
            return []
        # steepest slope in each candidate's integration window (the T-wave test)
        rel = (idx + (a - e0))[:, None] + self._woffs_i[None, :]
        slopes = self._ad[np.maximum(rel, 0)].max(axis=1).tolist()
        heights = seg[idx].tolist()
        # how far the envelope falls around the candidate (beats stand on a low floor, noise does not)
        around = seg[np.minimum(np.maximum(idx[:, None] + self._roffs[None, :], 0), seg.size - 1)]
        floor = around.min(axis=1).tolist()
        out = []
        last = self._last_cand
        for j, h, sl, fl in zip((idx + a).tolist(), heights, slopes, floor):
            if j - last > r:
                last = j
                out.append((j, h, sl, fl))
        self._last_cand = last
        return out

    def _initialise(self) -> None:
        e0 = self._env0
        first = self._env[: max(1, min(self.learn, self._ni) - e0)]
        self._spk = 0.5 * float(first.max()) if first.size else 0.0
        self._npk = 0.5 * float(first.sum() / first.size) if first.size else 0.0  # == first.mean()
        self._init = True

    def _rr_mean(self) -> float:
        return self._rrm

    def _thr(self) -> float:
        return self._npk + self.config.threshold * (self._spk - self._npk)

    def _is_twave(self, p: int, sl: float) -> bool:
        """Soon after a beat and much less steep than it: a T wave (Pan & Tompkins' slope test)."""
        if not self._beats_i:
            return False
        window = min(self.twave, self.config.twave_rr * self._rr_mean()) if self._rr else self.twave
        return p - self._beats_i[-1] < window and sl < self.config.twave_ratio * self._beat_s[-1]

    def _accept(self, p: int, h: float, sl: float, confident: bool, floor: float) -> None:
        bi = self._beats_i
        if bi:
            rr = self._rr
            rr.append(p - bi[-1])
            if len(rr) > 16:
                del rr[:-8]
            last8 = rr[-8:]
            self._rrm = sum(last8) / len(last8)
        bi.append(p)
        self._beat_s.append(sl)
        self._beat_h = h
        if len(bi) > 4:
            del bi[:-2]
            del self._beat_s[:-2]
        self._ref = p
        if self._noise:
            self._noise = [c for c in self._noise if c[0] > p]
        self._pending.append((p, h, confident, floor))

    def _regular(self) -> bool:
        """The last (up to 8, at least 3) RR intervals are regular enough for a gap search back."""
        rr = self._rr[-8:]
        n = len(rr)
        if n < 3:
            return False
        d = min([sum([abs(b - a) for a, b in zip(rr, rr[lag:])]) / (n - lag) for lag in (1, 2)])
        return d <= self.config.gap_regular * self._rrm

    def _deadline(self) -> int:
        return self._ref + int(self.config.searchback_rr * self._rr_mean())

    def _searchback(self, before: int | None = None) -> None:
        """Search back to the deadline (nothing found: the levels fall and the search moves on), or,
        with ``before``, the gap before a just-accepted beat there (nothing found: nothing changes)."""
        dl = self._deadline() if before is None else before
        thr2 = self.config.searchback_threshold * self._thr()
        best: tuple[int, float, float, float] | None = None
        c = self.config
        pmin, hmin = c.searchback_prominence, c.searchback_height * self._beat_h
        pgap = 0.0 if before is None else pmin
        for cand in self._noise:
            q, g, sl, fl = cand
            if q >= dl:
                break
            if (
                g > thr2
                and g >= pgap * fl
                and (not self._is_twave(q, sl) or (pmin > 0 and g >= hmin and g >= pmin * fl))
                and (best is None or g > best[1])
            ):
                best = cand
        if best is not None:
            self._accept(best[0], best[1], best[2], False, best[3])
            self._spk = 0.25 * min(best[1], self._cap * self._spk) + 0.75 * self._spk
        elif before is None:
            self._ref = dl
            self._noise = [c for c in self._noise if c[0] >= dl]
            self._spk = max(self._npk, 0.5 * self._spk)

    def _decide(self, final: bool) -> None:
        if not self._init:
            if self._ni < self.learn and not final:
                return
            if self._ni == 0:
                return
            self._initialise()
        cands = self._candidates(final)
        avail = self._ni if final else self._ni - self.r
        c = self.config
        frac, sb_rr, cap = c.threshold, c.searchback_rr, self._cap
        tw_ratio, tw_rr, tw_s = c.twave_ratio, c.twave_rr, self.twave
        gap_rr = c.gap_rr
        for cand in cands:  # the same tests as _deadline / _thr / _is_twave, inlined (hot loop)
            p, h, sl, fl = cand
            while p >= self._ref + int(sb_rr * self._rrm):
                self._searchback()
            spk, npk = self._spk, self._npk
            if h > npk + frac * (spk - npk):
                bi = self._beats_i
                twave = bool(bi) and (
                    p - bi[-1] < (min(tw_s, tw_rr * self._rrm) if self._rr else tw_s)
                    and sl < tw_ratio * self._beat_s[-1]
                )
            else:
                twave = True
            if not twave:
                # a long gap after a regular run that search back has not yet covered: a missed
                # premature beat before this one? (bi is set: a beat passed the threshold)
                if (
                    gap_rr > 0
                    and self._rr
                    and self._noise
                    and self._ref == bi[-1]
                    and p - bi[-1] > gap_rr * self._rrm
                    and self._regular()
                ):
                    self._searchback(p)
                    spk = self._spk
                self._accept(p, h, sl, True, fl)
                self._spk = 0.125 * (h if h < cap * spk else cap * spk) + 0.875 * spk
            else:
                self._noise.append(cand)
                self._record_noise(p, h)
                self._npk = 0.125 * (h if h < spk else spk) + 0.875 * npk
        while self._deadline() <= avail:
            self._searchback()
        # trim the envelope: keep what the next candidates' left context needs
        keep_from = max(self._env0, self._next_cand - max(self.r, self.w) - 1)
        if keep_from > self._env0 and self._init:
            self._env = self._env[keep_from - self._env0 :]
            self._ad = self._ad[keep_from - self._env0 :]
            self._env0 = keep_from

    def _record_noise(self, p: int, h: float) -> None:
        self._noise_out.append((self._seg0 + int(round((p - self._delay_i) * self.k)), h))
        if len(self._noise_out) > 8192:
            del self._noise_out[:-4096]

    def _locate(self) -> np.ndarray:
        """Place the pending beats on the largest deflection of the raw signal; trim the raw buffer."""
        pending = self._pending
        if pending:
            k, s0, dl, half = self.k, self._seg0, self._delay_i, (self.k - 1) / 2.0
            est_l = [round(s0 + (p - dl) * k + half) for p, _, _, _ in pending]
            est = np.array(est_l, dtype=np.int64)
            raw, r0, n = self._raw, self._raw0, self._n
            lo_i, hi_i = max(r0, self._seg0), n - 1
            e_lo, e_hi = min(est_l), max(est_l)
            boffs, woffs = self._boffs, self._woffs
            # baseline: the median of ±150 ms around the estimate (every 4 ms)
            er = (est - r0)[:, None]
            if e_lo + int(boffs[0]) >= lo_i and e_hi + int(boffs[-1]) <= hi_i:
                bidx = er + boffs
            else:
                bidx = np.minimum(np.maximum(est[:, None] + boffs, lo_i), hi_i) - r0
            bseg = raw[bidx]
            hm = bseg.shape[1] // 2
            base = np.partition(bseg, hm, axis=1)[:, hm : hm + 1]
            # the search window (with the median's half width on both sides), baseline removed
            mk = self._mk
            inside = e_lo + int(woffs[0]) >= lo_i and e_hi + int(woffs[-1]) <= hi_i
            idx = er + woffs if inside else np.minimum(np.maximum(est[:, None] + woffs, lo_i), hi_i) - r0
            s = raw[idx]
            s -= base
            win = _running_median(s, mk) if mk > 1 else s
            j = np.abs(win).argmax(axis=1)
            j += (mk - 1) // 2
            loc = (est + woffs[j] if inside else idx[np.arange(len(j)), j] + r0).tolist()
            amp = (win.max(axis=1) - win.min(axis=1)).tolist()
            # keep order and spacing
            last = self._last_out
            min_gap = int(0.5 * self.config.refractory_s * self.fs)
            kept = []
            info = self._info
            for b, (_, h, conf, fl), am in zip(loc, pending, amp):
                if b - last >= min_gap:
                    last = b
                    kept.append(b)
                    info.append((h, conf, am, h / fl if fl > 0 else 999.0))
            self._last_out = last
            if len(info) > 8192:
                del info[:-4096]
            out = np.array(kept, dtype=np.int64)
            self._pending = []
        else:
            out = np.zeros(0, dtype=np.int64)
        # raw samples still needed: from the earliest beat that can still be accepted (search back)
        if not self._init:
            return out
        oldest = min(self._ref, self._next_cand - self.r)
        if self._noise:  # in index order
            oldest = min(oldest, self._noise[0][0])
        need = self._seg0 + int((oldest - self._delay_i) * self.k) - self._base_half - self._loc_before - self.k
        need = min(need, self._n)
        if need > self._raw0:
            self._raw = self._raw[need - self._raw0 :]
            self._raw0 = need
        return out


# ------------------------------------------------------------------------------------------------------
# beats → numbers
# ------------------------------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    m = len(v) // 2
    return float(v[m]) if len(v) % 2 else 0.5 * (float(v[m - 1]) + float(v[m]))


def summarise_beats(
    r_peaks: Sequence[int] | np.ndarray,
    *,
    fs: float,
    lead: str,
    t0: float = 0.0,
    segments: Sequence[int] | np.ndarray | None = None,
    confident: Sequence[bool] | None = None,
    heights: Sequence[float] | None = None,
    noise_heights: Sequence[float] | None = None,
    amplitudes: Sequence[float] | None = None,
    prominences: Sequence[float] | None = None,
    signal_ptp_mv: float | None = None,
    config: RhythmConfig | None = None,
    notes: Sequence[str] = (),
) -> RhythmResult:
    """Heart rate, HRV and RR irregularity from beat positions (sample indices at ``fs``).

    ``segments``: a record id per beat (intervals are taken only between beats of the same record, so
    never across a gap). ``heights`` / ``noise_heights`` (detector envelope of beats and of the other
    candidates), ``amplitudes`` (mV around each beat) and ``signal_ptp_mv`` feed the quality flag.
    """
    cfg = config or _DEFAULT_RHYTHM
    pl: list[int] = np.asarray(r_peaks, dtype=np.int64).tolist()
    n = len(pl)
    conf = tuple(map(bool, confident)) if confident is not None else (True,) * n
    times = tuple([t0 + i / fs for i in pl])
    scale = 1000.0 / fs
    if segments is not None and n > 1:
        sg = list(segments)
        rl = [(b - a) * scale for a, b, sa, sb in zip(pl, pl[1:], sg, sg[1:]) if sa == sb]
    else:
        rl = [(b - a) * scale for a, b in zip(pl, pl[1:])]
    quality = QUALITY_OK
    snr: float | None = None
    notes_l = list(notes)
    if heights is not None and n:
        hb = _median(heights)
        nh = sorted(noise_heights) if noise_heights is not None else []
        ref = float(nh[min(len(nh) - 1, int(0.8 * len(nh)))]) if nh else 0.0
        snr = hb / ref if ref > 0 else (math.inf if hb > 0 else 0.0)
        if not math.isfinite(snr):
            snr = 999.0
    flat = signal_ptp_mv is not None and signal_ptp_mv < cfg.flat_mv
    if amplitudes is not None and n and _median(amplitudes) < cfg.flat_mv:
        flat = True
    n_sb = conf.count(False)
    if flat:
        quality = QUALITY_FLAT
    elif n < cfg.min_beats or len(rl) < cfg.min_beats - 1:
        quality = QUALITY_TOO_FEW_BEATS
    elif prominences is not None and n and (n_weak := sum([1 for v in prominences if v < cfg.min_prominence])) > (
        cfg.max_weak_share * n
    ):
        quality = QUALITY_NOISY
        notes_l.append(
            f"{n_weak} of {n} beats rise less than {cfg.min_prominence:g}x over their surroundings "
            f"(median {_median(prominences):.1f}x)"
        )
    elif snr is not None and snr < cfg.min_snr:
        quality = QUALITY_NOISY
        notes_l.append(f"beats stand {snr:.1f}x over the other peaks (< {cfg.min_snr})")
    elif rl and min(rl) < cfg.min_rr_s * 1000.0:
        quality = QUALITY_NOISY
        notes_l.append(f"an RR interval of {min(rl):.0f} ms")
    elif n and n_sb > cfg.max_searchback_share * n:
        quality = QUALITY_NOISY
        notes_l.append(f"{n_sb} of {n} beats found only by search back")
    ok = quality == QUALITY_OK
    hr = sdnn = rmssd = pnn50 = nrmssd = irr = mx = None
    ectopic = 0
    inst: tuple[float, ...] = ()
    if ok and rl:
        nr = len(rl)
        mean_rr = sum(rl) / nr
        hr = 60000.0 / mean_rr
        inst = tuple([60000.0 / v for v in rl])
        mx = max(rl)
        sdnn = math.sqrt(sum([(v - mean_rr) ** 2 for v in rl]) / (nr - 1)) if nr > 1 else None
        if nr > 1:
            dl = [b - a for a, b in zip(rl, rl[1:])]
            rmssd = math.sqrt(sum([v * v for v in dl]) / len(dl))
            pnn50 = sum([1 for v in dl if abs(v) > 50.0]) / len(dl)
            nrmssd = rmssd / mean_rr
            med = _median(rl)
            # irregularly irregular: successive differences large at every lag (1–3), so a regular
            # alternation (bigeminy, trigeminy) or an isolated ectopic beat stays low
            lag1 = _median([abs(v) for v in dl])
            irr = (
                min(
                    [lag1]
                    + [_median([abs(b - a) for a, b in zip(rl, rl[lag:])]) for lag in range(2, min(3, nr - 1) + 1)]
                )
                / med
            )
            lo_, hi_ = cfg.ectopic_early * med, cfg.ectopic_late * med
            ectopic = sum([1 for a, b in zip(rl, rl[1:]) if a < lo_ and b > hi_])
    return RhythmResult(
        lead=lead,
        fs=float(fs),
        r_peaks=tuple(pl),
        beat_times_s=times,
        beat_confident=conf,
        rr_ms=tuple(rl),
        hr_instant_bpm=inst,
        hr_bpm=hr,
        sdnn_ms=sdnn,
        rmssd_ms=rmssd,
        pnn50=pnn50,
        nrmssd=nrmssd,
        rr_irregularity=irr,
        max_rr_ms=mx,
        ectopic_beats=ectopic,
        quality=quality,
        snr=snr,
        notes=tuple(notes_l),
    )


def _one_lead(signal: Any) -> tuple[np.ndarray, float]:
    """The signal as 1-D float64 and its peak-to-peak amplitude (non-finite samples refused)."""
    x = np.asarray(signal)
    if x.dtype.kind not in "fiu":
        raise SignalShapeError(f"signal must be numeric, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise SignalShapeError(f"rhythm analysis takes one lead: a 1-D array (or (1, n)), got shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if not x.size:
        return x, 0.0
    # max and min propagate NaN, and Inf makes their difference non-finite: one pass each, no mask
    ptp = float(x.max()) - float(x.min())
    if not math.isfinite(ptp):
        raise NonFiniteSignalError("signal holds NaN or Inf samples")
    return x, ptp


def detect_beats(signal: Any, *, fs: float, config: DetectorConfig | None = None) -> np.ndarray:
    """R-peak sample indices of a whole one-lead record (mV at ``fs``)."""
    return BeatDetector(fs=fs, config=config)._push(_one_lead(signal)[0], True)


def analyse(
    signal: Any,
    *,
    fs: float,
    lead: str,
    t0: float = 0.0,
    config: RhythmConfig | None = None,
    detector: DetectorConfig | None = None,
) -> RhythmResult:
    """Beats, heart rate, HRV, RR irregularity and a quality flag for one lead (1-D, mV at ``fs`` Hz).

    ``lead`` names the lead (canonical name in the result); ``t0`` is the time of the first sample
    (``beat_times_s``). A flat or noisy signal gives ``hr_bpm=None`` with the reason in ``quality``.
    """
    name = canonical_lead(lead)
    det = BeatDetector(fs=fs, config=detector)  # checks the rate
    fs = det.fs
    x, ptp = _one_lead(signal)
    beats = det._push(x, True)
    info = det.take_beat_info()
    heights, confident, amplitudes, prominences = zip(*info) if info else ((), (), (), ())
    return summarise_beats(
        beats,
        fs=fs,
        lead=name,
        t0=t0,
        confident=confident,
        heights=heights,
        noise_heights=[h for _, h in det.take_noise()],
        amplitudes=amplitudes,
        prominences=prominences,
        signal_ptp_mv=ptp,
        config=config,
    )


def choose_rhythm_lead(leads: Sequence[str]) -> str:
    """The lead rhythm analysis uses among ``leads`` (II, then I, then the chest leads …)."""
    names = [canonical_lead(n) for n in leads]
    if not names:
        raise SignalShapeError("no lead to analyse")
    for pref in _LEAD_PREFERENCE:
        if pref in names:
            return pref
    return names[0]


# ------------------------------------------------------------------------------------------------------
# the stream side: beats across windows, rate events
# ------------------------------------------------------------------------------------------------------
def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


class RhythmTracker:
    """Beats of one lead of a live stream, kept across windows (a :class:`StreamSession` owns one).

    :meth:`push` samples (with a per-sample bad mask: lead off / non-finite samples count as a gap),
    :meth:`gap` missing samples, :meth:`reset` after a clock reset; :meth:`window` summarises the beats
    confirmed so far in the last ``n`` samples. Intervals are never taken across a gap.
    """

    def __init__(
        self,
        *,
        fs: float,
        lead: str,
        config: RhythmConfig | None = None,
        detector: DetectorConfig | None = None,
        keep_s: float = 30.0,
    ) -> None:
        self.fs = _check_fs(fs)
        self.lead = canonical_lead(lead)
        self.config = config or RhythmConfig()
        self._det = BeatDetector(fs=self.fs, config=detector)
        self._seg = 0
        # samples wait here and the detector runs on them in one call per window (or every few
        # seconds): the same beats as sample-by-sample (the detector does not depend on chunking), at a
        # fraction of the per-call cost for a patch that sends small chunks
        self._pend: list[np.ndarray] = []
        self._pend_n = 0
        self._batch = int(2.0 * self.fs)
        self._keep = int(keep_s * self.fs)
        self._beats: list[tuple[int, int, float, bool, float, float]] = []  # (idx, seg, height, conf, mV, prom)
        self._noise: list[tuple[int, float]] = []

    @property
    def n_samples(self) -> int:
        return self._det.n_samples + self._pend_n

    def _run(self) -> None:
        if self._pend:
            x = self._pend[0] if len(self._pend) == 1 else np.concatenate(self._pend)
            self._pend, self._pend_n = [], 0
            self._collect(self._det._push(x, False))

    def _collect(self, beats: np.ndarray) -> None:
        info = self._det.take_beat_info()
        for i, (h, c, a, pr) in zip(beats.tolist(), info[-len(beats) :] if len(beats) else []):
            self._beats.append((i, self._seg, h, c, a, pr))
        self._noise.extend(self._det.take_noise())
        cut = self._det.n_samples - self._keep
        if self._beats and self._beats[0][0] < cut:
            self._beats = [b for b in self._beats if b[0] >= cut]
        if self._noise and self._noise[0][0] < cut:
            self._noise = [q for q in self._noise if q[0] >= cut]

    def push(self, x: np.ndarray, bad: np.ndarray | None = None) -> None:
        """Append samples of the tracked lead (``bad``: non-zero where a sample is unusable)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise SignalShapeError(f"RhythmTracker.push takes one lead (1-D), got shape {x.shape}")
        if bad is not None and np.any(bad):
            ok = np.asarray(bad) == 0
            edges = np.flatnonzero(np.diff(np.concatenate(([False], ok, [False])).astype(np.int8)))
            pos = 0
            for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                if a > pos:
                    self.gap(a - pos)
                self._append(x[a:b])
                pos = b
            if pos < x.size:
                self.gap(x.size - pos)
            return
        self._append(x)

    def _append(self, x: np.ndarray) -> None:
        if not np.isfinite(x).all():
            raise NonFiniteSignalError("RhythmTracker.push: non-finite samples must be marked bad")
        self._pend.append(x.copy())
        self._pend_n += x.size
        if self._pend_n >= self._batch:
            self._run()

    def gap(self, n_samples: int) -> None:
        """``n_samples`` missing: beats before and after are separate records."""
        self._run()
        self._collect(self._det.gap(n_samples))
        self._seg += 1

    def reset(self) -> None:
        """Forget every beat (the device clock jumped back); the sample count keeps running."""
        self._run()
        self._det.gap(0)
        self._det.take_beat_info()
        self._det.take_noise()
        self._seg += 1
        self._beats = []
        self._noise = []

    def window(self, n: int, *, t_end: float) -> RhythmResult:
        """Rhythm of the last ``n`` samples (ending at device time ``t_end``) from the beats confirmed
        so far (the newest beat is confirmed about 0.3 s after it happened)."""
        self._run()
        end = self._det.n_samples
        start = end - int(n)
        # beats and non-beat candidates are kept in index order, all before ``end``
        bs = self._beats[bisect_left(self._beats, start, key=_first) :]
        noise = [h for _, h in self._noise[bisect_left(self._noise, start, key=_first) :]]
        idx, seg, heights, conf, amps, proms = zip(*bs) if bs else ((), (), (), (), (), ())
        return summarise_beats(
            [i - start for i in idx],
            fs=self.fs,
            lead=self.lead,
            t0=t_end - n / self.fs,
            segments=seg,
            confident=conf,
            heights=heights,
            noise_heights=noise,
            amplitudes=amps,
            prominences=proms,
            config=self.config,
        )


@dataclass(frozen=True)
class RateEventRule:
    """A heart-rate event with hysteresis on one number of each window's :class:`RhythmResult`.

    ``measure`` is ``"hr_bpm"`` or ``"max_rr_s"``; with ``above=True`` the event starts after
    ``min_on_windows`` consecutive windows with the measure ≥ ``on`` and ends after ``min_off_windows``
    with it ≤ ``off`` (``above=False``: ≤ ``on`` / ≥ ``off``). Windows without a usable rhythm (quality
    not ``ok``) neither confirm nor break a run.
    """

    label: str
    measure: str
    above: bool
    on: float
    off: float
    min_on_windows: int = 2
    min_off_windows: int = 2

    def __post_init__(self) -> None:
        if self.measure not in ("hr_bpm", "max_rr_s"):
            raise ValueError(f"RateEventRule.measure must be 'hr_bpm' or 'max_rr_s', got {self.measure!r}")
        if (self.above and not self.off < self.on) or (not self.above and not self.off > self.on):
            raise ValueError(f"RateEventRule({self.label!r}): off must lie on the near side of on (hysteresis)")
        if self.min_on_windows < 1 or self.min_off_windows < 1:
            raise ValueError("RateEventRule min_on_windows and min_off_windows must be >= 1")

    def value(self, r: RhythmResult) -> float | None:
        if not r.usable:
            return None
        if self.measure == "hr_bpm":
            return r.hr_bpm
        return None if r.max_rr_ms is None else r.max_rr_ms / 1000.0

    @property
    def unit(self) -> str:
        return "bpm" if self.measure == "hr_bpm" else "s"


#: Bradycardia < 50 bpm (ends ≥ 55), tachycardia > 100 bpm (ends ≤ 95), pause: an RR interval ≥ 2.5 s
#: (ends after two windows with every interval ≤ 2.0 s).
DEFAULT_RATE_EVENTS = (
    RateEventRule("bradycardia", "hr_bpm", above=False, on=50.0, off=55.0),
    RateEventRule("tachycardia", "hr_bpm", above=True, on=100.0, off=95.0),
    RateEventRule("pause", "max_rr_s", above=True, on=2.5, off=2.0, min_on_windows=1),
)


class RateEventDetector:
    """Hysteresis state machine for one :class:`RateEventRule`; feed windows in time order."""

    def __init__(self, rule: RateEventRule, device_id: str | None = None) -> None:
        self.rule = rule
        self.device_id = device_id
        self._h = Hysteresis()

    @property
    def active(self) -> bool:
        return self._h.active

    def update(self, index: int, t_start: float, t_end: float, rhythm: RhythmResult | None) -> RhythmEvent | None:
        from ._stream_types import RhythmEvent

        v = self.rule.value(rhythm) if rhythm is not None else None
        if v is None:
            return None
        r = self.rule
        if self.active:
            t = self._h.step(v <= r.off if r.above else v >= r.off, r.min_off_windows, t_start, t_end)
        else:
            t = self._h.step(v >= r.on if r.above else v <= r.on, r.min_on_windows, t_start, t_end)
        if t is None:
            return None
        return RhythmEvent(
            kind="started" if self.active else "ended",
            label=r.label,
            label_set="rhythm",
            t=t,
            t_confirmed=t_end,
            probability=None,
            window_index=index,
            device_id=self.device_id,
            value=float(v),
            unit=r.unit,
        )
