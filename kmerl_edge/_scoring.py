"""Scoring a whole recording in bounded memory, around its gaps.

A recording is read in chunks (:class:`kmerl_edge._io.RecordReader`), cut at missing samples into
gap-free *stretches*, and each stretch is preprocessed in *pieces* of at most ``piece_s`` seconds of
core plus context, with the shared :func:`kmerl_edge.preprocess`; windows go to the backend in batches of
``batch_windows``. Memory therefore depends on the piece and batch sizes, not on the recording's length.

- A stretch no longer than one piece is preprocessed in one call, exactly as a short recording always was
  (same windows: every ``hop_s`` plus one aligned to the end).
- A longer stretch is cut into pieces whose cores are whole numbers of hops; each piece carries one hop of
  context on each side so the zero-phase filters see real signal around every window it keeps. Windows
  keep the record's own grid (a window every ``hop_s`` from the stretch start).
- Each piece goes to the bundle that serves the leads that *survive its quality check* (flat, saturated,
  out-of-range and missing leads left out), not the leads given: a classifier with a companion
  (:func:`kmerl_edge.load`) scores a 12-lead piece whose other nine leads are off with its ≤3-lead student.
  :attr:`ScoredWindows.routes` says which bundle scored which windows on which leads; a piece whose
  remaining lead set no bundle serves (``supported_lead_sets``) is left unscored with a note.
- Windows never overlap a gap (a time where no lead has a sample): a stretch shorter than
  ``min_duration_s`` is not scored; a 5–10-s stretch gives one padded window (flag ``padded``), as a short
  recording does. A lead missing while others are recorded sits out every piece that holds its missing
  samples; the other leads are scored there.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ._af_fusion import fusion_rhythm_lead
from ._errors import LeadError, NonFiniteSignalError, NoUsableLeadsError, RecordReadError, SignalTooShortError
from ._polarity import INVERTED_FLAG, inverted_note, run_with_polarity
from ._preprocess import LeadQuality, QualityReport, _check_fs, preprocess
from .rhythm import BeatDetector, RhythmResult, analyse, choose_rhythm_lead, summarise_beats

if TYPE_CHECKING:  # pragma: no cover
    from ._classifier import Classifier
    from ._io import RecordReader

__all__ = ["Coverage", "Route", "ScoredWindows", "score_reader"]

_MAX_GAPS_LISTED = 1000


@dataclass(frozen=True)
class Coverage:
    """Which part of a recording was scored. Times in seconds from the start of the recording.

    ``missing_s``: time where every lead is missing (gaps); ``unscored_s``: samples present but not scored
    (gap-free stretches shorter than the model's minimum, or pieces with no usable lead); ``gaps``: the
    first 1000 gaps as (start, end); ``n_gaps`` counts them all; ``lead_missing_s``: per lead, the time it
    is missing while another lead is recorded (that lead sits out the pieces holding those samples).
    """

    duration_s: float
    missing_s: float
    unscored_s: float
    n_gaps: int
    gaps: tuple[tuple[float, float], ...] = ()
    lead_missing_s: dict[str, float] = field(default_factory=dict)

    @property
    def missing_fraction(self) -> float:
        return self.missing_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 4),
            "missing_s": round(self.missing_s, 4),
            "missing_fraction": round(self.missing_fraction, 6),
            "unscored_s": round(self.unscored_s, 4),
            "n_gaps": self.n_gaps,
            "gaps": [[round(a, 4), round(b, 4)] for a, b in self.gaps],
            "lead_missing_s": {k: round(v, 4) for k, v in self.lead_missing_s.items()},
        }


@dataclass(frozen=True)
class Route:
    """``n_windows`` consecutive windows, the first starting at ``start_s``, scored by ``bundle`` (its
    directory) on ``leads``: the leads that passed the quality checks of their piece."""

    bundle: str
    leads: tuple[str, ...]
    start_s: float
    n_windows: int

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "leads": list(self.leads), "start_s": round(self.start_s, 4),
                "n_windows": self.n_windows}


@dataclass
class ScoredWindows:
    """What :func:`score_reader` found: per-window probabilities (Q in bundle query order) and the rest."""

    probs: np.ndarray  # (n_windows, Q) float64
    starts_s: tuple[float, ...]
    leads: tuple[str, ...]
    quality: QualityReport
    coverage: Coverage
    notes: tuple[str, ...]
    latency_ms: float
    rhythm: RhythmResult | None = None
    window_rhythm: Sequence[RhythmResult] = ()
    #: which bundle scored which windows, on which leads (in window order)
    routes: tuple[Route, ...] = ()
    #: the leads of the reader (what was given)
    leads_given: tuple[str, ...] = ()
    #: {lead: why} for every given lead left out of at least one scored piece (``flat``, ``saturated``,
    #: ``out_of_range``, ``missing samples``)
    dropped: dict[str, str] = field(default_factory=dict)
    #: per window, lead I's polarity (:func:`kmerl_edge._polarity.lead_i_polarity`: 1 looks inverted, 0 not,
    #: -1 unknown)
    polarity: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))


_RHYTHM_SCALARS = ("hr_bpm", "sdnn_ms", "rmssd_ms", "pnn50", "nrmssd", "rr_irregularity", "max_rr_ms", "snr")
_RHYTHM_BEATS = (("r_peaks", "q"), ("beat_times_s", "d"), ("beat_confident", "b"))
_RHYTHM_RR = (("rr_ms", "d"), ("hr_instant_bpm", "d"))


class PackedRhythms(Sequence[RhythmResult]):
    """Per-window :class:`RhythmResult` s kept as flat numeric columns (a 24-h Holter has ~17,000 windows:
    as Python objects they cost ~50 MB, packed ~8 MB). Indexing rebuilds the identical result."""

    def __init__(self) -> None:
        self._beats = {name: array(code) for name, code in _RHYTHM_BEATS}
        self._rr = {name: array(code) for name, code in _RHYTHM_RR}
        self._scalars = {name: array("d") for name in _RHYTHM_SCALARS}
        self._beat_end = array("q")
        self._rr_end = array("q")
        self._ectopic = array("q")
        self._fs = array("d")
        self._text: list[tuple[str, str, tuple[str, ...]]] = []  # (lead, quality, notes): shared strings

    def append(self, r: RhythmResult) -> None:
        for name, _ in _RHYTHM_BEATS:
            self._beats[name].extend(getattr(r, name))
        for name, _ in _RHYTHM_RR:
            self._rr[name].extend(getattr(r, name))
        for name in _RHYTHM_SCALARS:
            v = getattr(r, name)
            self._scalars[name].append(math.nan if v is None else float(v))
        self._beat_end.append(len(self._beats["r_peaks"]))
        self._rr_end.append(len(self._rr["rr_ms"]))
        self._ectopic.append(int(r.ectopic_beats))
        self._fs.append(float(r.fs))
        self._text.append((r.lead, r.quality, tuple(r.notes)))

    def __len__(self) -> int:
        return len(self._text)

    @overload
    def __getitem__(self, i: int) -> RhythmResult: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[RhythmResult, ...]: ...

    def __getitem__(self, i: int | slice) -> RhythmResult | tuple[RhythmResult, ...]:
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        b0, b1 = (self._beat_end[i - 1] if i else 0), self._beat_end[i]
        r0, r1 = (self._rr_end[i - 1] if i else 0), self._rr_end[i]
        lead, quality, notes = self._text[i]
        scalars = {name: (None if math.isnan(col[i]) else col[i]) for name, col in self._scalars.items()}
        return RhythmResult(
            lead=lead,
            fs=self._fs[i],
            r_peaks=tuple(self._beats["r_peaks"][b0:b1]),
            beat_times_s=tuple(self._beats["beat_times_s"][b0:b1]),
            beat_confident=tuple(bool(c) for c in self._beats["beat_confident"][b0:b1]),
            rr_ms=tuple(self._rr["rr_ms"][r0:r1]),
            hr_instant_bpm=tuple(self._rr["hr_instant_bpm"][r0:r1]),
            ectopic_beats=self._ectopic[i],
            quality=quality,
            notes=notes,
            **scalars,
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Sequence, PackedRhythms)) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedRhythms({len(self)} windows)"


class _Beats:
    """Whole-recording beats on one lead at the device rate, in bounded memory: a streaming
    :class:`kmerl_edge.rhythm.BeatDetector` fed the gap-free stretches; intervals never span a gap."""

    def __init__(self, fs: float, lead: str) -> None:
        self.fs, self.lead = fs, lead
        self._det: BeatDetector | None = None  # made on first use: a 10-s strip reuses its window's beats
        # compact per-beat columns (a 24-h Holter has ~10⁵ beats: Python lists of tuples cost ~50 MB)
        self.beats = array("q")
        self.segments = array("l")
        self.heights, self.confident, self.amplitudes, self.prominences = array("d"), array("b"), array("d"), array("d")
        self.noise = array("d")
        self.seg = 0
        self.lo, self.hi = math.inf, -math.inf
        self.pending_gap = 0

    @property
    def det(self) -> BeatDetector:
        if self._det is None:
            self._det = BeatDetector(fs=self.fs)
        return self._det

    def _take(self, beats: np.ndarray) -> None:
        self.beats.extend(int(b) for b in beats)
        self.segments.extend([self.seg] * len(beats))
        for h, c, a, pr in self.det.take_beat_info():
            self.heights.append(h)
            self.confident.append(bool(c))
            self.amplitudes.append(a)
            self.prominences.append(pr)
        self.noise.extend(h for _, h in self.det.take_noise())

    def push(self, x: np.ndarray) -> None:
        """Samples of the rhythm lead; its own missing samples (NaN) are gaps for the detector."""
        nan = np.isnan(x)
        if nan.any():
            for s, e, missing in _all_runs(nan):
                if missing:
                    self.gap(e - s)
                else:
                    self._push(x[s:e])
            return
        self._push(x)

    def _push(self, x: np.ndarray) -> None:
        if self.pending_gap:
            self._take(self.det.gap(self.pending_gap))
            self.seg += 1
            self.pending_gap = 0
        if x.size:
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self._take(self.det.push(x))

    def gap(self, n: int) -> None:
        self.pending_gap += int(n)

    def result(self) -> RhythmResult:
        self._take(self.det.finish())
        return summarise_beats(
            np.frombuffer(self.beats, dtype=np.int64),
            fs=self.fs,
            lead=self.lead,
            segments=np.frombuffer(self.segments, dtype=np.dtype("l")),
            confident=[bool(c) for c in self.confident],
            heights=self.heights,
            noise_heights=self.noise,
            amplitudes=self.amplitudes,
            prominences=self.prominences,
            signal_ptp_mv=(self.hi - self.lo) if self.hi >= self.lo else 0.0,
        )


class _Piecer:
    """Turns gap-free stretches (fed in chunks) into preprocessed, scored pieces."""

    def __init__(self, clf: Classifier, fs: float, leads: tuple[str, ...], piece_s: float, batch_windows: int) -> None:
        cfg = clf.bundle.preprocess_config
        self.clf, self.fs, self.leads, self.cfg = clf, fs, leads, cfg
        self.batch = max(1, int(batch_windows))
        self.hop_n = max(1, int(round(cfg.hop_s * fs)))
        self.win_n = int(round(cfg.window_s * fs))
        self.min_n = int(math.ceil(cfg.min_duration_s * fs - 1e-6))
        self.core_n = self.hop_n * max(2, int(round(piece_s / cfg.hop_s)))
        self.margin_n = self.hop_n
        self.tail_n = max(self.win_n - self.hop_n, 0) + self.margin_n
        self.probs: list[np.ndarray] = []
        self.polarity: list[np.ndarray] = []
        self.starts: list[float] = []
        self.qualities: list[QualityReport] = []
        self.used: list[tuple[str, ...]] = []
        self.routes: list[Route] = []
        self.unserved_pieces = 0
        self.unserved_error: LeadError | None = None
        order = _rhythm_order(leads)  # leads in the order rhythm analysis prefers them
        self.rhythm_lead = order[0]
        self.rhythm_row = leads.index(self.rhythm_lead)
        self.rhythm_rows = [leads.index(lead) for lead in order]
        self.window_rhythm = PackedRhythms()
        self.first_rhythm: RhythmResult | None = None  # window_rhythm[0] as analysed (not rebuilt)
        self.unscored_n = 0
        self.no_lead_pieces = 0
        self.no_lead_error: NoUsableLeadsError | None = None
        self.left_out_missing: dict[str, int] = {}  # lead → pieces it was left out of (missing samples)
        self.infer_s = 0.0
        self._buf: list[np.ndarray] = []
        self._buf_n = 0
        self._buf_start = 0
        self._core_at = 0
        self._stretch_start = 0
        self._may_miss = False  # whether a chunk of this stretch held missing samples (NaN)
        self.open = False

    # -- stretches ------------------------------------------------------------------------------------
    def start(self, at: int) -> None:
        self._buf, self._buf_n, self._buf_start, self._core_at, self._stretch_start = [], 0, at, at, at
        self._may_miss = False
        self.open = True

    def add(self, x: np.ndarray, may_miss: bool = True) -> None:
        """Samples of the open stretch; ``may_miss=False``: the caller knows they hold no NaN."""
        self._may_miss = self._may_miss or may_miss
        self._buf.append(x)
        self._buf_n += x.shape[1]
        while self._buf_n - (self._core_at - self._buf_start) >= self.core_n + self.tail_n:
            data = self._take(self._core_at - self._buf_start + self.core_n + self.tail_n)
            self._piece(data, self._buf_start, self._core_at, self._core_at + self.core_n)
            self._core_at += self.core_n
            self._drop(self._core_at - self.margin_n - self._buf_start)

    def end(self) -> None:
        if not self.open:
            return
        self.open = False
        if self._stretch_start == self._core_at and self._buf_n < self.min_n:
            self.unscored_n += self._buf_n
        elif self._buf_n:
            self._piece(self._take(self._buf_n), self._buf_start, self._core_at, None)
        self._buf, self._buf_n = [], 0

    def _take(self, n: int) -> np.ndarray:
        if len(self._buf) > 1:
            self._buf = [np.concatenate(self._buf, axis=1)]
        return self._buf[0][:, :n]

    def _drop(self, n: int) -> None:
        data = self._take(self._buf_n)
        self._buf = [np.ascontiguousarray(data[:, n:])]
        self._buf_n -= n
        self._buf_start += n

    # -- one piece ------------------------------------------------------------------------------------
    def _piece(self, data: np.ndarray, offset: int, keep_from: int, keep_to: int | None) -> None:
        raw = data
        leads = self.leads
        clean = not self._may_miss  # no chunk of this stretch held a NaN: no lead is missing here
        holes = np.zeros(len(leads), dtype=bool) if clean else np.isnan(data).any(axis=1)
        if holes.any():  # a lead missing somewhere in this piece sits it out
            for h in np.flatnonzero(holes).tolist():
                self.left_out_missing[leads[h]] = self.left_out_missing.get(leads[h], 0) + 1
            data = data[~holes]
            leads = tuple(lead for lead, h in zip(leads, holes) if not h)
        try:
            if not leads:
                raise NoUsableLeadsError("every lead has missing samples in this stretch")
            pre = preprocess(data, fs=self.fs, leads=leads, config=self.cfg, drop_bad_leads=True)
        except NoUsableLeadsError as exc:
            self.no_lead_pieces += 1
            self.no_lead_error = exc
            self.unscored_n += (keep_to if keep_to is not None else offset + data.shape[1]) - keep_from
            return
        t_off = offset / self.fs
        lo = keep_from / self.fs - 1e-6
        hi = math.inf if keep_to is None else keep_to / self.fs - 1e-6
        keep = [i for i, s in enumerate(pre.window_starts_s) if lo <= t_off + s < hi]
        if not keep:
            return
        target = self.clf.route(pre.leads)  # the bundle serving the leads that passed this piece's checks
        if target is None:
            self.unserved_pieces += 1
            self.unserved_error = self.clf.unserved_error(pre.leads, pre.quality.dropped_leads)
            self.unscored_n += (keep_to if keep_to is not None else offset + data.shape[1]) - keep_from
            return
        # one rhythm analysis per window at the device rate: reported as the window's rhythm, and the AF
        # fusion's rhythm evidence when it is on the fusion's lead (it nearly always is)
        reported = [self._window_rhythm(raw, pre.window_starts_s[w], t_off, clean) for w in keep]
        fused: list[RhythmResult | None] | None = None
        if target.needs_rhythm or "I" in pre.leads:  # the lead I polarity check measures on these beats too
            lead = fusion_rhythm_lead(pre.lead_ids)
            row = self.leads.index(lead)
            fused = [r if r.lead == lead else self._analyse(raw, row, pre.window_starts_s[w], t_off)
                     for w, r in zip(keep, reported)]
        t0 = time.perf_counter()
        for a in range(0, len(keep), self.batch):
            rows = keep[a : a + self.batch]
            # consecutive windows (the usual case) as a view, not a copy
            batch = (pre.windows[rows[0] : rows[-1] + 1] if rows[-1] - rows[0] == len(rows) - 1
                     else pre.windows[rows])
            probs, polarity = run_with_polarity(target, batch, pre.lead_ids,
                                                rhythm=None if fused is None else fused[a : a + self.batch])
            self.probs.append(probs)
            self.polarity.append(polarity)
        self.infer_s += time.perf_counter() - t0
        bundle = str(target.bundle.path)
        last = self.routes[-1] if self.routes else None
        if last is not None and (last.bundle, last.leads) == (bundle, pre.leads):
            self.routes[-1] = Route(bundle, pre.leads, last.start_s, last.n_windows + len(keep))
        else:
            self.routes.append(Route(bundle, pre.leads, t_off + pre.window_starts_s[keep[0]], len(keep)))
        self.starts.extend(t_off + pre.window_starts_s[i] for i in keep)
        if self.first_rhythm is None:
            self.first_rhythm = reported[0]
        for r in reported:
            self.window_rhythm.append(r)
        self.qualities.append(pre.quality)
        self.used.append(pre.leads)

    def _analyse(self, raw: np.ndarray, row: int, start_s: float, t_off: float) -> RhythmResult:
        """Rhythm of one window on lead ``row`` at the device rate."""
        a = int(round(start_s * self.fs))
        return analyse(raw[row, a : a + self.win_n], fs=self.fs, lead=self.leads[row], t0=t_off + start_s)

    def _window_rhythm(self, raw: np.ndarray, start_s: float, t_off: float, clean: bool = False) -> RhythmResult:
        """Rhythm of one window on the preferred lead that has every sample there (device rate);
        ``clean``: ``raw`` is known to hold no missing sample."""
        a = int(round(start_s * self.fs))
        for row in self.rhythm_rows:
            if clean or not np.isnan(raw[row, a : a + self.win_n]).any():
                return self._analyse(raw, row, start_s, t_off)
        return summarise_beats([], fs=self.fs, lead=self.rhythm_lead, t0=t_off + start_s,
                               notes=("no lead has every sample in this window",))


@lru_cache(maxsize=64)
def _rhythm_order(leads: tuple[str, ...]) -> tuple[str, ...]:
    """``leads`` in the order rhythm analysis prefers them (:func:`choose_rhythm_lead`, then among the rest …)."""
    order: list[str] = []
    while len(order) < len(leads):
        order.append(choose_rhythm_lead([lead for lead in leads if lead not in order]))
    return tuple(order)


def _all_runs(miss: np.ndarray) -> Iterator[tuple[int, int, bool]]:
    """(start, stop, missing) of the runs of equal values of a 1-D bool array, in order."""
    if not miss.any():
        yield 0, miss.size, False
        return
    cuts = np.flatnonzero(np.diff(miss.astype(np.int8))) + 1
    bounds = [0, *cuts.tolist(), miss.size]
    for s, e in zip(bounds[:-1], bounds[1:]):
        yield s, e, bool(miss[s])


def _merge_quality(reports: list[QualityReport], leads: tuple[str, ...], extra_flags: tuple[str, ...]) -> QualityReport:
    if len(reports) == 1:
        r = reports[0]
        return QualityReport(r.leads, flags=tuple(dict.fromkeys(r.flags + extra_flags)), dropped_leads=r.dropped_leads)
    per: dict[str, list[LeadQuality]] = {}
    for r in reports:
        for q in r.leads:
            per.setdefault(q.lead, []).append(q)
    merged = []
    for lead in leads:
        qs = per.get(lead)
        if not qs:
            continue
        merged.append(
            LeadQuality(
                lead=lead,
                flat=any(q.flat for q in qs),
                saturated=any(q.saturated for q in qs),
                out_of_range=any(q.out_of_range for q in qs),
                noisy=any(q.noisy for q in qs),
                std_mv=float(np.median([q.std_mv for q in qs])),
                noise_ratio=float(max(q.noise_ratio for q in qs)),
            )
        )
    flags = tuple(dict.fromkeys([f for r in reports for f in r.flags] + list(extra_flags)))
    dropped = tuple(dict.fromkeys(d for r in reports for d in r.dropped_leads))
    return QualityReport(tuple(merged), flags=flags, dropped_leads=dropped)


def score_reader(
    clf: Classifier,
    reader: RecordReader,
    *,
    chunk_s: float = 60.0,
    piece_s: float = 300.0,
    batch_windows: int = 32,
    reuse_window_rhythm: bool = True,
) -> ScoredWindows:
    """Score every gap-free stretch of ``reader`` (see the module docstring); raises a named error when
    nothing could be scored.

    A recording of exactly one window (a 10-s strip) whose one window's rhythm was measured on the rhythm
    lead takes that as the whole recording's rhythm (the same detector on the same samples) instead of
    detecting its beats twice; ``reuse_window_rhythm=False`` always runs the whole-recording detector."""
    fs, leads, n = _check_fs(reader.fs), tuple(reader.leads), int(reader.n_samples)  # before any chunk arithmetic
    clf.check_leads(leads)
    t_start = time.perf_counter()
    piecer = _Piecer(clf, fs, leads, piece_s, batch_windows)
    beats = _Beats(fs, piecer.rhythm_lead)
    chunk = max(piecer.win_n, int(round(chunk_s * fs)))
    one_window = reuse_window_rhythm and n == piecer.win_n  # the whole-recording beats wait (see below)
    gaps: list[tuple[int, int]] = []
    n_gaps = 0
    missing_n = 0
    lead_missing = np.zeros(len(leads), dtype=np.int64)
    gap_open: int | None = None
    whole: np.ndarray | None = None  # a one-window recording, as read
    any_nan = False
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = reader.read(a, b)
        if x.shape != (len(leads), b - a):
            raise RecordReadError(f"{reader.name}: read {x.shape[1]} samples at {a}, expected {b - a}")
        finite = bool(np.isfinite(x).all())  # the usual case: one pass, no gap to look for
        if finite:
            runs: Iterator[tuple[int, int, bool]] | tuple[tuple[int, int, bool], ...] = ((0, b - a, False),)
        else:
            if np.isinf(x).any():
                raise NonFiniteSignalError(f"{reader.name}: infinite sample values near {a / fs:.1f} s")
            any_nan = True
            nan = np.isnan(x)
            miss = nan.all(axis=0)  # a time gap: no lead has a sample; a lead missing alone sits out its pieces
            lead_missing += (nan & ~miss).sum(axis=1)
            runs = _all_runs(miss)
        if one_window:
            whole = x
        for s, e, missing in runs:
            if missing:
                piecer.end()
                if not one_window:
                    beats.gap(e - s)
                missing_n += e - s
                if gap_open is None:
                    gap_open = a + s
                continue
            if not piecer.open:
                if gap_open is not None:
                    n_gaps += 1
                    if len(gaps) < _MAX_GAPS_LISTED:
                        gaps.append((gap_open, a + s))
                    gap_open = None
                piecer.start(a + s)
            piecer.add(x[:, s:e] if (s, e) != (0, b - a) else x, may_miss=not finite)
            if not one_window:
                beats.push(x[piecer.rhythm_row, s:e])
    if gap_open is not None:
        n_gaps += 1
        if len(gaps) < _MAX_GAPS_LISTED:
            gaps.append((gap_open, n))
    piecer.end()
    reader.verify()
    coverage = Coverage(
        duration_s=n / fs,
        missing_s=missing_n / fs,
        unscored_s=piecer.unscored_n / fs,
        n_gaps=n_gaps,
        gaps=tuple((s / fs, e / fs) for s, e in gaps),
        lead_missing_s={lead: int(k) / fs for lead, k in zip(leads, lead_missing) if k},
    )
    if not piecer.probs:
        if piecer.unserved_error is not None:
            raise piecer.unserved_error
        if piecer.no_lead_error is not None:
            raise piecer.no_lead_error
        cfg = clf.bundle.preprocess_config
        if n_gaps == 0:
            raise SignalTooShortError(
                f"recording is {n / fs:.2f} s long; at least {cfg.min_duration_s:g} s is needed"
            )
        raise SignalTooShortError(
            f"{reader.name or 'recording'}: no gap-free stretch of at least {cfg.min_duration_s:g} s "
            f"({coverage.missing_fraction:.0%} of {n / fs:.1f} s missing in {n_gaps} gap(s)); nothing was scored"
        )
    probs = np.concatenate(piecer.probs, axis=0)
    if one_window:
        wr, first = piecer.window_rhythm, piecer.first_rhythm
        lead_x = (reader.read(0, n) if whole is None else whole)[piecer.rhythm_row]  # one chunk: all of it
        if (not n_gaps and len(wr) == 1 and first is not None and first.lead == beats.lead
                and not (any_nan and np.isnan(lead_x).any())):
            record_rhythm = first
        else:  # a gap, or the window's rhythm came from another lead: detect on the whole recording
            beats.push(lead_x)
            record_rhythm = beats.result()
    else:
        record_rhythm = beats.result()
    used = tuple(lead for lead in leads if any(lead in u for u in piecer.used))
    extra: tuple[str, ...] = ("gap",) if n_gaps or lead_missing.any() else ()
    polarity = np.concatenate(piecer.polarity)
    inverted = inverted_note(polarity)
    if inverted is not None:
        extra += (INVERTED_FLAG,)
    quality = _merge_quality(piecer.qualities, leads, extra)
    if piecer.left_out_missing:
        quality = QualityReport(quality.leads, quality.flags,
                                tuple(dict.fromkeys(quality.dropped_leads + tuple(piecer.left_out_missing))))
    notes: list[str] = list(reader.notes)
    if n_gaps:
        notes.append(
            f"{coverage.missing_s:.1f} s of {coverage.duration_s:.1f} s missing ({coverage.missing_fraction:.1%}) "
            f"in {n_gaps} gap(s); only the samples present were scored, no window overlaps a gap"
        )
    if piecer.unscored_n and n_gaps:
        notes.append(f"{coverage.unscored_s:.1f} s between gaps left unscored (stretches under "
                     f"{clf.bundle.preprocess_config.min_duration_s:g} s)")
    for lead, k in piecer.left_out_missing.items():
        notes.append(f"lead {lead}: {coverage.lead_missing_s.get(lead, 0.0):.2f} s missing while other leads "
                     f"were recorded; left out of the {k} piece(s) of up to {piece_s:g} s that hold those samples")
    if piecer.no_lead_pieces:
        notes.append(f"{piecer.no_lead_pieces} stretch(es) with no usable lead left unscored")
    if piecer.unserved_pieces:
        notes.append(f"{piecer.unserved_pieces} piece(s) left unscored: {piecer.unserved_error}")
    if inverted is not None:
        notes.append(inverted)
    dropped: dict[str, str] = {}
    for lead in quality.dropped_leads:
        why = [f for f in ("flat", "saturated", "out_of_range") if any(getattr(q, f) for q in quality.leads if q.lead == lead)]
        if lead in piecer.left_out_missing:
            why.append("missing samples")
        dropped[lead] = "/".join(why) or "unusable"
    return ScoredWindows(
        probs=probs,
        starts_s=tuple(piecer.starts),
        leads=used,
        quality=quality,
        coverage=coverage,
        notes=tuple(notes),
        latency_ms=(time.perf_counter() - t_start) * 1e3,
        rhythm=record_rhythm,
        window_rhythm=piecer.window_rhythm,
        routes=tuple(piecer.routes),
        leads_given=leads,
        dropped=dropped,
        polarity=polarity,
    )
