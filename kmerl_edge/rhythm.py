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
rhythm``): the signal is block-averaged to about 125 Hz, median-filtered (pacing spikes), band-passed
(5–18 Hz), differentiated, squared and integrated over 100 ms; local maxima of that envelope are
classified with adaptive signal / noise levels, a T-wave check and a search back after 1.66 mean RR
intervals; each beat is then placed on the largest deflection of the raw signal at the device rate.
Every stage is causal and carries its state, so a stream cut anywhere gives the same beats as the
whole record. Polarity and scale do not change the beats (all thresholds are relative); absolute
levels (mV) are used only to call a window flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ._errors import NonFiniteSignalError, SignalShapeError
from ._leads import canonical_lead
from ._preprocess import _check_fs

__all__ = [
    "DetectorConfig",
    "RhythmConfig",
    "RhythmResult",
    "BeatDetector",
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
      the largest candidate above ``searchback_threshold`` × threshold.
    - ``twave_s`` / ``twave_ratio``: a candidate this soon after a beat with less than this share of
      its envelope is a T wave.
    """

    internal_fs: float = 125.0
    band_hz: tuple[float, float] = (5.0, 18.0)
    integration_s: float = 0.1
    refractory_s: float = 0.2
    learning_s: float = 2.0
    threshold: float = 0.25
    searchback_rr: float = 1.66
    searchback_threshold: float = 0.5
    twave_s: float = 0.36
    twave_ratio: float = 0.5
    locate_before_s: float = 0.09
    locate_after_s: float = 0.05


@dataclass(frozen=True)
class RhythmConfig:
    """How beats become a :class:`RhythmResult`.

    - ``min_beats``: fewer beats than this → no heart rate (``too_few_beats``).
    - ``flat_mv``: a signal (or median beat) with a smaller peak-to-peak amplitude (mV) is ``flat``.
    - ``min_snr``: median beat envelope over the 80th percentile of the non-beat candidates; below it
      the window is ``noisy``.
    - ``min_rr_s`` / ``max_rr_s``: intervals outside this range make the window ``noisy``
      (except ``max_rr_s`` is a pause: reported in ``max_rr_ms``, not a quality problem).
    - ``max_searchback_share``: more beats found only by search back than this share → ``noisy``.
    - ``ectopic_early`` / ``ectopic_late``: a beat whose interval is below ``ectopic_early`` × the
      median RR and is followed by one above ``ectopic_late`` × the median is counted as ectopic.
    """

    min_beats: int = 4
    flat_mv: float = 0.05
    min_snr: float = 2.5
    min_rr_s: float = 0.24
    max_searchback_share: float = 0.34
    ectopic_early: float = 0.8
    ectopic_late: float = 1.1


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
    - ``rr_irregularity``: median |ΔRR| / median RR — the AF evidence (irregularly irregular intervals
      give large values; one ectopic beat in a regular rhythm barely moves it).
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
def _design(fs_i: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import butter, sosfilt_zi

    hi = min(hi, 0.45 * fs_i)
    sos = butter(2, [lo, hi], btype="band", fs=fs_i, output="sos")
    return sos, sosfilt_zi(sos)


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


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
        self.config = cfg = config or DetectorConfig()
        self.k = max(1, int(round(self.fs / cfg.internal_fs)))
        self.fs_i = self.fs / self.k
        self._sos, self._zi0 = _design(round(self.fs_i, 6), float(cfg.band_hz[0]), float(cfg.band_hz[1]))
        self.w = max(1, int(round(cfg.integration_s * self.fs_i)))
        self.r = max(1, int(round(cfg.refractory_s * self.fs_i)))
        self.learn = max(self.r, int(round(cfg.learning_s * self.fs_i)))
        self.twave = int(round(cfg.twave_s * self.fs_i))
        # refinement at the device rate
        self._loc_before = int(round(cfg.locate_before_s * self.fs))
        self._loc_after = int(round(cfg.locate_after_s * self.fs))
        self._base_half = int(round(0.15 * self.fs))
        self._mk = 1 if self.fs < 250 else (3 if self.fs < 700 else 5)
        self._n = 0  # native samples consumed (absolute)
        self._last_out = -(10**12)  # last reported beat (absolute)
        # the envelope's fixed delay behind the signal, in internal samples (calibrated on MIT-BIH 100)
        self._delay_i = 1.0 + (self.w - 1) / 2.0 + 0.025 * self.fs_i
        self.reset()

    # -- state -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new record at the current sample count (filters, levels and RR history cleared)."""
        self._seg0 = self._n  # absolute native index where this record starts
        self._rem = np.zeros(0)  # native samples not yet forming a block
        self._ni = 0  # internal samples produced in this record
        self._ytail: np.ndarray | None = None  # last 2 block means (median3)
        self._zi: np.ndarray | None = None
        self._bptail: np.ndarray | None = None  # last 2 band-passed samples
        self._etail = np.zeros(self.w - 1)
        self._env = np.zeros(0)  # envelope from internal index _env0
        self._env0 = 0
        self._next_cand = 0  # first internal index not yet examined as a candidate
        self._last_cand = -(10**9)
        self._raw = np.zeros(0)  # native samples from absolute index _raw0
        self._raw0 = self._n
        self._init = False
        self._spk = 0.0
        self._npk = 0.0
        self._beats_i: list[int] = []  # internal indices of beats (this record; last few kept)
        self._beat_h: list[float] = []
        self._rr: list[int] = []
        self._ref = 0  # search-back reference (last beat or last failed search)
        self._noise: list[tuple[int, float]] = []  # non-beat candidates after the last beat
        self._pending: list[tuple[int, float, bool]] = []  # accepted, not yet located
        self.beat_heights: list[float] = []  # envelope height of each reported beat (all records)
        self.beat_confident: list[bool] = []
        self.noise_heights: list[tuple[int, float]] = []  # (abs native index, height) of non-beats
        self.beat_amplitudes: list[float] = []  # peak-to-peak mV around each reported beat

    @property
    def n_samples(self) -> int:
        return self._n

    # -- public ----------------------------------------------------------------------------------------------
    def push(self, x: Any) -> np.ndarray:
        """Feed the next samples (1-D, mV). Returns the absolute indices of newly confirmed beats."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1:
            raise SignalShapeError(f"BeatDetector.push takes one lead (1-D), got shape {a.shape}")
        if a.size and not np.isfinite(a).all():
            raise NonFiniteSignalError("BeatDetector.push: samples must be finite (report a gap instead)")
        if a.size == 0:
            return np.zeros(0, dtype=np.int64)
        self._n += a.size
        self._raw = np.concatenate((self._raw, a)) if self._raw.size else a
        self._feed(a)
        self._decide(final=False)
        return self._locate()

    def finish(self) -> np.ndarray:
        """The record ends here: decide the remaining candidates with the samples there are."""
        self._decide(final=True)
        out = self._locate()
        return out

    # -- stages ------------------------------------------------------------------------------------------------
    def _feed(self, a: np.ndarray) -> None:
        k = self.k
        if self._rem.size:
            a = np.concatenate((self._rem, a))
        nb = a.size // k
        self._rem = a[nb * k :].copy()
        if nb == 0:
            return
        y = a[: nb * k].reshape(nb, k).mean(axis=1) if k > 1 else a[:nb].copy()
        if self._ytail is None:
            self._ytail = np.array([y[0], y[0]])
            self._zi = self._zi0 * y[0]
        yy = np.concatenate((self._ytail, y))
        self._ytail = yy[-2:].copy()
        m = _median3(yy[:-2], yy[1:-1], yy[2:])
        from scipy.signal import sosfilt

        bp, self._zi = sosfilt(self._sos, m, zi=self._zi)
        if self._bptail is None:
            self._bptail = np.array([bp[0], bp[0]])
        bb = np.concatenate((self._bptail, bp))
        self._bptail = bb[-2:].copy()
        d = bb[2:] - bb[:-2]
        e = d * d
        ee = np.concatenate((self._etail, e))
        if self.w > 1:
            self._etail = ee[-(self.w - 1) :].copy()
            env = np.convolve(ee, np.full(self.w, 1.0 / self.w), mode="valid")
        else:
            env = ee
        self._env = np.concatenate((self._env, env)) if self._env.size else env
        self._ni += nb

    def _candidates(self, final: bool) -> list[tuple[int, float]]:
        """Local maxima (±r) of the envelope not yet examined, with their full right context."""
        from scipy.ndimage import maximum_filter1d

        env, e0, r = self._env, self._env0, self.r
        end = self._ni if final else self._ni - r  # examine internal indices < end
        lo = self._next_cand
        if end <= lo:
            return []
        a = max(lo - r, e0)
        seg = env[a - e0 :]
        mx = maximum_filter1d(seg, size=2 * r + 1, mode="constant", cval=-np.inf)
        i0, i1 = lo - a, end - a
        idx = np.flatnonzero(seg[i0:i1] >= mx[i0:i1]) + i0
        self._next_cand = end
        out = []
        for j in idx.tolist():
            p = j + a
            if p - self._last_cand <= r:
                continue
            self._last_cand = p
            out.append((p, float(seg[j])))
        return out

    def _initialise(self) -> None:
        e0 = self._env0
        first = self._env[: max(1, min(self.learn, self._ni) - e0)]
        self._spk = 0.5 * float(first.max()) if first.size else 0.0
        self._npk = 0.5 * float(first.mean()) if first.size else 0.0
        self._init = True

    def _rr_mean(self) -> float:
        rr = self._rr[-8:]
        return float(np.mean(rr)) if rr else 1.0 * self.fs_i

    def _thr(self) -> float:
        return self._npk + self.config.threshold * (self._spk - self._npk)

    def _is_twave(self, p: int, h: float) -> bool:
        if not self._beats_i:
            return False
        return p - self._beats_i[-1] < self.twave and h < self.config.twave_ratio * self._beat_h[-1]

    def _accept(self, p: int, h: float, confident: bool) -> None:
        if self._beats_i:
            self._rr.append(p - self._beats_i[-1])
            if len(self._rr) > 16:
                del self._rr[:-8]
        self._beats_i.append(p)
        self._beat_h.append(h)
        if len(self._beats_i) > 4:
            del self._beats_i[:-2]
            del self._beat_h[:-2]
        self._ref = p
        self._noise = [(q, g) for q, g in self._noise if q > p]
        self._pending.append((p, h, confident))

    def _deadline(self) -> int:
        return self._ref + int(self.config.searchback_rr * self._rr_mean())

    def _searchback(self) -> None:
        dl = self._deadline()
        thr2 = self.config.searchback_threshold * self._thr()
        best: tuple[int, float] | None = None
        for q, g in self._noise:
            if q >= dl:
                break
            if g > thr2 and not self._is_twave(q, g) and (best is None or g > best[1]):
                best = (q, g)
        if best is not None:
            self._accept(best[0], best[1], False)
            self._spk = 0.25 * best[1] + 0.75 * self._spk
        else:
            self._ref = dl
            self._noise = [(q, g) for q, g in self._noise if q >= dl]
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
        for p, h in cands:
            while p >= self._deadline():
                self._searchback()
            if h > self._thr() and not self._is_twave(p, h):
                self._accept(p, h, True)
                self._spk = 0.125 * h + 0.875 * self._spk
            else:
                self._noise.append((p, h))
                self._record_noise(p, h)
                self._npk = 0.125 * h + 0.875 * self._npk
        while self._deadline() <= avail:
            self._searchback()
        # trim the envelope: keep what the next candidates' left context needs
        keep_from = max(self._env0, self._next_cand - self.r - 1)
        if keep_from > self._env0 and self._init:
            self._env = self._env[keep_from - self._env0 :]
            self._env0 = keep_from

    def _record_noise(self, p: int, h: float) -> None:
        self.noise_heights.append((self._seg0 + int(round((p - self._delay_i) * self.k)), h))
        if len(self.noise_heights) > 4096:
            del self.noise_heights[:-2048]

    def _locate(self) -> np.ndarray:
        """Place the pending beats on the largest deflection of the raw signal; trim the raw buffer."""
        out = np.zeros(0, dtype=np.int64)
        if self._pending:
            k = self.k
            est = np.array(
                [self._seg0 + (p - self._delay_i) * k + (k - 1) / 2.0 for p, _, _ in self._pending]
            )
            est = np.round(est).astype(np.int64)
            lo_b, hi_b, B = self._loc_before, self._loc_after, self._base_half
            raw, r0, n = self._raw, self._raw0, self._n
            offs = np.arange(-B, B + 1)
            idx = np.clip(est[:, None] + offs[None, :], max(r0, self._seg0), n - 1) - r0
            seg = raw[idx]
            base = np.median(seg, axis=1, keepdims=True)
            s = seg - base
            mk = self._mk
            if mk > 1:
                sh = [s[:, i : s.shape[1] - (mk - 1) + i] for i in range(mk)]
                s = np.median(np.stack(sh), axis=0)
                pad = (mk - 1) // 2
            else:
                pad = 0
            c0 = B - lo_b - pad
            c1 = B + hi_b + 1 - pad
            win = s[:, max(0, c0) : c1]
            j = np.argmax(np.abs(win), axis=1) + max(0, c0) + pad
            out = idx[np.arange(len(j)), j] + r0
            amp = np.ptp(win, axis=1)
            # keep order and spacing
            keep = np.ones(out.size, dtype=bool)
            last = self._last_out
            min_gap = int(0.5 * self.config.refractory_s * self.fs)
            for i in range(out.size):
                if out[i] - last < min_gap:
                    keep[i] = False
                else:
                    last = int(out[i])
            self._last_out = last
            for i in np.flatnonzero(keep).tolist():
                _, h, conf = self._pending[i]
                self.beat_heights.append(h)
                self.beat_confident.append(conf)
                self.beat_amplitudes.append(float(amp[i]))
            if len(self.beat_heights) > 4096:
                del self.beat_heights[:-2048], self.beat_confident[:-2048], self.beat_amplitudes[:-2048]
            out = out[keep].astype(np.int64)
            self._pending = []
        # raw samples still needed: from the earliest beat that can still be accepted (search back)
        if not self._init:
            return out
        oldest = min([self._ref, self._next_cand - self.r] + [q for q, _ in self._noise])
        need = self._seg0 + int((oldest - self._delay_i) * self.k) - self._base_half - self._loc_before - self.k
        need = min(need, self._n)
        if need > self._raw0:
            self._raw = self._raw[need - self._raw0 :]
            self._raw0 = need
        return out


# ------------------------------------------------------------------------------------------------------
# beats → numbers
# ------------------------------------------------------------------------------------------------------
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
    signal_ptp_mv: float | None = None,
    config: RhythmConfig | None = None,
    notes: Sequence[str] = (),
) -> RhythmResult:
    """Heart rate, HRV and RR irregularity from beat positions (sample indices at ``fs``).

    ``segments``: a record id per beat (intervals are taken only between beats of the same record, so
    never across a gap). ``heights`` / ``noise_heights`` (detector envelope of beats and of the other
    candidates), ``amplitudes`` (mV around each beat) and ``signal_ptp_mv`` feed the quality flag.
    """
    cfg = config or RhythmConfig()
    rp = np.asarray(r_peaks, dtype=np.int64)
    n = int(rp.size)
    conf = tuple(bool(c) for c in confident) if confident is not None else (True,) * n
    times = tuple((t0 + rp / fs).tolist())
    rr = np.diff(rp) * (1000.0 / fs) if n > 1 else np.zeros(0)
    if segments is not None and n > 1:
        sg = np.asarray(segments)
        rr = rr[sg[1:] == sg[:-1]]
    quality = QUALITY_OK
    snr: float | None = None
    notes_l = list(notes)
    if heights is not None and n:
        hb = float(np.median(np.asarray(heights, dtype=np.float64)))
        nh = np.asarray(noise_heights if noise_heights is not None else (), dtype=np.float64)
        ref = float(np.percentile(nh, 80)) if nh.size else 0.0
        snr = hb / ref if ref > 0 else (math.inf if hb > 0 else 0.0)
        if not math.isfinite(snr):
            snr = 999.0
    flat = signal_ptp_mv is not None and signal_ptp_mv < cfg.flat_mv
    if amplitudes is not None and n and float(np.median(np.asarray(amplitudes))) < cfg.flat_mv:
        flat = True
    if flat:
        quality = QUALITY_FLAT
    elif n < cfg.min_beats or rr.size < cfg.min_beats - 1:
        quality = QUALITY_TOO_FEW_BEATS
    elif snr is not None and snr < cfg.min_snr:
        quality = QUALITY_NOISY
        notes_l.append(f"beats stand {snr:.1f}x over the other peaks (< {cfg.min_snr})")
    elif rr.size and float(rr.min()) < cfg.min_rr_s * 1000.0:
        quality = QUALITY_NOISY
        notes_l.append(f"an RR interval of {float(rr.min()):.0f} ms")
    elif n and conf.count(False) > cfg.max_searchback_share * n:
        quality = QUALITY_NOISY
        notes_l.append(f"{conf.count(False)} of {n} beats found only by search back")
    ok = quality == QUALITY_OK
    hr = sdnn = rmssd = pnn50 = nrmssd = irr = mx = None
    ectopic = 0
    inst: tuple[float, ...] = ()
    if ok and rr.size:
        mean_rr = float(rr.mean())
        hr = 60000.0 / mean_rr
        inst = tuple((60000.0 / rr).tolist())
        mx = float(rr.max())
        sdnn = float(rr.std(ddof=1)) if rr.size > 1 else None
        if rr.size > 1:
            dd = np.diff(rr)
            rmssd = float(np.sqrt(np.mean(dd * dd)))
            pnn50 = float(np.mean(np.abs(dd) > 50.0))
            nrmssd = rmssd / mean_rr
            med = float(np.median(rr))
            irr = float(np.median(np.abs(dd))) / med
            early = rr[:-1] < cfg.ectopic_early * med
            late = rr[1:] > cfg.ectopic_late * med
            ectopic = int(np.count_nonzero(early & late))
    return RhythmResult(
        lead=lead,
        fs=float(fs),
        r_peaks=tuple(rp.tolist()),
        beat_times_s=times,
        beat_confident=conf,
        rr_ms=tuple(rr.tolist()),
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


def _one_lead(signal: Any) -> np.ndarray:
    x = np.asarray(signal)
    if x.dtype.kind not in "fiu":
        raise SignalShapeError(f"signal must be numeric, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise SignalShapeError(f"rhythm analysis takes one lead: a 1-D array (or (1, n)), got shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise NonFiniteSignalError("signal holds NaN or Inf samples")
    return x


def detect_beats(signal: Any, *, fs: float, config: DetectorConfig | None = None) -> np.ndarray:
    """R-peak sample indices of a whole one-lead record (mV at ``fs``)."""
    det = BeatDetector(fs=fs, config=config)
    a = det.push(_one_lead(signal))
    b = det.finish()
    return np.concatenate((a, b)) if b.size else a


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
    fs = _check_fs(fs)
    x = _one_lead(signal)
    det = BeatDetector(fs=fs, config=detector)
    a = det.push(x) if x.size else np.zeros(0, dtype=np.int64)
    b = det.finish()
    beats = np.concatenate((a, b)) if b.size else a
    ptp = float(np.percentile(x, 99.5) - np.percentile(x, 0.5)) if x.size else 0.0
    return summarise_beats(
        beats,
        fs=fs,
        lead=name,
        t0=t0,
        confident=det.beat_confident,
        heights=det.beat_heights,
        noise_heights=[h for _, h in det.noise_heights],
        amplitudes=det.beat_amplitudes,
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
