"""Configuration and result types of the streaming runtime (see :mod:`kmerl_edge.stream`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ._polarity import FLAG_NOTES
from ._preprocess import QualityReport
from ._stream_errors import StreamConfigError
from .rhythm import RateEventRule, RhythmResult

__all__ = [
    "EventRule",
    "StreamConfig",
    "WindowResult",
    "RhythmEvent",
    "StreamStats",
    "SKIP_GAP",
    "SKIP_FRAGMENTED",
    "SKIP_NO_USABLE_LEADS",
    "SKIP_UNSERVED_LEADS",
    "SKIP_BACKLOG",
    "SKIP_ERROR",
    "SKIP_REASONS",
]

#: More of the window is missing (source gaps) than ``StreamConfig.max_gap_fraction``.
SKIP_GAP = "gap"
#: Little is missing, but the gap-free stretches add up to less than the model's minimum input (5 s).
SKIP_FRAGMENTED = "fragmented"
#: Every lead was left out (lead off, flat, saturated, out of range).
SKIP_NO_USABLE_LEADS = "no_usable_leads"
#: The leads that passed the quality check form a set no bundle of the classifier serves
#: (``max_leads`` / ``supported_lead_sets``; the message is in ``detail``).
SKIP_UNSERVED_LEADS = "unserved_lead_set"
#: Inference fell behind and this window was the oldest pending one when the queue was full.
SKIP_BACKLOG = "dropped_backlog"
#: The inference worker raised while scoring this window (the message is in ``detail``).
SKIP_ERROR = "inference_error"
SKIP_REASONS = (SKIP_GAP, SKIP_FRAGMENTED, SKIP_NO_USABLE_LEADS, SKIP_UNSERVED_LEADS, SKIP_BACKLOG, SKIP_ERROR)


@dataclass(frozen=True)
class EventRule:
    """A rhythm event with hysteresis on the (smoothed) probability of one class.

    The event *starts* after ``min_on_windows`` consecutive scored windows at or above ``on_threshold``
    and *ends* after ``min_off_windows`` consecutive scored windows at or below ``off_threshold``
    (``off_threshold < on_threshold``: probabilities between the two keep the current state and reset a
    pending run). Skipped windows neither confirm nor break a run. ``label_set`` ``None`` means the first
    label set of the bundle that has the class.

    ``smooth_windows``: the rule looks at the mean of the class's probability over its last this many
    windows it counted (on top of the session's ``smoothing_windows``). ``quality_gating``: a window whose
    rhythm analysis found no usable beats (``WindowResult.rhythm`` not usable: flat, noisy, too few
    beats) neither confirms nor breaks a run, like a skipped window. A bundle whose AF fusion carries an
    event rule tuned on its training patients (``af_fusion.json``) gives the session that rule when
    ``StreamConfig.events`` is ``None``.
    """

    label: str = "atrial fibrillation"
    label_set: str | None = None
    on_threshold: float = 0.6
    off_threshold: float = 0.4
    min_on_windows: int = 2
    min_off_windows: int = 2
    smooth_windows: int = 1
    quality_gating: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.off_threshold < self.on_threshold <= 1.0:
            raise StreamConfigError(
                f"EventRule({self.label!r}) needs 0 <= off_threshold < on_threshold <= 1, got "
                f"{self.off_threshold} / {self.on_threshold}"
            )
        for name in ("min_on_windows", "min_off_windows", "smooth_windows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise StreamConfigError(f"EventRule {name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class StreamConfig:
    """Everything a :class:`~kmerl_edge.stream.StreamSession` can be told. No sampling rate here: the
    device rate is a required argument of the session.

    - ``hop_s``: seconds between window results (each result covers the bundle's last 10 s).
    - ``max_gap_fraction``: a window with more missing samples (source gaps) than this fraction is
      skipped (reason ``gap``). Below it, the window is scored from its gap-free stretches of at least
      ``min_segment_s``: each stretch is resampled and band-passed on its own (no filter runs across a
      gap), the stretches are z-scored together, and they sit at their own times in the 10-s model input
      with zeros (the normalised mean, the value :func:`preprocess` pads with) where samples are missing.
      Nothing is interpolated. The result carries the flag ``gap``. If the kept stretches add up to less
      than the bundle's ``min_duration_s`` (5 s), the window is skipped (reason ``fragmented``).
    - ``min_segment_s``: shortest gap-free stretch worth scoring (shorter ones are left out as well).
    - ``smoothing_windows``: ``WindowResult.smoothed`` is the mean of the probabilities of the last this
      many scored windows within that many hops (1: no smoothing). Events use the smoothed values.
    - ``events``: rhythm event rules; ``None``: atrial fibrillation when the bundle has that class.
    - ``queue_size``: pending windows between the reader and the inference worker; when full, the
      oldest pending window is dropped (reason ``dropped_backlog``) and counted.
    - ``max_batch``: most windows the worker scores in one backend call.
    - ``synchronous``: score windows inside :meth:`push` (tests, offline use). Default: a worker thread.
    - ``results_buffer``: most results kept for a caller that does not collect them; beyond it the
      oldest are discarded and counted in ``StreamStats.results_overflow``.
    - ``latency_history``: how many recent latencies the statistics keep (memory stays flat).
    - ``rate_events``: heart-rate event rules (:class:`kmerl_edge.rhythm.RateEventRule`) on each
      window's ``rhythm``; ``None``: bradycardia, tachycardia and pause
      (:data:`kmerl_edge.rhythm.DEFAULT_RATE_EVENTS`); ``()``: none.
    - ``clock_tolerance_s``: a chunk's ``t0`` within this of the session's clock is on time (timestamp
      jitter): its samples go where the sample count puts them, nothing is shifted or reported.
    - ``reset_confirm``: chunks behind the clock are dropped as late (old samples are never delivered as
      new) until this many consecutive ones agree on new times: then the device clock restarted.
    """

    hop_s: float = 2.0
    max_gap_fraction: float = 0.2
    min_segment_s: float = 0.5
    smoothing_windows: int = 1
    events: tuple[EventRule, ...] | None = None
    queue_size: int = 64
    max_batch: int = 64
    synchronous: bool = False
    results_buffer: int = 4096
    latency_history: int = 10000
    rate_events: tuple[RateEventRule, ...] | None = None
    clock_tolerance_s: float = 0.02
    reset_confirm: int = 3

    def __post_init__(self) -> None:
        for name in ("hop_s", "min_segment_s", "max_gap_fraction", "clock_tolerance_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise StreamConfigError(f"{name} must be a number, got {v!r}")
        if not (math.isfinite(self.hop_s) and self.hop_s > 0):
            raise StreamConfigError(f"hop_s must be a positive number of seconds, got {self.hop_s!r}")
        if not (math.isfinite(self.min_segment_s) and self.min_segment_s > 0):
            raise StreamConfigError(f"min_segment_s must be a positive number of seconds, got {self.min_segment_s!r}")
        if not 0.0 <= self.max_gap_fraction < 1.0:
            raise StreamConfigError(f"max_gap_fraction must be in [0, 1), got {self.max_gap_fraction!r}")
        if not (math.isfinite(self.clock_tolerance_s) and 0 <= self.clock_tolerance_s <= 1.0):
            raise StreamConfigError(f"clock_tolerance_s must be in [0, 1] s, got {self.clock_tolerance_s!r}")
        for name in ("smoothing_windows", "queue_size", "max_batch", "results_buffer", "latency_history",
                     "reset_confirm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise StreamConfigError(f"{name} must be a whole number >= 1, got {v!r}")


@dataclass(frozen=True)
class WindowResult:
    """The result of one window: ``[t_start, t_end)`` in the device's own time (seconds).

    - ``scores`` / ``by_label_set``: probabilities of this window alone (empty when ``skipped``);
      ``smoothed``: the same after smoothing across windows (``StreamConfig.smoothing_windows``).
    - ``quality``: per-lead quality of the scored stretch at the device rate (``None`` when the window
      was skipped before it was assessed); its ``dropped_leads`` and ``flags`` (``gap``)
      describe this window.
    - ``leads_used``: the leads the model saw; ``excluded_leads``: {lead: why} for the others
      (``lead_off``, ``missing``, ``flat``, ``saturated``, ``out_of_range``); ``bundle``: the bundle
      directory that scored the window (the session's own unless it does not serve ``leads_used``: see
      :meth:`kmerl_edge.Classifier.stream`); empty when skipped.
    - ``missing_fraction``: share of the window lost in source gaps.
    - ``flags``: ``gap`` (scored around missing samples), ``lead_I_inverted`` (lead I looks inverted: left/right
      arm electrodes swapped or the device worn reversed; also in ``quality.flags``; never changes a score);
      ``notes`` (derived from ``flags``): what a flag means, in words.
    - ``latency_ms``: from the moment the window's last sample was pushed to the moment its result
      existed (queueing + preprocessing + inference).
    - ``skipped`` / ``reason`` / ``detail``: a window that produced no scores, and why (one of
      :data:`SKIP_REASONS`). Skipped windows are results too: nothing goes missing silently.
    - ``rhythm``: beats, heart rate and RR irregularity of the window on one lead at the device rate
      (:class:`kmerl_edge.rhythm.RhythmResult`, beats confirmed by the window's end; also for skipped
      windows); ``None`` when the session analyses no rhythm.
    """

    index: int
    t_start: float
    t_end: float
    scores: dict[str, float]
    by_label_set: dict[str, dict[str, float]]
    smoothed: dict[str, float]
    quality: QualityReport | None
    leads_used: tuple[str, ...]
    excluded_leads: dict[str, str]
    missing_fraction: float
    latency_ms: float
    skipped: bool = False
    reason: str | None = None
    detail: str = ""
    device_id: str | None = None
    flags: tuple[str, ...] = ()
    rhythm: RhythmResult | None = None
    bundle: str = ""

    @property
    def notes(self) -> tuple[str, ...]:
        """What the window's ``flags`` mean, in words (for ``lead_I_inverted``)."""
        return tuple(FLAG_NOTES[f] for f in self.flags if f in FLAG_NOTES)

    def top(self, k: int = 3, label_set: str | None = None, smoothed: bool = False) -> list[tuple[str, float]]:
        """The ``k`` most probable classes (of one label set, or over all)."""
        if label_set is not None:
            src = self.by_label_set.get(label_set, {})
        else:
            src = self.smoothed if smoothed else self.scores
        return sorted(src.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "window",
            "device_id": self.device_id,
            "index": self.index,
            "t_start": round(self.t_start, 4),
            "t_end": round(self.t_end, 4),
            "skipped": self.skipped,
            "reason": self.reason,
            "detail": self.detail,
            "scores": {ls: {c: round(p, 5) for c, p in d.items()} for ls, d in self.by_label_set.items()},
            "smoothed": {c: round(p, 5) for c, p in self.smoothed.items()},
            "quality": self.quality.to_dict() if self.quality is not None else None,
            "leads_used": list(self.leads_used),
            "bundle": self.bundle,
            "excluded_leads": dict(self.excluded_leads),
            "missing_fraction": round(self.missing_fraction, 4),
            "flags": list(self.flags),
            "notes": list(self.notes),
            "latency_ms": round(self.latency_ms, 3),
            "rhythm": self.rhythm.to_dict() if self.rhythm is not None else None,
        }


@dataclass(frozen=True)
class RhythmEvent:
    """A rhythm started or ended (hysteresis, see :class:`EventRule` and
    :class:`kmerl_edge.rhythm.RateEventRule`).

    ``t`` is the device time of the change, estimated as the centre of the first window of the run that
    confirmed it; ``t_confirmed`` is the end of the window that confirmed it (when it became known);
    ``probability`` is that window's smoothed probability (model events; ``None`` for heart-rate
    events, which carry the window's ``value`` in ``unit`` instead: bpm, or seconds for a pause, with
    ``label_set`` ``"rhythm"``).
    """

    kind: str  # "started" | "ended"
    label: str
    label_set: str
    t: float
    t_confirmed: float
    probability: float | None
    window_index: int
    device_id: str | None = None
    value: float | None = None
    unit: str | None = None

    @property
    def evidence(self) -> str:
        """``p=0.83`` for a model event, ``42 bpm`` / ``3.1 s`` for a heart-rate event."""
        if self.probability is not None:
            return f"p={self.probability:.2f}"
        if self.value is not None:
            return f"{self.value:.0f} {self.unit}" if self.unit == "bpm" else f"{self.value:.1f} {self.unit}"
        return ""

    def __str__(self) -> str:
        return f"{self.label} {self.kind} at {self.t:.1f} s (confirmed at {self.t_confirmed:.1f} s, {self.evidence})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "event",
            "device_id": self.device_id,
            "kind": self.kind,
            "label": self.label,
            "label_set": self.label_set,
            "t": round(self.t, 4),
            "t_confirmed": round(self.t_confirmed, 4),
            "probability": round(self.probability, 5) if self.probability is not None else None,
            "window_index": self.window_index,
            "value": round(self.value, 3) if self.value is not None else None,
            "unit": self.unit,
        }


@dataclass(frozen=True)
class StreamStats:
    """Counters of one session (or a gateway). ``skipped`` is {reason: windows}; ``dropped`` (backlog)
    is also counted there under ``dropped_backlog``."""

    windows: int  # every window that reached a result (scored + skipped)
    scored: int
    skipped: dict[str, int]
    dropped: int
    gaps: int
    gap_samples: int
    samples: int  # device-rate samples per lead received
    clock_resets: int
    lead_exclusions: dict[str, int]
    events: int
    results_overflow: int
    latency_ms_median: float
    latency_ms_p99: float
    latency_ms_max: float
    pending: int = 0
    #: windows that would have held no sample at all (inside a long gap): no result, no work
    empty_windows: int = 0
    #: chunks behind the session's clock that were dropped (old samples, never delivered as new)
    late_chunks: int = 0
    late_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "windows": self.windows,
            "scored": self.scored,
            "skipped": dict(self.skipped),
            "dropped": self.dropped,
            "gaps": self.gaps,
            "gap_samples": self.gap_samples,
            "samples": self.samples,
            "clock_resets": self.clock_resets,
            "lead_exclusions": dict(self.lead_exclusions),
            "events": self.events,
            "results_overflow": self.results_overflow,
            "latency_ms_median": round(self.latency_ms_median, 3),
            "latency_ms_p99": round(self.latency_ms_p99, 3),
            "latency_ms_max": round(self.latency_ms_max, 3),
            "pending": self.pending,
            "empty_windows": self.empty_windows,
            "late_chunks": self.late_chunks,
            "late_samples": self.late_samples,
            **self.extra,
        }
