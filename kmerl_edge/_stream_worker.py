"""The inference worker behind stream sessions: a bounded queue of windows and one thread that scores
them in batches (across sessions, when a gateway shares it).

The worker applies the bundle's preprocessing to each window with the shared building blocks of
:mod:`kmerl_edge._preprocess` (quality on the device-rate samples → resample → band-pass → per-lead
z-score → zero-pad a short stretch after normalisation), exactly the steps of :func:`preprocess`. All
those functions work along the last axis, so windows of the same rate and length are stacked and
processed in one call; results are identical to one call per window.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from ._af_fusion import fusion_rhythm_lead
from ._leads import lead_ids
from ._polarity import INVERTED_FLAG, run_with_polarity
from ._preprocess import (
    LeadQuality,
    PreprocessConfig,
    QualityReport,
    _model_band,
    filter_signal,
    normalize_window,
)
from ._preprocess import _quality as _quality_of_rows
from ._stream_errors import StreamClosedError, StreamConfigError
from ._stream_types import SKIP_BACKLOG, SKIP_ERROR, SKIP_NO_USABLE_LEADS, SKIP_UNSERVED_LEADS
from .rhythm import RhythmResult, analyse

__all__ = ["InferenceWorker", "WindowJob", "Outcome", "WorkerStats", "warmup"]

_QUALITY_CHUNK = 256  # rows filtered together by the quality check (bounds the float64 working set)


class _Sink(Protocol):
    def _complete(self, job: WindowJob, outcome: Outcome) -> None: ...


@dataclass(eq=False)
class WindowJob:
    """One window waiting for inference: ``data`` (n_candidate_leads, m) float32 mV at ``fs``."""

    sink: _Sink
    index: int
    fs: float
    data: np.ndarray
    leads: tuple[str, ...]
    excluded: dict[str, str]
    t_ready: float
    info: Any = None  # the session's own bookkeeping (times, flags), passed back untouched
    #: for a window with gaps: (start in the window, length) of each kept stretch, in device samples;
    #: ``data`` is then those stretches one after the other. ``None``: ``data`` is the whole window.
    segments: tuple[tuple[int, int], ...] | None = None


@dataclass
class Outcome:
    """What the worker hands back for one job."""

    probs: np.ndarray | None
    quality: QualityReport | None
    leads_used: tuple[str, ...]
    excluded: dict[str, str]
    t_done: float
    reason: str | None = None
    detail: str = ""
    bundle: str = ""
    #: flags of the scored window itself (``lead_I_inverted``), also in ``quality.flags``
    flags: tuple[str, ...] = ()


@dataclass
class WorkerStats:
    submitted: int = 0
    processed: int = 0
    dropped: int = 0
    batches: int = 0
    errors: int = 0
    max_queue: int = 0
    busy_s: float = 0.0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def mean_batch(self) -> float:
        return float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0


_UNUSABLE_ORDER = ("flat", "saturated", "out_of_range")


class InferenceWorker:
    """Scores :class:`WindowJob` s from a bounded queue on one thread (or inline if ``synchronous``).

    When the queue holds ``queue_size`` windows and another arrives, the *oldest* pending window is
    dropped and reported to its session as a skipped result (``dropped_backlog``), never silently.
    """

    def __init__(
        self,
        classifier: Any,
        *,
        queue_size: int = 64,
        max_batch: int = 64,
        synchronous: bool = False,
        name: str = "kmerl-inference",
    ) -> None:
        if queue_size < 1 or max_batch < 1:
            raise StreamConfigError("queue_size and max_batch must be >= 1")
        self.classifier = classifier
        self.config: PreprocessConfig = classifier.bundle.preprocess_config
        self.queue_size = int(queue_size)
        self.max_batch = int(max_batch)
        self.synchronous = bool(synchronous)
        self.name = name
        self.stats = WorkerStats()
        self._q: deque[WindowJob] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._in_flight = 0
        if not self.synchronous:  # start now so the thread's warm-up overlaps the first 10 s of signal
            with self._cond:
                self._ensure_thread()

    # -- queue side (the reader's thread) -------------------------------------------------------------
    def submit(self, job: WindowJob) -> None:
        """Queue a window (never blocks on inference). Drops and reports the oldest when full."""
        if self.synchronous:
            self.stats.submitted += 1
            self._process([job])
            return
        dropped: list[WindowJob] = []
        with self._cond:
            if self._stopping:
                raise StreamClosedError("the inference worker is stopped")
            self.stats.submitted += 1
            while len(self._q) >= self.queue_size:
                dropped.append(self._q.popleft())
                self.stats.dropped += 1
            self._q.append(job)
            self.stats.max_queue = max(self.stats.max_queue, len(self._q))
            self._ensure_thread()
            self._cond.notify()
        now = time.perf_counter()
        for old in dropped:
            old.sink._complete(
                old,
                Outcome(
                    None,
                    None,
                    (),
                    dict(old.excluded),
                    now,
                    SKIP_BACKLOG,
                    f"inference fell behind: oldest of {self.queue_size} pending windows dropped",
                ),
            )

    @property
    def pending(self) -> int:
        """Windows queued or being scored."""
        with self._cond:
            return len(self._q) + self._in_flight

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Score what is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        import scipy.signal  # noqa: F401  (seconds on first import: pay it before the first window)

        while True:
            with self._cond:
                while not self._q and not self._stopping:
                    self._cond.wait()
                if not self._q:
                    return
                n = min(self.max_batch, len(self._q))
                batch = [self._q.popleft() for _ in range(n)]
                self._in_flight = n
            try:
                self._process(batch)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    # -- scoring ----------------------------------------------------------------------------------------
    def _process(self, jobs: Sequence[WindowJob]) -> None:
        t0 = time.perf_counter()
        done: set[int] = set()
        try:
            self._score(jobs, done)
        except Exception as exc:  # never let one bad batch kill the worker silently
            self.stats.errors += 1
            now = time.perf_counter()
            for i, job in enumerate(jobs):
                if i not in done:
                    job.sink._complete(
                        job,
                        Outcome(None, None, (), dict(job.excluded), now, SKIP_ERROR, f"{type(exc).__name__}: {exc}"),
                    )
        self.stats.batches += 1
        self.stats.processed += len(jobs)
        self.stats.batch_sizes.append(len(jobs))
        self.stats.busy_s += time.perf_counter() - t0

    def _quality(
        self, jobs: Sequence[WindowJob]
    ) -> tuple[list[list[LeadQuality]], dict[tuple[int, int], np.ndarray]]:
        """Per-lead quality of every job, rows of equal rate and length assessed together; also the
        band-passed rows, keyed (job, row), which are the model's band-pass when the rate is the model's."""
        cfg = self.config
        groups: dict[tuple[float, int], list[tuple[int, int]]] = {}
        for j, job in enumerate(jobs):
            for r in range(job.data.shape[0]):
                groups.setdefault((job.fs, job.data.shape[1]), []).append((j, r))
        out: list[list[LeadQuality | None]] = [[None] * job.data.shape[0] for job in jobs]
        bands: dict[tuple[int, int], np.ndarray] = {}
        for (fs, _), all_rows in groups.items():
            for k in range(0, len(all_rows), _QUALITY_CHUNK):
                rows = all_rows[k : k + _QUALITY_CHUNK]
                x = np.stack([jobs[j].data[r] for j, r in rows]).astype(np.float64)
                band = filter_signal(x, fs=fs, config=cfg)
                names = tuple(f"row{i}" for i in range(len(rows)))  # placeholders: relabelled below
                rep = _quality_of_rows(x, fs, names, cfg, band)
                for i, ((j, r), lq) in enumerate(zip(rows, rep.leads)):
                    out[j][r] = replace(lq, lead=jobs[j].leads[r])
                    bands[(j, r)] = band[i]
        return [[q for q in row if q is not None] for row in out], bands

    def _gappy_window(self, x: np.ndarray, fs: float, segments: Sequence[tuple[int, int]]) -> np.ndarray:
        """Model input for a window with gaps: each gap-free stretch resampled and band-passed on its own,
        all stretches z-scored together, placed at their times; zeros where samples are missing."""
        cfg = self.config
        win = cfg.window_samples
        scale = cfg.target_fs / fs
        parts: list[tuple[int, np.ndarray]] = []
        off = 0
        for start, n in segments:
            parts.append((int(round(start * scale)), _model_band(x[:, off : off + n], fs, cfg)))
            off += n
        z = normalize_window(np.concatenate([y for _, y in parts], axis=-1), config=cfg)
        out = np.zeros((x.shape[0], win), dtype=np.float32)
        k = 0
        for pos, y in parts:
            n = y.shape[-1]
            if pos < win:
                m = min(n, win - pos)
                out[:, pos : pos + m] = z[:, k : k + m]
            k += n
        return out

    def _score(self, jobs: Sequence[WindowJob], done: set[int]) -> None:
        cfg = self.config
        clf = self.classifier
        quality, bands = self._quality(jobs)
        plans: list[tuple[int, list[int], QualityReport, dict[str, str]]] = []
        for j, job in enumerate(jobs):
            excluded = dict(job.excluded)
            for lq in quality[j]:
                if not lq.usable:
                    excluded[lq.lead] = next(f for f in _UNUSABLE_ORDER if getattr(lq, f))
            info_flags = tuple(getattr(job.info, "flags", ()))
            report = QualityReport(
                tuple(quality[j]), flags=info_flags, dropped_leads=tuple(lead for lead in excluded)
            )
            keep = [r for r, lq in enumerate(quality[j]) if lq.usable]
            if not keep:
                detail = ", ".join(f"{k}: {v}" for k, v in excluded.items()) or "no leads"
                job.sink._complete(
                    job,
                    Outcome(None, report, (), excluded, time.perf_counter(), SKIP_NO_USABLE_LEADS, detail),
                )
                done.add(j)
                continue
            plans.append((j, keep, report, excluded))

        # preprocessing, stacked by (rate, length, number of leads); windows with gaps one by one
        by_shape: dict[tuple[float, int, int], list[int]] = {}
        model_in: dict[int, np.ndarray] = {}
        for p, (j, keep, _, _) in enumerate(plans):
            job = jobs[j]
            if job.segments is not None:
                model_in[p] = self._gappy_window(job.data[keep].astype(np.float64), job.fs, job.segments)
            else:
                by_shape.setdefault((job.fs, job.data.shape[1], len(keep)), []).append(p)
        win = cfg.window_samples
        for (fs, _, _), members in by_shape.items():
            if abs(fs - cfg.target_fs) < 1e-9:  # already band-passed at the model rate by the quality check
                y = np.stack([np.stack([bands[(plans[p][0], r)] for r in plans[p][1]]) for p in members])
            else:
                x = np.stack([jobs[plans[p][0]].data[plans[p][1]] for p in members]).astype(np.float64)
                y = _model_band(x, fs, cfg)
            y = normalize_window(y[..., :win], config=cfg)
            w = np.zeros((len(members), y.shape[1], win), dtype=np.float32)
            w[..., : y.shape[-1]] = y
            for k, p in enumerate(members):
                model_in[p] = w[k]

        # inference, batched by identical lead set (lead embeddings are indexed by lead id); a lead set the
        # session's bundle does not serve (supported_lead_sets) goes to the bundle that serves it
        by_leads: dict[tuple[tuple[str, ...], int], list[int]] = {}
        owners: dict[int, Any] = {}
        for p, (j, keep, _, _) in enumerate(plans):
            names = tuple(jobs[j].leads[r] for r in keep)
            own = getattr(jobs[j].sink, "bundle_classifier", None) or clf  # the session's own bundle
            owners[id(own)] = own
            by_leads.setdefault((names, id(own)), []).append(p)
        for (names, key), members in by_leads.items():
            ids = lead_ids(names)
            target = self._route(owners[key], names)
            if target is None:
                err = str(clf.unserved_error(names, tuple(plans[members[0]][3])))
                now = time.perf_counter()
                for p in members:
                    j, keep, report, excluded = plans[p]
                    jobs[j].sink._complete(jobs[j], Outcome(None, report, (), excluded, now, SKIP_UNSERVED_LEADS, err))
                    done.add(j)
                continue
            bundle = str(target.bundle.path)
            for k in range(0, len(members), self.max_batch):
                part = members[k : k + self.max_batch]
                rhythm = None
                if getattr(target, "needs_rhythm", False):  # the fusion's / stack's beats: as predict finds them
                    lead = fusion_rhythm_lead(ids)
                    rhythm = [_device_rhythm(jobs[plans[p][0]], plans[p][1], names, lead) for p in part]
                probs, polarity = run_with_polarity(target, np.stack([model_in[p] for p in part]), ids, rhythm=rhythm)
                now = time.perf_counter()
                for p, pr, pol in zip(part, probs, polarity.tolist()):
                    j, keep, report, excluded = plans[p]
                    out = Outcome(pr, report, names, excluded, now, bundle=bundle)
                    if pol == 1:  # lead I looks inverted: flagged and explained, the scores untouched
                        out.quality = replace(report, flags=report.flags + (INVERTED_FLAG,))
                        out.flags = (INVERTED_FLAG,)
                    jobs[j].sink._complete(jobs[j], out)
                    done.add(j)

    @staticmethod
    def _route(own: Any, names: tuple[str, ...]) -> Any:
        """The classifier for this lead set: the session's own bundle while it serves the leads that passed
        the quality check (a session keeps its bundle: its smoothing and event hysteresis see one model's
        probabilities; see :meth:`kmerl_edge.Classifier.stream`), else the bundle that serves them
        (``Classifier.route``); ``None`` when none does."""
        serves = getattr(own, "serves", None)
        if serves is None or serves(names):
            return own
        return own.route(names)


def _device_rhythm(job: WindowJob, keep: Sequence[int], names: tuple[str, ...], lead: str) -> RhythmResult | None:
    """The window's rhythm on ``lead`` at the device rate (what ``predict`` finds on the same samples);
    ``None`` for a window assembled around gaps (the fusion then analyses the model window)."""
    if job.segments is not None:
        return None
    return analyse(job.data[keep[names.index(lead)]], fs=job.fs, lead=lead)


class _Discard:
    def _complete(self, job: WindowJob, outcome: Outcome) -> None:
        pass


def warmup(classifier: Any, *, fs: float, leads: Sequence[str]) -> float:
    """Run one synthetic window through quality → preprocessing → backend, so that the first real
    window does not pay for library imports and backend initialisation. Returns the seconds it took."""
    t0 = time.perf_counter()
    n = int(round(classifier.bundle.preprocess_config.window_s * fs))
    rng = np.random.default_rng(0)
    data = (0.5 * rng.standard_normal((len(leads), n))).astype(np.float32)
    worker = InferenceWorker(classifier, synchronous=True)
    worker.submit(WindowJob(_Discard(), 0, float(fs), data, tuple(leads), {}, time.perf_counter()))
    return time.perf_counter() - t0
