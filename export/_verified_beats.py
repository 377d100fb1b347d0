"""The learned beat verifier experiment (issue #14), kept out of the runtime: a verifier on top of
:class:`kmerl_edge.rhythm.BeatDetector` (a subclass; the runtime detector is unchanged) and its weights.

Every candidate of the energy detector where it is in doubt (an accepted beat beside an interval shorter
than ``SHORT_RR`` × the running mean RR or found by search back, a noise peak inside an interval longer
than ``GAP_RR`` × the mean) is scored by a small multilayer perceptron from

- its shape: the detector's block-averaged signal (~125 Hz) ±``half_s`` around it, sampled every
  ``step_s``, its mean removed, divided by the running beat amplitude and turned so that the running
  template's main deflection is positive (polarity and scale do not matter);
- its context: the correlation with the running template (the mean shape of the last 8 accepted beats),
  its amplitude over the running beat amplitude, the RR interval before and after it over the running
  mean RR, its envelope height over the running beat height, its prominence over the envelope floor,
  and whether the energy detector accepted it (and without search back).

The running context comes from the beats the energy detector accepted before the candidate (not from
the verifier's own decisions), so a stream cut anywhere gives the same beats. A candidate needs
``min_prior`` accepted beats before it in its record. An accepted beat scoring below ``reject_below``
is dropped; a noise peak scoring at least ``accept_above``, ``refractory_s`` from the beats beside
it, is taken. A candidate is decided once the next accepted beat is known. The weights (JSON, no
pickle) are trained and the thresholds chosen by :mod:`export.beat_verifier`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._errors import KmerlError
from kmerl_edge.rhythm import BeatDetector, DetectorConfig

__all__ = [
    "BeatVerifierError",
    "BeatVerifier",
    "VerifiedBeatDetector",
    "load_verifier",
    "verifier_from_dict",
    "features",
    "VERIFIER_FORMAT",
    "CONTEXT",
]

VERIFIER_FORMAT = "kmerl-beat-verifier"
VERIFIER_VERSION = 1
#: the context features after the shape, in this order
CONTEXT = (
    "corr",
    "log_amp",
    "rr_before",
    "rr_after",
    "has_next",
    "log_height",
    "log_prominence",
    "is_beat",
    "confident",
)
#: history of beats the running template / levels use
HISTORY = 8


class BeatVerifierError(KmerlError, ValueError):
    """The beat verifier's weights file is missing, corrupted or does not fit its declared shape."""


