"""The AF probability a bundle reports: the model's AF logit fused with beat-to-beat rhythm evidence.

Atrial fibrillation is a rhythm: irregularly irregular RR intervals. A 0.2-s-patch transformer sees them
only implicitly, so a bundle may carry ``af_fusion.json``: a small logistic model over

- the model's logit for the fused class (``atrial fibrillation`` of the ``rhythm`` label set) and
- rhythm features of the window from :func:`kmerl_edge.rhythm.analyse` of the rhythm lead
  (:func:`kmerl_edge.rhythm.choose_rhythm_lead` among the leads scored) *at the device rate*, on the
  window's own samples — the same analysis ``predict`` reports as the window's rhythm, so a window's beats
  are found once (a caller that holds only model windows analyses the model window instead): RR irregularity, pNN50,
  normalised RMSSD, coefficient of variation of RR, share of ectopic beats, heart rate, whether the
  beats could be found at all (``rhythm_ok``; when not, the RR features take their training mean so the
  fusion falls back on the model), and the *atrial coherence*: how much of the signal 250–60 ms before
  each R peak (less at fast rates, :func:`atrial_coherence`) repeats from beat to beat — a P wave does,
  fibrillatory waves do not — as the share of that segment's power its beat-averaged template keeps (0–1),
  measured on the preprocessed model window at those beats.

The RR features alone are fooled by false beats on a weak lead (a low-amplitude Holter lead I) and by
sinus arrhythmia; the atrial coherence is independent of the beat timing, so together they carry over
to sources the fusion never saw (``kmerl-bench accuracy --loso``).

It is fitted at export on the training split only (``export._fusion``), stored as JSON (no pickle,
hashed in the manifest like every artifact) and applied by :meth:`kmerl_edge.Classifier.run_windows`,
the one function ``predict``, ``stream`` and the benchmarks score windows with, so every path reports
the same fused probability for the same window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._bundle import artifact_json_object
from ._errors import BundleError, InvalidArgumentError
from ._leads import LEADS
from .rhythm import _median, choose_rhythm_lead

if TYPE_CHECKING:  # pragma: no cover
    from .rhythm import RhythmResult

__all__ = ["AF_FUSION_FILE", "RHYTHM_FEATURES", "AfFusion", "atrial_coherence", "event_rule_from_seconds",
           "fusion_rhythm_lead", "rhythm_features", "window_rhythm_features"]

AF_FUSION_FILE = "af_fusion.json"
#: rhythm features, in the order of the fusion's coefficients after the model logit
RHYTHM_FEATURES = ("rr_irregularity", "pnn50", "nrmssd", "cv_rr", "ectopic_share", "hr_100bpm", "rhythm_ok",
                   "atrial_coherence")
#: the segment before each R peak that holds the P wave (seconds before the peak: from, to); at fast rates
#: it starts at most :data:`ATRIAL_SEGMENT_RR` of the median RR interval before the peak, so that it does
#: not reach back into the previous beat's T wave
ATRIAL_SEGMENT_S = (0.25, 0.06)
ATRIAL_SEGMENT_RR = 0.35


def atrial_coherence(signal: np.ndarray, r_peaks: Sequence[int] | np.ndarray, *, fs: float) -> float:
    """Share of the power of the segments from min(250 ms, 0.35 × median RR) to 60 ms before each R peak
    that their average keeps (0–1): high when every beat has the same P wave, low for fibrillatory waves;
    NaN with fewer than 3 segments."""
    rp = np.asarray(r_peaks, dtype=np.int64).reshape(-1).tolist()  # the beats as Python ints: a few, cheaper
    start_s = ATRIAL_SEGMENT_S[0]
    if len(rp) > 1:
        start_s = min(start_s, ATRIAL_SEGMENT_RR * _median([q - p for p, q in zip(rp, rp[1:])]) / fs)
    a, b = round(start_s * fs), round(ATRIAL_SEGMENT_S[1] * fs)
    starts = [p - a for p in rp if p >= a]
    if len(starts) < 3 or a <= b:
        return float("nan")
    # only the segments are taken to float64 (a float32 window's samples convert exactly); numpy's own
    # reductions, as ``mean`` / ``sum`` run them, without their wrappers
    segs = _rows(np.asarray(signal), np.array(starts, dtype=np.int64), a - b).astype(np.float64, copy=False)
    segs -= np.add.reduce(segs, axis=1, keepdims=True) / segs.shape[1]
    power = float(np.add.reduce(np.add.reduce(segs * segs, axis=1)) / segs.shape[0])
    if power <= 0.0:
        return float("nan")
    tmpl = np.add.reduce(segs, axis=0) / segs.shape[0]
    return float(np.add.reduce(tmpl * tmpl) / power)


def _rows(x: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """(len(starts), width): ``x[s : s + width]`` for each start ``s`` of the 1-D ``x``, taken from the strided
    view v[s, j] = x[s + j] (``sliding_window_view(x, width)``, built without its per-call overhead)."""
    if x.ndim != 1 or x.dtype.hasobject or not x.flags.c_contiguous or x.shape[0] < width:
        return x[starts[:, None] + np.arange(width)[None, :]]
    step = x.strides[0]
    return np.ndarray((x.shape[0] - width + 1, width), x.dtype, x, 0, (step, step))[starts]


_NO_RHYTHM = np.array([0.0 if name == "rhythm_ok" else math.nan for name in RHYTHM_FEATURES])
_NO_RHYTHM.setflags(write=False)


def _clip3(v: float | None) -> float:
    return math.nan if v is None else min(max(float(v), 0.0), 3.0)


def rhythm_features(signal: np.ndarray, *, fs: float, lead: str, rhythm: RhythmResult | None = None) -> np.ndarray:
    """:data:`RHYTHM_FEATURES` of one lead of one window (NaN where the rhythm could not be measured).

    ``signal``: the lead's preprocessed window at ``fs`` (the atrial coherence is measured on it).
    ``rhythm``: the window's beats on that lead at the device rate (:func:`kmerl_edge.rhythm.analyse` of
    the same time span; its peaks are mapped to ``fs``); ``None`` analyses ``signal`` itself."""
    if rhythm is None:
        from .rhythm import analyse

        rhythm = analyse(signal, fs=fs, lead=lead)
    r = rhythm
    if not r.usable or r.hr_bpm is None:
        return _NO_RHYTHM.copy()
    rr = np.asarray(r.rr_ms, dtype=np.float64)
    cv = math.nan
    if rr.size > 1:  # rr.std() / rr.mean(): numpy's reductions in numpy's order, one pass for the mean
        mean = np.add.reduce(rr) / rr.size
        if mean > 0:
            d = rr - mean
            cv = float(np.sqrt(np.add.reduce(d * d) / rr.size) / mean)
    peaks: Sequence[int] | np.ndarray = r.r_peaks
    if r.fs != fs:  # device-rate beats on the model-rate window
        mapped = np.rint(np.asarray(peaks, dtype=np.float64) * (fs / r.fs)).astype(np.int64)
        peaks = mapped[mapped < np.shape(signal)[-1]]
    vals = {"rr_irregularity": r.rr_irregularity, "pnn50": r.pnn50, "nrmssd": r.nrmssd, "cv_rr": cv,
            "ectopic_share": r.ectopic_beats / max(r.n_beats, 1), "hr_100bpm": r.hr_bpm / 100.0,
            "atrial_coherence": atrial_coherence(signal, peaks, fs=fs)}
    return np.array([1.0 if name == "rhythm_ok" else _clip3(vals[name]) for name in RHYTHM_FEATURES])


@lru_cache(maxsize=256)
def _fusion_lead(lead_ids: tuple[int, ...]) -> str:
    return choose_rhythm_lead([LEADS[i] for i in lead_ids])


@lru_cache(maxsize=256)
def _fusion_lead_row(lead_ids: tuple[int, ...]) -> tuple[str, int]:
    lead = _fusion_lead(lead_ids)
    return lead, [LEADS[i] for i in lead_ids].index(lead)


def fusion_rhythm_lead(lead_ids: Sequence[int] | np.ndarray) -> str:
    """The lead whose rhythm the fusion uses among the scored ``lead_ids``."""
    return _fusion_lead(tuple(int(i) for i in lead_ids))


def window_rhythm_features(
    windows: np.ndarray,
    lead_ids: Sequence[int] | np.ndarray,
    *,
    fs: float,
    rhythm: Sequence[RhythmResult | None] | None = None,
) -> np.ndarray:
    """(N, len(RHYTHM_FEATURES)) for preprocessed windows (N, L, S) at ``fs`` on the rhythm lead among
    ``lead_ids`` (:func:`fusion_rhythm_lead`). ``rhythm``: per window, that lead's analysis at the device
    rate over the window's time span (what ``predict`` and ``stream`` pass), or ``None`` to analyse the
    model window itself."""
    lead, row = _fusion_lead_row(tuple(int(i) for i in lead_ids))
    if rhythm is not None:
        if len(rhythm) != len(windows):
            raise InvalidArgumentError(f"{len(rhythm)} rhythm analyses for {len(windows)} windows")
        for r in rhythm:
            if r is not None and r.lead != lead:
                raise InvalidArgumentError(f"the fusion analyses lead {lead}; a rhythm of lead {r.lead} was given")
    if not len(windows):
        return np.zeros((0, len(RHYTHM_FEATURES)))
    out = np.empty((len(windows), len(RHYTHM_FEATURES)))
    for k, w in enumerate(windows):
        out[k] = rhythm_features(w[row], fs=fs, lead=lead, rhythm=None if rhythm is None else rhythm[k])
    return out


def event_rule_from_seconds(
    rule: dict[str, Any], hop_s: float, *, label: str = "atrial fibrillation", label_set: str | None = None
) -> Any:
    """An event rule written in seconds (``on_threshold``, ``off_threshold``, ``min_on_s``, ``min_off_s``,
    ``smooth_s``, ``quality_gating``) as a :class:`kmerl_edge.stream.EventRule` for a session with hop
    ``hop_s``: each duration becomes whole windows, at least one."""
    from ._stream_errors import StreamConfigError
    from ._stream_types import EventRule

    try:
        def windows(key: str) -> int:
            v = float(rule[key])
            if not (math.isfinite(v) and 0.0 <= v <= 3600.0):
                raise ValueError(f"{key}={v}")
            return max(1, round(v / float(hop_s)))

        return EventRule(label=label, label_set=label_set, on_threshold=float(rule["on_threshold"]),
                         off_threshold=float(rule["off_threshold"]), min_on_windows=windows("min_on_s"),
                         min_off_windows=windows("min_off_s"), smooth_windows=windows("smooth_s"),
                         quality_gating=bool(rule["quality_gating"]))
    except (KeyError, TypeError, ValueError, StreamConfigError) as exc:
        raise BundleError(f"af_fusion event_rule is malformed: {exc}") from None


@dataclass(frozen=True)
class AfFusion:
    """Logistic fusion: p = sigmoid(intercept + coef · standardised [model logit, rhythm features]).

    ``features`` is ``model_logit`` followed by any of :data:`RHYTHM_FEATURES` in that order (a fusion
    fitted before a feature was added keeps working on the features it names)."""

    label_set: str
    class_name: str
    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    meta: dict[str, Any] = field(default_factory=dict)
    #: the AF event rule tuned on the training patients with this fusion, in seconds (see :meth:`stream_rule`)
    event_rule: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        rhythm = self.features[1:]
        if (self.features[:1] != ("model_logit",) or any(f not in RHYTHM_FEATURES for f in rhythm)
                or list(rhythm) != sorted(rhythm, key=RHYTHM_FEATURES.index) or len(set(rhythm)) != len(rhythm)):
            raise BundleError(f"af_fusion features {self.features} are not 'model_logit' followed by features "
                              f"this runtime computes, in its order {RHYTHM_FEATURES}")
        for name in ("mean", "std", "coef"):
            if np.asarray(getattr(self, name)).shape != (n,):
                raise BundleError(f"af_fusion {name} must have {n} values")
        if self.event_rule is not None:
            self.stream_rule(2.0)  # validates every field now, not when a session starts

    def stream_rule(self, hop_s: float) -> Any:
        """The tuned event rule as a :class:`kmerl_edge.stream.EventRule` for a session with this hop;
        ``None`` without a tuned rule (see :func:`event_rule_from_seconds`)."""
        if self.event_rule is None:
            return None
        return event_rule_from_seconds(self.event_rule, hop_s, label=self.class_name, label_set=self.label_set)

    def probability(self, model_logit: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
        """Fused probability (N,) from the model's logits (N,) and :func:`window_rhythm_features` (N, F)."""
        x = np.concatenate([np.asarray(model_logit, np.float64)[:, None],
                            np.asarray(rhythm, np.float64)[:, self._columns]], axis=1)
        x = np.where(np.isnan(x), self.mean, x)
        z = ((x - self.mean) / self.std) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -60.0), 60.0)))  # np.clip's numbers

    @cached_property
    def _columns(self) -> list[int]:
        """The columns of :func:`window_rhythm_features` this fusion uses, in its order."""
        return [RHYTHM_FEATURES.index(f) for f in self.features[1:]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "kmerl-af-fusion/1",
            "label_set": self.label_set,
            "class": self.class_name,
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "meta": self.meta,
            **({"event_rule": self.event_rule} if self.event_rule is not None else {}),
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AfFusion:
        if d.get("format") != "kmerl-af-fusion/1":
            raise BundleError(f"unknown af_fusion format {d.get('format')!r}")
        try:
            return cls(str(d["label_set"]), str(d["class"]), tuple(d["features"]),
                       np.asarray(d["mean"], np.float64), np.maximum(np.asarray(d["std"], np.float64), 1e-6),
                       np.asarray(d["coef"], np.float64), float(d["intercept"]), dict(d.get("meta", {})),
                       dict(d["event_rule"]) if d.get("event_rule") is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"af_fusion.json is malformed: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> AfFusion:
        """From the verified bytes of a bundle's ``af_fusion.json`` (:meth:`kmerl_edge.Bundle.read`)."""
        return cls.from_dict(artifact_json_object(data, "af_fusion.json"))

    @classmethod
    def load(cls, path: str | Path) -> AfFusion:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from None
        return cls.from_dict(d)
