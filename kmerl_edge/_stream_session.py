"""The live session: ring buffers at the device rate → a window every hop → inference worker → results
in window order, smoothing and rhythm events. See :mod:`kmerl_edge.stream` for the user guide."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ._errors import KmerlError, LeadError, SamplingRateError, SignalShapeError
from ._leads import canonical_leads
from ._preprocess import _check_fs
from ._source import DeviceInfo, Gap, LeadStatus, LinkStatus, SampleBlock
from ._stream_errors import DeviceChangedError, StreamClosedError, StreamConfigError, StreamInputError
from ._stream_events import EventDetector, Smoother
from ._stream_ring import BAD_LEAD_OFF, BAD_NONFINITE, BAD_OK, RingBuffer
from ._stream_types import (
    SKIP_BACKLOG,
    SKIP_FRAGMENTED,
    SKIP_GAP,
    SKIP_NO_USABLE_LEADS,
    EventRule,
    RhythmEvent,
    StreamConfig,
    StreamStats,
    WindowResult,
)
from ._stream_worker import InferenceWorker, Outcome, WindowJob
from .rhythm import DEFAULT_RATE_EVENTS, RateEventDetector, RhythmResult, RhythmTracker, choose_rhythm_lead

__all__ = ["StreamSession", "StreamClosedError"]

_CONFIG_FIELDS = {f.name for f in fields(StreamConfig)}
#: Highest device rate a session accepts (an ECG front end; the firmware bridge refuses the same): a
#: bogus rate must not allocate gigabytes of ring buffer.
MAX_STREAM_FS = 32_000.0


@dataclass(frozen=True)
class _WindowInfo:
    t_start: float
    t_end: float
    missing_fraction: float
    flags: tuple[str, ...]
    rhythm: RhythmResult | None = None


def _runs(gap: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every stretch of ``gap == False``, in order."""
    ok = np.concatenate(([0], (~gap).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(ok))
    return [(int(a), int(b - a)) for a, b in zip(edges[0::2], edges[1::2])]


def _percentile(values: Iterable[float], q: float) -> float:
    arr = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


#: largest |t0| a chunk may carry (about 317 years; time.time() is ~1.8e9): float64 seconds still resolve
#: a sample at 32 kHz there, and ``t0 * fs`` stays a finite whole number of samples
MAX_T0_S = 1e10


class StreamSession:
    """Diagnoses from a live patch: push samples as they arrive, get a result every hop.

    Create it with :meth:`kmerl_edge.Classifier.stream` (or :meth:`kmerl_edge.stream.Gateway.open`)::

        session = clf.stream(fs=130.0, leads=["I"], hop_s=2.0)
        for result in session.push(chunk):          # chunk: (n_leads, n) in mV, any n
            ...
        session.push_gap(n_samples)                 # samples the source reported lost
        session.close()

    ``fs`` is the device rate (required, no default); ``leads`` names the rows of every chunk. Keyword
    overrides of :class:`StreamConfig` fields (``max_gap_fraction=0.1``, ``smoothing_windows=3`` …) may
    be passed directly or as ``config=StreamConfig(...)``; ``hop_s`` wins over ``config.hop_s``.

    Threading: :meth:`push` only appends to the ring buffers and queues finished windows; a worker thread
    scores them. ``push`` returns the results that have *completed* since the last call (in window
    order; usually those of earlier windows), so a reader that pushes steadily sees each result about one
    chunk later. :meth:`results` and :meth:`events` drain what is ready; :meth:`close` waits for every
    pending window and returns the rest. Each result is handed out exactly once.
    """

    def __init__(
        self,
        classifier: Any,
        *,
        fs: float,
        leads: Sequence[str],
        hop_s: float | None = None,
        config: StreamConfig | None = None,
        worker: InferenceWorker | None = None,
        device_id: str | None = None,
        **overrides: Any,
    ) -> None:
        unknown = set(overrides) - _CONFIG_FIELDS
        if unknown:
            raise StreamConfigError(f"unknown stream option(s): {', '.join(sorted(unknown))}")
        cfg = config or StreamConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        if hop_s is not None:
            cfg = replace(cfg, hop_s=float(hop_s))
        self.config = cfg
        self.classifier = classifier
        self.device_id = device_id
        self.fs = _check_fs(fs)
        if self.fs > MAX_STREAM_FS:
            raise SamplingRateError(
                f"a stream session takes device rates up to {MAX_STREAM_FS:g} Hz, got {self.fs:g} Hz"
            )
        self.leads: tuple[str, ...] = classifier.check_leads(leads)
        #: the classifier whose bundle scores this session's windows while it serves the leads that pass
        #: (the one its lead set picks: :meth:`kmerl_edge.Classifier.for_leads`; also on a shared worker)
        pick = getattr(classifier, "for_leads", None)
        own = pick(self.leads) if pick is not None else classifier
        self.bundle_classifier: Any = classifier if own.bundle is classifier.bundle else own
        self._lead_index = {name: i for i, name in enumerate(self.leads)}
        pc = classifier.bundle.preprocess_config
        self.window_s = float(pc.window_s)
        self._win = int(round(pc.window_s * self.fs))
        self._hop = max(1, int(round(cfg.hop_s * self.fs)))
        self._min_total = int(math.ceil(pc.min_duration_s * self.fs - 1e-6))
        self._min_run = max(1, int(math.ceil(cfg.min_segment_s * self.fs - 1e-6)))
        self._ring = RingBuffer(len(self.leads), self._win)
        self._next_end = self._win
        self._origin: float | None = None
        self._lead_off: set[int] = set()
        self._tol_s = max(cfg.clock_tolerance_s, 0.5 / self.fs)
        self._last_data_end: int | None = None  # slot index just after the last real sample
        self._late_next: float | None = None  # where a run of late chunks would continue
        self._late_run = 0

        if worker is None:
            worker = InferenceWorker(
                classifier,
                queue_size=cfg.queue_size,
                max_batch=cfg.max_batch,
                synchronous=cfg.synchronous,
                name=f"kmerl-inference-{device_id or id(self)}",
            )
            self._own_worker = True
        else:
            if worker.classifier is not classifier:
                raise StreamConfigError("a shared worker must serve the session's own classifier")
            self._own_worker = False
        self.worker = worker

        # delivery (shared with the worker thread)
        self._cond = threading.Condition()
        self._n_windows = 0
        self._next_release = 0
        self._ready: dict[int, tuple[WindowJob | None, _WindowInfo, Outcome]] = {}
        self._out: deque[WindowResult] = deque()
        self._events_out: deque[RhythmEvent] = deque()
        self._closed = False
        self._smoother = Smoother(cfg.smoothing_windows, cfg.hop_s)
        self._detectors = self._make_detectors(cfg.events)
        # rhythm: beats of one lead at the device rate, kept across windows (logic in kmerl_edge.rhythm)
        self._rhythm_lead = self.leads.index(choose_rhythm_lead(self.leads))
        self._rhythm = RhythmTracker(fs=self.fs, lead=self.leads[self._rhythm_lead])
        rules = DEFAULT_RATE_EVENTS if cfg.rate_events is None else cfg.rate_events
        self._rate_detectors = [RateEventDetector(rule, device_id) for rule in rules]

        # counters
        self._samples = 0
        self._gaps = 0
        self._gap_samples = 0
        self._clock_resets = 0
        self._scored = 0
        self._skipped: dict[str, int] = {}
        self._lead_exclusions: dict[str, int] = {}
        self._n_events = 0
        self._overflow = 0
        self._empty_windows = 0
        self._late_chunks = 0
        self._late_samples = 0
        self._latencies: deque[float] = deque(maxlen=cfg.latency_history)

    # -- setup --------------------------------------------------------------------------------------------
    def _make_detectors(self, rules: tuple[EventRule, ...] | None) -> list[EventDetector]:
        queries = self.classifier.bundle.all_queries()[1]
        if rules is None:
            fusion = getattr(self.bundle_classifier, "af_fusion", None)  # the rule of the bundle that scores
            tuned = fusion.stream_rule(self.config.hop_s) if fusion is not None else None
            rules = (tuned or EventRule(),) if any(c == EventRule.label for _, c in queries) else ()
        out = []
        for rule in rules:
            hits = [i for i, (ls, c) in enumerate(queries) if c == rule.label and rule.label_set in (None, ls)]
            if not hits:
                raise KmerlError(
                    f"event rule for {rule.label!r}"
                    + (f" in {rule.label_set!r}" if rule.label_set else "")
                    + " names a class the bundle does not have"
                )
            out.append(EventDetector(rule, queries[hits[0]][0], hits[0], self.device_id))
        return out

    # -- the reader's side -----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def t_now(self) -> float:
        """Device time just after the last sample slot received (0.0 before anything arrived)."""
        return (self._origin or 0.0) + self._ring.n_total / self.fs

    def _rows(self, chunk: Any, leads: Sequence[str] | None) -> np.ndarray:
        x = np.asarray(chunk)
        if x.dtype.kind not in "fiu":
            raise SignalShapeError(f"chunk must be numeric, got dtype {x.dtype}")
        if x.ndim == 1 and len(self.leads) == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] != (len(leads) if leads is not None else len(self.leads)):
            raise SignalShapeError(
                f"chunk must be (n_leads={len(self.leads)}, n_samples) in the session's lead order, got {x.shape}"
            )
        if leads is not None:
            names = canonical_leads(leads)
            if tuple(names) != self.leads:
                if set(names) != set(self.leads):
                    raise LeadError(
                        f"chunk carries leads {', '.join(names)} but the session streams {', '.join(self.leads)}"
                    )
                x = x[[names.index(lead) for lead in self.leads]]
        return x

    def _check_t0(self, t0: Any) -> float | None:
        if t0 is None:
            return None
        try:
            t = float(t0)
        except (TypeError, ValueError):
            raise StreamInputError(f"t0 must be a device time in seconds, got {t0!r}") from None
        if not math.isfinite(t):
            raise StreamInputError(f"t0 must be a finite device time in seconds, got {t0!r}")
        if abs(t) > MAX_T0_S:  # beyond it, t0 * fs overflows and float seconds no longer resolve a sample
            raise StreamInputError(f"t0 must be a device time within ±{MAX_T0_S:g} s, got {t0!r}")
        return t

    def _reset_clock(self, t0: float) -> None:
        """The device's timeline restarts at ``t0``: nothing before is joined to what follows."""
        self._clock_resets += 1
        self._ring.invalidate()
        self._rhythm.reset()
        self._last_data_end = None
        self._origin = t0 - self._ring.n_total / self.fs
        self._late_next = None
        self._late_run = 0

    def _align(self, t0: float | None, n: int) -> bool:
        """Place a chunk of ``n`` samples stamped ``t0`` on the session's clock (see :mod:`kmerl_edge.stream`).

        Returns False when the chunk is late (behind the clock) and is dropped. O(1) whatever ``t0`` is."""
        if self._origin is None:
            self._origin = (0.0 if t0 is None else t0) - self._ring.n_total / self.fs
            return True
        if t0 is None:
            return True
        d = t0 - self.t_now
        if abs(d) <= self._tol_s:  # jitter: the samples go where the count says
            self._late_run = 0
            return True
        if d > 0:  # ahead: the samples in between were lost
            self._late_run = 0
            k = int(round(d * self.fs))
            self._gaps += 1
            self._gap_samples += k
            self._advance_gap(k)
            return True
        # behind the clock: old samples, or the device's clock restarted; a run of chunks that agree
        # on the new times confirms a restart (``reset_confirm``), a lone late chunk is dropped
        if self._late_next is not None and abs(t0 - self._late_next) <= self._tol_s:
            self._late_run += 1
        else:
            self._late_run = 1
        self._late_next = t0 + n / self.fs
        if self._late_run >= self.config.reset_confirm:
            self._reset_clock(t0)
            return True
        self._late_chunks += 1
        self._late_samples += n
        return False

    def push(
        self,
        chunk: Any,
        t0: float | None = None,
        *,
        leads: Sequence[str] | None = None,
        reset: bool = False,
    ) -> list[WindowResult]:
        """Append ``chunk`` ((n_leads, n) mV at the device rate; 1-D for one lead). ``t0``: the device
        time of its first sample (see the clock model in :mod:`kmerl_edge.stream`); ``leads``: the
        chunk's row names if they differ in order from the session's; ``reset``: the device's clock
        restarted at this chunk (nothing before is joined to it).

        Never waits for inference and does O(len(chunk)) work whatever ``t0`` says. Returns the results
        completed since the last call, in window order. Non-finite samples are not filled: that lead is
        left out of the windows that hold them.
        """
        if self._closed:
            raise StreamClosedError("push() on a closed stream session")
        x = self._rows(chunk, leads)
        t = self._check_t0(t0)
        n = int(x.shape[1])
        if reset and t is not None and self._origin is not None:
            self._reset_clock(t)
        elif not self._align(t, n):
            return self._take()
        if n:
            x = x.astype(np.float32, copy=False)
            bad = np.zeros(x.shape, dtype=np.int8)
            finite = np.isfinite(x)
            if not finite.all():
                bad[~finite] = BAD_NONFINITE
                x = np.where(finite, x, np.float32(0.0))
            for i in self._lead_off:
                bad[i] = BAD_LEAD_OFF
            self._samples += n
            self._advance(n, x, bad)
        return self._take()

    def push_gap(self, n_samples: int, t0: float | None = None, *, reset: bool = False) -> list[WindowResult]:
        """Record ``n_samples`` per lead the source reported lost (starting at device time ``t0`` if
        given). Nothing is invented: windows holding too much of a gap are skipped with reason ``gap``;
        windows holding no sample at all produce no result (counted in ``StreamStats.empty_windows``),
        so a gap of any length costs O(1). ``reset``: the device's timeline breaks after the gap."""
        if self._closed:
            raise StreamClosedError("push_gap() on a closed stream session")
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
            raise StreamInputError(f"a gap is a non-negative whole number of samples, got {n_samples!r}")
        n = int(n_samples)
        t = self._check_t0(t0)
        if t is not None and self._origin is not None:
            ahead = t - self.t_now
            if ahead < -self._tol_s:  # the gap starts behind the clock: only its part beyond counts
                n = max(0, int(round((t + n / self.fs - self.t_now) * self.fs)))
                t = None
        if self._align(t, 0) and n:
            self._gaps += 1
            self._gap_samples += n
            self._advance_gap(n)
        if reset:
            self._reset_clock(self.t_now)
        return self._take()

    def set_lead_off(self, leads: str | Sequence[str]) -> None:
        """Declare which leads the device reports off: one lead name, or a sequence of names (replaces
        the previous set; ``[]`` clears it).

        Samples of those leads received from now on are marked ``lead_off`` and the lead is left out of
        every window holding any of them. Leads the session does not stream are ignored; names that are
        not leads raise :class:`~kmerl_edge.UnknownLeadError`.
        """
        if isinstance(leads, str):
            names: list[str] = [leads]
        elif isinstance(leads, (list, tuple)) and all(isinstance(v, str) for v in leads):
            names = list(leads)
        else:
            raise StreamInputError(
                f"set_lead_off takes a lead name or a list/tuple of lead names, got {type(leads).__name__}"
            )
        off: set[int] = set()
        for lead in canonical_leads(names) if names else ():
            if lead in self._lead_index:
                off.add(self._lead_index[lead])
        self._lead_off = off

    def feed(self, message: Any) -> list[WindowResult]:
        """Hand one stream message of a :class:`~kmerl_edge.stream.Source` to the session:
        :class:`SampleBlock` → :meth:`push`, :class:`Gap` → :meth:`push_gap`, :class:`LeadStatus` →
        :meth:`set_lead_off`; :class:`DeviceInfo` of this session's device and :class:`LinkStatus` change
        nothing. A device that now streams another rate or other leads raises
        :class:`~kmerl_edge.stream.DeviceChangedError`: close this session and open one for the new
        device set-up (``kmerl-edge stream`` does). Returns :meth:`push`'s results."""
        if isinstance(message, SampleBlock):
            self._check_device(message.fs, message.leads)
            return self.push(message.data, message.t0, leads=message.leads)
        if isinstance(message, Gap):
            return self.push_gap(message.n_samples, message.t0, reset=message.reset)
        if isinstance(message, LeadStatus):
            self.set_lead_off(tuple(message.lead_off))
        elif isinstance(message, DeviceInfo):
            self._check_device(message.fs, None)
        elif not isinstance(message, LinkStatus):
            raise StreamInputError(f"feed() takes stream messages (SampleBlock, Gap, ...), got {type(message).__name__}")
        return self._take()

    def _check_device(self, fs: float, leads: Sequence[str] | None) -> None:
        if abs(float(fs) - self.fs) > 1e-6 * self.fs:
            raise DeviceChangedError(f"samples at {fs:g} Hz arrived in a session at {self.fs:g} Hz")
        if leads is not None and set(canonical_leads(leads)) != set(self.leads):
            raise DeviceChangedError(
                f"the device now streams {', '.join(leads)}; this session streams {', '.join(self.leads)}"
            )

    def _advance(self, n: int, x: np.ndarray | None, bad: np.ndarray | None) -> None:
        """Write ``n`` slots (samples, or a gap when ``x`` is None), emitting a window at each hop."""
        ring = self._ring
        done = 0
        while done < n:
            step = min(n - done, self._next_end - ring.n_total)
            if x is None:
                ring.write_gap(step)
                self._rhythm.gap(step)
            else:
                assert bad is not None
                ring.write(x[:, done : done + step], bad[:, done : done + step])
                li = self._rhythm_lead
                self._rhythm.push(x[li, done : done + step], bad[li, done : done + step])
                self._last_data_end = ring.n_total
            done += step
            if ring.n_total == self._next_end:
                self._emit_window()
                self._next_end += self._hop

    def _advance_gap(self, n: int) -> None:
        """``n`` missing slots in O(window) work: hop by hop while windows still hold samples, then the
        windows that would hold nothing are skipped at once (counted, no result)."""
        ring = self._ring
        if self._last_data_end is not None:
            k = min(n, max(0, self._last_data_end + self._win - ring.n_total))
        else:
            k = 0
        self._advance(k, None, None)
        rest = n - k
        if rest <= 0:
            return
        ring.write_gap(rest)
        self._rhythm.gap(rest)
        if self._next_end <= ring.n_total:
            skipped = (ring.n_total - self._next_end) // self._hop + 1
            self._empty_windows += skipped
            self._next_end += skipped * self._hop

    def _emit_window(self) -> None:
        if self._last_data_end is None or self._last_data_end <= self._ring.n_total - self._win:
            self._empty_windows += 1  # nothing received in this window: no result (and no work)
            return
        index = self._n_windows
        self._n_windows += 1
        t_end = self.t_now
        t_start = t_end - self._win / self.fs
        gap = self._ring.gap_window(self._win)
        missing = float(gap.mean())
        rhythm = self._rhythm.window(self._win, t_end=t_end)

        def skip(reason: str, detail: str, flags: tuple[str, ...] = ()) -> None:
            info = _WindowInfo(t_start, t_end, missing, flags, rhythm)
            self._complete_info(
                None, info, Outcome(None, None, (), {}, time.perf_counter(), reason, detail), index
            )

        if missing > self.config.max_gap_fraction:
            skip(SKIP_GAP, f"{missing:.0%} of the window missing (limit {self.config.max_gap_fraction:.0%})")
            return
        data, gap, bad = self._ring.window(self._win)
        flags: tuple[str, ...] = ()
        segments: tuple[tuple[int, int], ...] | None = None
        if missing > 0:
            runs = [r for r in _runs(gap) if r[1] >= self._min_run]
            total = sum(n for _, n in runs)
            if total < self._min_total:
                skip(
                    SKIP_FRAGMENTED,
                    f"gap-free stretches of >= {self._min_run / self.fs:.2f} s add up to {total / self.fs:.2f} s "
                    f"< {self._min_total / self.fs:.2f} s",
                    ("gap",),
                )
                return
            segments = tuple(runs)
            data = np.concatenate([data[:, a : a + n] for a, n in runs], axis=1)
            bad = np.concatenate([bad[:, a : a + n] for a, n in runs], axis=1)
            flags = ("gap",)
        excluded: dict[str, str] = {}
        keep: list[int] = []
        codes = bad.max(axis=1) if bad.size else np.zeros(len(self.leads), dtype=np.int8)
        for i, lead in enumerate(self.leads):
            if codes[i] == BAD_OK:
                keep.append(i)
            else:
                excluded[lead] = "lead_off" if (bad[i] == BAD_LEAD_OFF).any() else "missing"
        info = _WindowInfo(t_start, t_end, missing, flags, rhythm)
        if not keep:
            self._complete_info(
                None,
                info,
                Outcome(
                    None,
                    None,
                    (),
                    excluded,
                    time.perf_counter(),
                    SKIP_NO_USABLE_LEADS,
                    ", ".join(f"{k}: {v}" for k, v in excluded.items()),
                ),
                index,
            )
            return
        job = WindowJob(
            sink=self,
            index=index,
            fs=self.fs,
            data=data[keep] if len(keep) < len(self.leads) else data,
            leads=tuple(self.leads[i] for i in keep),
            excluded=excluded,
            t_ready=time.perf_counter(),
            info=info,
            segments=segments,
        )
        self.worker.submit(job)

    # -- delivery (reader thread or worker thread) -------------------------------------------------------------
    def _complete(self, job: WindowJob, outcome: Outcome) -> None:
        self._complete_info(job, job.info, outcome, job.index)

    def _complete_info(self, job: WindowJob | None, info: _WindowInfo, outcome: Outcome, index: int) -> None:
        with self._cond:
            self._ready[index] = (job, info, outcome)
            while self._next_release in self._ready:
                j, inf, out = self._ready.pop(self._next_release)
                self._release(self._next_release, j, inf, out)
                self._next_release += 1
            self._cond.notify_all()

    def _release(self, index: int, job: WindowJob | None, info: _WindowInfo, out: Outcome) -> None:
        latency = (out.t_done - job.t_ready) * 1e3 if job is not None else 0.0
        for lead in out.excluded:
            self._lead_exclusions[lead] = self._lead_exclusions.get(lead, 0) + 1
        if out.probs is None:
            reason = out.reason or "unknown"
            self._skipped[reason] = self._skipped.get(reason, 0) + 1
            res = WindowResult(
                index=index,
                t_start=info.t_start,
                t_end=info.t_end,
                scores={},
                by_label_set={},
                smoothed={},
                quality=out.quality,
                leads_used=(),
                excluded_leads=dict(out.excluded),
                missing_fraction=info.missing_fraction,
                latency_ms=latency,
                skipped=True,
                reason=reason,
                detail=out.detail,
                device_id=self.device_id,
                flags=info.flags,
                rhythm=info.rhythm,
            )
        else:
            self._scored += 1
            if self._scored > 1:  # the first scored window pays one-off warm-up: not in the statistics
                self._latencies.append(latency)
            probs = np.asarray(out.probs, dtype=np.float64)
            flat, by = self.classifier.scores_from_probs(probs)
            sm = self._smoother(info.t_end, probs)
            smoothed = flat if sm is probs else self.classifier.scores_from_probs(sm)[0]
            res = WindowResult(
                index=index,
                t_start=info.t_start,
                t_end=info.t_end,
                scores=flat,
                by_label_set=by,
                smoothed=smoothed,
                quality=out.quality,
                leads_used=out.leads_used,
                excluded_leads=dict(out.excluded),
                missing_fraction=info.missing_fraction,
                latency_ms=latency,
                device_id=self.device_id,
                flags=info.flags + out.flags,
                rhythm=info.rhythm,
                bundle=out.bundle,
            )
            for det in self._detectors:
                ev = det.update(index, info.t_start, info.t_end, sm,
                                rhythm_ok=info.rhythm is not None and info.rhythm.usable)
                if ev is not None:
                    self._emit_event(ev)
        for rdet in self._rate_detectors:
            rev = rdet.update(index, info.t_start, info.t_end, info.rhythm)
            if rev is not None:
                self._emit_event(rev)
        self._out.append(res)
        if len(self._out) > self.config.results_buffer:
            self._out.popleft()
            self._overflow += 1

    def _take(self) -> list[WindowResult]:
        if not self._out:
            return []
        with self._cond:
            out = list(self._out)
            self._out.clear()
        return out

    # -- the consumer's side -------------------------------------------------------------------------------
    def poll(self) -> list[WindowResult]:
        """Results completed and not yet handed out (never waits)."""
        return self._take()

    def results(self, timeout: float | None = None, *, block: bool = False) -> Iterator[WindowResult]:
        """Yield results not yet handed out, in window order, each as soon as it exists.

        - ``results()``: what is ready now (never waits).
        - ``results(timeout=T)``: also waits, up to ``T`` seconds in all, for the results of every window
          pushed so far (the usual call after a burst of :meth:`push` on a busy machine).
        - ``results(block=True)``: a consumer thread's loop: keeps waiting for new results until the
          session is closed and drained (``timeout``: most seconds to wait for the next one).
        """
        deadline = None if timeout is None or block else time.monotonic() + float(timeout)
        while True:
            with self._cond:
                if block:
                    until = None if timeout is None else time.monotonic() + float(timeout)
                    while not self._out and not (self._closed and self._drained()):
                        left = None if until is None else until - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)
                elif deadline is not None:
                    while not self._out and not self._drained():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                if not self._out:
                    return
                res = self._out.popleft()
            yield res

    def _emit_event(self, ev: RhythmEvent) -> None:
        """Queue one rhythm event for :meth:`events` (the oldest is dropped and counted past the buffer)."""
        self._n_events += 1
        self._events_out.append(ev)
        if len(self._events_out) > self.config.results_buffer:
            self._events_out.popleft()
            self._overflow += 1

    def events(self) -> Iterator[RhythmEvent]:
        """Yield rhythm events not yet handed out, in time order (never waits)."""
        while True:
            with self._cond:
                if not self._events_out:
                    return
                ev = self._events_out.popleft()
            yield ev

    @property
    def active_events(self) -> tuple[str, ...]:
        """Labels of the rhythm events currently on (started and not ended), model and heart-rate."""
        return tuple(d.rule.label for d in self._detectors if d.active) + tuple(
            d.rule.label for d in self._rate_detectors if d.active
        )

    def _drained(self) -> bool:
        return self._next_release >= self._n_windows

    @property
    def pending(self) -> int:
        """Windows emitted but not yet released as results."""
        return self._n_windows - self._next_release

    def flush(self, timeout: float | None = 30.0) -> list[WindowResult]:
        """Wait until every window emitted so far has a result; return the results not yet handed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._drained():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        return self._take()

    def close(self, timeout: float | None = 30.0) -> list[WindowResult]:
        """Wait for pending windows, stop the session's own worker, and return the remaining results.
        Idempotent. Events stay available from :meth:`events`."""
        if self._closed:
            return self._take()
        out = self.flush(timeout)
        self._closed = True
        if self._own_worker:
            self.worker.stop(timeout)
        with self._cond:
            self._cond.notify_all()
        return out + self._take()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> StreamStats:
        """A snapshot of the counters. Latencies (last sample of a window pushed → its result ready:
        queueing + preprocessing + inference) are over scored windows, the last ``latency_history`` of
        them, leaving out the session's first scored window (one-off warm-up of the backend)."""
        with self._cond:
            lat = list(self._latencies)
            skipped = dict(self._skipped)
            exclusions = dict(self._lead_exclusions)
            windows = self._next_release
            scored = self._scored
        return StreamStats(
            windows=windows,
            scored=scored,
            skipped=skipped,
            dropped=skipped.get(SKIP_BACKLOG, 0),
            gaps=self._gaps,
            gap_samples=self._gap_samples,
            samples=self._samples,
            clock_resets=self._clock_resets,
            lead_exclusions=exclusions,
            events=self._n_events,
            results_overflow=self._overflow,
            latency_ms_median=_percentile(lat, 50),
            latency_ms_p99=_percentile(lat, 99),
            latency_ms_max=max(lat) if lat else float("nan"),
            pending=self.pending,
            empty_windows=self._empty_windows,
            late_chunks=self._late_chunks,
            late_samples=self._late_samples,
        )

    def latencies(self) -> list[float]:
        """Recent per-window latencies in ms (scored windows after the first, see :meth:`stats`)."""
        with self._cond:
            return list(self._latencies)