@dataclass(frozen=True)
class BeatVerifier:
    """Weights of the verifier (read-only arrays) and its decision constants."""

    half_s: float
    step_s: float
    centre_s: float
    min_prior: int
    reject_below: float
    accept_above: float
    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float

    @property
    def n_shape(self) -> int:
        return 2 * int(round(self.half_s / self.step_s)) + 1

    def offsets(self, fs_i: float) -> np.ndarray:
        """Internal-rate sample offsets of the shape's points (nearest sample)."""
        m = int(round(self.half_s / self.step_s))
        return np.rint(np.arange(-m, m + 1) * self.step_s * fs_i).astype(np.int64)

    def centre(self) -> tuple[int, int]:
        """Slice of the shape points within ±``centre_s`` (amplitude and polarity)."""
        m = int(round(self.half_s / self.step_s))
        c = int(round(self.centre_s / self.step_s))
        return m - c, m + c + 1

    def score(self, x: np.ndarray) -> np.ndarray:
        """Probability of a real beat per feature row (shape, then context)."""
        return 1.0 / (
            1.0 + np.exp(-np.clip(self.logit(x[:, : self.n_shape], x[:, self.n_shape :]), -50.0, 50.0))
        )

    def logit(self, shape: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """Log-odds of a real beat from the shape and context rows of :func:`features`."""
        ws, wc, b1 = self._folded()
        h = shape @ ws
        h += ctx @ wc
        h += b1
        np.tanh(h, out=h)
        return h @ self.w2 + self.b2

    def _folded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = self.__dict__.get("_fold")
        if f is None:  # the standardisation folded into the first layer, computed once
            w = self.w1 / self.scale[:, None]
            b1 = self.b1 - (self.mean / self.scale) @ self.w1
            ns = self.n_shape
            f = (np.ascontiguousarray(w[:ns]), np.ascontiguousarray(w[ns:]), b1)
            object.__setattr__(self, "_fold", f)
        return f


def _arr(d: dict[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in d:
        raise BeatVerifierError(f"{where}: no {key!r}")
    try:
        a = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BeatVerifierError(f"{where}: {key!r} is not an array of numbers") from exc
    if a.shape != shape:
        raise BeatVerifierError(f"{where}: {key!r} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise BeatVerifierError(f"{where}: {key!r} holds NaN or Inf")
    a.setflags(write=False)
    return a


def _num(d: dict[str, Any], key: str, where: str, lo: float, hi: float) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise BeatVerifierError(f"{where}: {key!r} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def verifier_from_dict(d: Any, where: str = "beat verifier") -> BeatVerifier:
    """Validate a parsed weights document (every field, shape and number) into a :class:`BeatVerifier`."""
    if not isinstance(d, dict):
        raise BeatVerifierError(f"{where}: not a JSON object")
    if d.get("format") != VERIFIER_FORMAT or d.get("version") != VERIFIER_VERSION:
        raise BeatVerifierError(
            f"{where}: format {d.get('format')!r} version {d.get('version')!r}, expected {VERIFIER_FORMAT!r} {VERIFIER_VERSION}"
        )
    if tuple(d.get("context", ())) != CONTEXT:
        raise BeatVerifierError(f"{where}: context features {d.get('context')!r}, expected {list(CONTEXT)}")
    half = _num(d, "half_s", where, 0.05, 1.0)
    step = _num(d, "step_s", where, 0.002, 0.1)
    centre = _num(d, "centre_s", where, 0.0, half)
    n_in = 2 * int(round(half / step)) + 1 + len(CONTEXT)
    hidden = d.get("hidden")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or not 1 <= hidden <= 256:
        raise BeatVerifierError(f"{where}: 'hidden' must be an integer in [1, 256], got {hidden!r}")
    mp = d.get("min_prior")
    if isinstance(mp, bool) or not isinstance(mp, int) or not 2 <= mp <= HISTORY:
        raise BeatVerifierError(f"{where}: 'min_prior' must be an integer in [2, {HISTORY}], got {mp!r}")
    scale = _arr(d, "scale", (n_in,), where)
    if (scale <= 0).any():
        raise BeatVerifierError(f"{where}: 'scale' must be positive")
    return BeatVerifier(
        half_s=half,
        step_s=step,
        centre_s=centre,
        min_prior=mp,
        reject_below=_num(d, "reject_below", where, 0.0, 1.0),
        accept_above=_num(d, "accept_above", where, 0.0, 1.0),
        mean=_arr(d, "mean", (n_in,), where),
        scale=scale,
        w1=_arr(d, "w1", (n_in, hidden), where),
        b1=_arr(d, "b1", (hidden,), where),
        w2=_arr(d, "w2", (hidden,), where),
        b2=_num(d, "b2", where, -1e6, 1e6),
    )


def load_verifier(path: str | Path) -> BeatVerifier:
    """Read and validate a verifier weights file (JSON)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BeatVerifierError(f"beat verifier {p}: cannot read ({exc.strerror or exc})") from exc
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise BeatVerifierError(f"beat verifier {p}: not valid JSON ({exc})") from exc
    return verifier_from_dict(d, where=f"beat verifier {p}")


def features(
    v: BeatVerifier,
    snips: np.ndarray,
    pos: np.ndarray,
    heights: np.ndarray,
    prominence: np.ndarray,
    is_beat: np.ndarray,
    confident: np.ndarray,
    next_beat: np.ndarray,
    hist: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Shape rows, context rows (:data:`CONTEXT`) and whether each is verified for ``n`` candidates in
    index order, and the new history.

    ``snips`` (n, L): the signal at the shape's points; ``pos``: internal indices (float); ``heights`` /
    ``prominence``: envelope height and height over the envelope floor; ``next_beat``: internal index of
    the next accepted beat after each (NaN: none, the record ends first); ``hist``: (rows of unit shape,
    log amplitude and log envelope height; positions) of accepted beats before these (oldest first; the
    last :data:`HISTORY` are used)."""
    h_rows, h_pos = hist
    n, L = snips.shape
    c0, c1 = v.centre()
    s = snips - (np.add.reduce(snips, axis=1) * (1.0 / L))[:, None]
    cen = s[:, c0:c1]
    amp = np.maximum.reduce(cen, axis=1)
    amp -= np.minimum.reduce(cen, axis=1)
    np.maximum(amp, 1e-9, out=amp)
    la = np.log(amp)
    lh = np.log(np.maximum(heights, 1e-12))
    b = is_beat
    nb = int(np.count_nonzero(b))
    new = np.empty((nb, L + 2))
    new[:, :L] = s[b] / amp[b, None]
    new[:, L] = la[b]
    new[:, L + 1] = lh[b]
    rows = np.concatenate((h_rows, new)) if h_rows.size else new
    b_pos = np.concatenate((h_pos, pos[b]))
    new_hist = (rows[-HISTORY:], b_pos[-HISTORY:])
    ctx = np.zeros((n, len(CONTEXT)))
    if b_pos.size == 0:
        return s, ctx, np.zeros(n, dtype=bool), new_hist
    bi = b.astype(np.int64)
    j = np.cumsum(bi)
    j += h_pos.size
    j -= bi  # accepted beats before each candidate
    lo = np.maximum(j - HISTORY, 0)
    cols = np.arange(rows.shape[0])
    w = (cols >= lo[:, None]) & (cols < j[:, None])
    tt = (w * (1.0 / np.maximum(j - lo, 1))[:, None]) @ rows  # running template, log amplitude, log height
    tmpl = tt[:, :L]
    # mean of the last (up to 8) RR intervals among the prior beats
    jm1 = np.maximum(j - 1, 0)
    lo9 = np.maximum(j - HISTORY - 1, 0)
    prev = b_pos[jm1]
    rrm = (prev - b_pos[lo9]) / np.maximum(jm1 - lo9, 1)
    verified = j >= v.min_prior
    rrm[~verified] = 1.0
    tc = tmpl[:, c0:c1]
    sgn = np.where(np.maximum.reduce(tc, axis=1) >= -np.minimum.reduce(tc, axis=1), 1.0, -1.0)
    ss = np.einsum("ij,ij->i", s, s)
    st = np.einsum("ij,ij->i", s, tmpl)
    den = ss * np.einsum("ij,ij->i", tmpl, tmpl)
    np.sqrt(den, out=den)
    den[den <= 0] = np.inf
    shape = s * (sgn * np.exp(-tt[:, L]))[:, None]
    np.minimum(shape, 5.0, out=shape)
    np.maximum(shape, -5.0, out=shape)
    ctx[:, 0] = st / den
    ctx[:, 1] = la - tt[:, L]
    ctx[:, 2] = (pos - prev) / rrm
    has_next = next_beat == next_beat  # not NaN
    ctx[:, 3] = np.where(has_next, next_beat - pos, rrm) / rrm
    ctx[:, 4] = has_next
    ctx[:, 5] = lh - tt[:, L + 1]
    ctx[:, 6] = np.log(np.minimum(np.maximum(prominence, 1.0), 1e3))
    ctx[:, 7] = b
    ctx[:, 8] = confident
    np.minimum(ctx, 5.0, out=ctx)
    np.maximum(ctx, -5.0, out=ctx)
    return shape, ctx, verified, new_hist


#: an accepted beat is scored when an RR interval beside it is shorter than this × the running mean RR
SHORT_RR = 0.8
#: a noise peak is scored when the interval between the accepted beats around it exceeds this × the mean
GAP_RR = 1.4
_SHORT_RR, _GAP_RR = SHORT_RR, GAP_RR
_EMPTY = np.zeros(0)
_EMPTY.setflags(write=False)
_EMPTY_HIST: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 0)), np.zeros(0))


def _logit(p: float) -> float:
    return -math.inf if p <= 0.0 else math.inf if p >= 1.0 else math.log(p / (1.0 - p))


class VerifiedBeatDetector(BeatDetector):
    """:class:`~kmerl_edge.rhythm.BeatDetector` with the learned verifier between its decisions and the
    placement of its beats (same :meth:`push` / :meth:`finish` contract; beats are reported once the
    next accepted beat is known). ``collect``: a list that receives, instead of decisions, every
    verifiable candidate's (estimated native index, accepted by the energy stage, in doubt, feature row)
    (training)."""

    _ybuf: np.ndarray

    def __init__(
        self,
        *,
        fs: float,
        verifier: BeatVerifier,
        config: DetectorConfig | None = None,
        collect: list[tuple[int, bool, bool, np.ndarray]] | None = None,
    ) -> None:
        self._ver = verifier
        self._vcollect = collect
        super().__init__(fs=fs, config=config)
        if self.config.median:
            raise BeatVerifierError(
                "the beat verifier reads the block means: DetectorConfig(median=True) is not supported"
            )
        offs = verifier.offsets(self.fs_i)
        offs.setflags(write=False)
        self._voffs = offs
        self._vthr = (_logit(verifier.reject_below), _logit(verifier.accept_above))
        real = self._lfilter

        def capture(b: np.ndarray, a: np.ndarray, m: np.ndarray, zi: np.ndarray) -> Any:
            # the band-pass filter reads the block means one sample late; the verifier's signal is the
            # block means themselves (this call's: m without its first value, then the newest block
            # mean, which _feed has just kept in _ytail), one per internal sample
            y = np.concatenate((m[1:], self._ytail[1:])) if self._ytail is not None else m
            buf: np.ndarray = self._ybuf
            self._ybuf = np.concatenate((buf, y)) if buf.size else y
            return real(b, a, m, zi=zi)

        self._lfilter = capture

    def reset(self) -> None:
        super().reset()
        # candidates not yet decided (internal index, accepted, height, confident, floor), the block means
        # from internal index _yb0, the last accepted beats (running context) and the last kept beat
        self._vq: list[tuple[int, bool, float, bool, float]] = []
        self._ybuf = _EMPTY
        self._yb0 = 0
        self._vhp: list[tuple[int, float]] = []
        self._vlast = -(10**9)

    def _decide(self, final: bool) -> None:
        super()._decide(final)
        self._verify(final)

    def _accept(self, p: int, h: float, sl: float, confident: bool, floor: float) -> None:
        super()._accept(p, h, sl, confident, floor)
        self._pending.pop()  # decided by the verifier, not yet
        vq = self._vq
        if confident:  # the newest candidate: after everything queued
            vq.append((p, True, h, True, floor))
        else:  # search back: it was a noise candidate until now
            vq[:] = [e for e in vq if e[0] != p]
            vq.append((p, True, h, False, floor))
            vq.sort()

    def _record_noise(self, p: int, h: float) -> None:
        super()._record_noise(p, h)
        cand = self._noise[-1]  # _decide appends the candidate just before recording it
        self._vq.append((p, False, h, False, cand[3]))

    def _locate(self) -> np.ndarray:
        vq = self._vq
        if vq:  # the raw samples of the queued beats are still needed: hold them like a noise candidate
            self._noise.insert(0, (vq[0][0], 0.0, 0.0, 0.0))
            try:
                out = super()._locate()
            finally:
                del self._noise[0]
        else:
            out = super()._locate()
        if self._init:  # the block means the queue and the history still read
            oldest = min(self._ref, self._next_cand - self.r)
            if self._noise:
                oldest = min(oldest, self._noise[0][0])
            if vq:
                oldest = min(oldest, vq[0][0])
            if self._vhp:
                oldest = min(oldest, self._vhp[0][0])
            need_y = int(oldest - self._delay_i) + int(self._voffs[0]) - 2
            if need_y > self._yb0:
                self._ybuf = self._ybuf[need_y - self._yb0 :]
                self._yb0 = need_y
        return out

    def _verify(self, final: bool) -> None:
        """Decide the verifier's queued candidates whose next accepted beat is known (all at the end of
        the record). Only candidates where the energy stage is in doubt are scored: an accepted beat
        found by search back or with an RR interval before or after it shorter than ``_SHORT_RR`` × the
        running mean (an artefact or T wave between beats), a noise peak in an interval longer than
        ``_GAP_RR`` × the mean (a missed beat); a scored beat below ``reject_below`` is dropped, a scored
        noise peak reaching ``accept_above`` (``refractory_s`` from the beats beside it) is taken."""
        vq = self._vq
        if not vq:
            return
        if final:
            cut = len(vq)
        else:
            cut = len(vq) - 1
            while cut >= 0 and not vq[cut][1]:
                cut -= 1
            if cut <= 0:
                return
        ents, self._vq = vq[:cut], vq[cut:]
        v = self._ver
        assert v is not None
        # the next accepted beat after each candidate (inf: the record ends first)
        nb = vq[cut][0] if cut < len(vq) else math.inf
        nxt: list[float] = [0.0] * cut
        for i in range(cut - 1, -1, -1):
            nxt[i] = nb
            if ents[i][1]:
                nb = ents[i][0]
        # which candidates to score (running mean RR over the last 8 intervals of the accepted beats)
        hp = self._vhp  # (position, height) of the last 9 accepted beats
        hist0 = list(hp)
        mp = v.min_prior
        short, gap = _SHORT_RR, _GAP_RR
        collect = self._vcollect is not None
        doubt = [False] * cut
        seen = [False] * cut  # verifiable (enough beats before it): the rows training collects
        anyd = False
        for i, e in enumerate(ents):
            p = e[0]
            nh = len(hp)
            if nh >= mp:
                last = hp[-1][0]
                rrm = (last - hp[0][0]) / (nh - 1)
                if e[1]:
                    d = not e[3] or p - last < short * rrm or nxt[i] - p < short * rrm
                else:
                    d = (nxt[i] if nxt[i] != math.inf else p) - last > gap * rrm
                if d:
                    doubt[i] = anyd = True
                seen[i] = True
            if e[1]:
                hp.append((p, e[2]))
                if nh >= 9:
                    del hp[0]
        pending = self._pending
        if not anyd and not (collect and any(seen)):
            pending.extend([(e[0], e[2], e[3], e[4]) for e in ents if e[1]])
            if pending:
                self._vlast = pending[-1][0]
            return
        hist = hist0[-HISTORY:]
        nh0 = len(hist)
        pos_l = [q[0] for q in hist] + [e[0] for e in ents]
        pos = np.array(pos_l, dtype=np.float64)
        c = (pos - self._delay_i + (0.5 - self._yb0)).astype(np.int64)  # rounded (all positive)
        idx = c[:, None] + self._voffs
        y = self._ybuf
        if idx[-1, -1] >= y.size or idx[0, 0] < 0:
            idx = np.minimum(np.maximum(idx, 0), y.size - 1)
        snips = y[idx]
        heights = np.array([q[1] for q in hist] + [e[2] for e in ents])
        prom = np.array([1.0] * nh0 + [e[2] / e[4] if e[4] > 0 else 999.0 for e in ents])
        isb = np.array([True] * nh0 + [e[1] for e in ents], dtype=bool)
        conf = np.array([True] * nh0 + [e[3] for e in ents], dtype=bool)
        nx = np.array([math.nan] * nh0 + [q if q != math.inf else math.nan for q in nxt])
        shape, ctx, verified, _ = features(v, snips, pos, heights, prom, isb, conf, nx, _EMPTY_HIST)
        shape, ctx = shape[nh0:], ctx[nh0:]
        sel = np.flatnonzero(verified[nh0:] & np.array(doubt, dtype=bool))
        score: dict[int, float] = {}
        if self._vcollect is not None:
            s0, dl, k, half = self._seg0, self._delay_i, self.k, (self.k - 1) / 2.0
            for i in np.flatnonzero(verified[nh0:] & np.array(seen, dtype=bool)).tolist():
                row = np.concatenate((shape[i], ctx[i]))
                self._vcollect.append((round(s0 + (ents[i][0] - dl) * k + half), ents[i][1], doubt[i], row))
        elif sel.size:
            score = dict(zip(sel.tolist(), v.logit(shape[sel], ctx[sel]).tolist()))
        last_kept = pending[-1][0] if pending else self._vlast
        r = self.r
        lo_t, hi_t = self._vthr
        for i, e in enumerate(ents):
            p, b = e[0], e[1]
            sc = score.get(i)
            if sc is None:
                keep = b
            elif b:
                keep = sc >= lo_t
            else:
                keep = sc >= hi_t and p - last_kept > r and nxt[i] - p > r
            if keep:
                pending.append((p, e[2], e[3] and b, e[4]))
                last_kept = p
        self._vlast = last_kept


def verified_detect_beats(
    signal: Any, *, fs: float, verifier: BeatVerifier, config: DetectorConfig | None = None
) -> np.ndarray:
    """R-peak sample indices of a whole one-lead record with the verifier."""
    x = np.asarray(signal, dtype=np.float64)
    return VerifiedBeatDetector(fs=fs, verifier=verifier, config=config).push(x, last=True)
