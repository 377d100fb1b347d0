"""The AF probability a bundle reports: the model's AF logit fused with beat-to-beat rhythm evidence.

Atrial fibrillation is a rhythm: irregularly irregular RR intervals. A 0.2-s-patch transformer sees them
only implicitly, so a bundle may carry ``af_fusion.json``: a small logistic model over

- the model's logit for the fused class (``atrial fibrillation`` of the ``rhythm`` label set) and
- rhythm features of the window from :func:`kmerl_edge.rhythm.analyse` on the rhythm lead
  (:func:`kmerl_edge.rhythm.choose_rhythm_lead` among the leads scored): RR irregularity, pNN50,
  normalised RMSSD, coefficient of variation of RR, share of ectopic beats, heart rate, and whether the
  beats could be found at all (``rhythm_ok``; when not, the RR features take their training mean so the
  fusion falls back on the model).

It is fitted at export on the training split only (``export._fusion``), stored as JSON (no pickle,
hashed in the manifest like every artifact) and applied by :meth:`kmerl_edge.Classifier.run_windows`,
the one function ``predict``, ``stream`` and the benchmarks score windows with, so every path reports
the same fused probability for the same window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import BundleError
from ._leads import LEADS

__all__ = ["AF_FUSION_FILE", "RHYTHM_FEATURES", "AfFusion", "rhythm_features", "window_rhythm_features"]

AF_FUSION_FILE = "af_fusion.json"
#: rhythm features, in the order of the fusion's coefficients after the model logit
RHYTHM_FEATURES = ("rr_irregularity", "pnn50", "nrmssd", "cv_rr", "ectopic_share", "hr_100bpm", "rhythm_ok")


def rhythm_features(signal: np.ndarray, *, fs: float, lead: str) -> np.ndarray:
    """:data:`RHYTHM_FEATURES` of one lead of one window (NaN where the rhythm could not be measured)."""
    from .rhythm import analyse

    r = analyse(signal, fs=fs, lead=lead)
    if not r.usable or r.hr_bpm is None:
        return np.array([np.nan] * (len(RHYTHM_FEATURES) - 1) + [0.0])
    rr = np.asarray(r.rr_ms, dtype=np.float64)
    cv = float(rr.std() / rr.mean()) if rr.size > 1 and rr.mean() > 0 else np.nan
    vals = [r.rr_irregularity, r.pnn50, r.nrmssd, cv, r.ectopic_beats / max(r.n_beats, 1), r.hr_bpm / 100.0]
    out = np.array([np.nan if v is None else float(v) for v in vals] + [1.0])
    out[:-1] = np.clip(out[:-1], 0.0, 3.0)
    return out


def window_rhythm_features(windows: np.ndarray, lead_ids: Sequence[int] | np.ndarray, *, fs: float) -> np.ndarray:
    """(N, len(RHYTHM_FEATURES)) for preprocessed windows (N, L, S) on the rhythm lead among ``lead_ids``."""
    from .rhythm import choose_rhythm_lead

    names = [LEADS[int(i)] for i in lead_ids]
    lead = choose_rhythm_lead(names)
    row = names.index(lead)
    return np.stack([rhythm_features(w[row], fs=fs, lead=lead) for w in windows]) if len(windows) else np.zeros(
        (0, len(RHYTHM_FEATURES)))


@dataclass(frozen=True)
class AfFusion:
    """Logistic fusion: p = sigmoid(intercept + coef · standardised [model logit, rhythm features])."""

    label_set: str
    class_name: str
    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features != ("model_logit",) + RHYTHM_FEATURES:
            raise BundleError(f"af_fusion features {self.features} are not the ones this runtime computes "
                              f"{('model_logit',) + RHYTHM_FEATURES}")
        for name in ("mean", "std", "coef"):
            if np.asarray(getattr(self, name)).shape != (n,):
                raise BundleError(f"af_fusion {name} must have {n} values")

    def probability(self, model_logit: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
        """Fused probability (N,) from the model's logits (N,) and :func:`window_rhythm_features` (N, F)."""
        x = np.concatenate([np.asarray(model_logit, np.float64)[:, None], np.asarray(rhythm, np.float64)], axis=1)
        x = np.where(np.isnan(x), self.mean, x)
        z = ((x - self.mean) / self.std) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))

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
                       np.asarray(d["coef"], np.float64), float(d["intercept"]), dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"af_fusion.json is malformed: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> AfFusion:
        """From the verified bytes of a bundle's ``af_fusion.json`` (:meth:`kmerl_edge.Bundle.read`)."""
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BundleError(f"af_fusion.json is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise BundleError("af_fusion.json must hold a JSON object")
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> AfFusion:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from None
        return cls.from_dict(d)
