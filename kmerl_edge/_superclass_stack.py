"""The PTB-XL superclass scores a bundle reports: the model's superclass logits stacked with classical ECG
measurements of the window.

A bundle may carry ``superclass_stack.json``: per superclass a logistic model over

- the model's logits of the label set's classes (all of them, standardised),
- the measurements of :func:`kmerl_edge._measure.measure_window` of every lead scored (on the preprocessed,
  z-scored model window: QRS shape, ST level, T wave in the window's own units), standardised per lead and
  clipped; leads not scored are 0 with a 12-lead presence mask,
- the window's measurements (QRS duration, heart rate, frontal axis, whether the beats sufficed);
  unmeasured values are 0 after standardisation, so the stack falls back on the logits.

The beats are the window's rhythm analysis (the one ``predict`` and ``stream`` pass to
:meth:`kmerl_edge.Classifier.run_windows` for the AF fusion, mapped to the model rate), or an analysis of the
model window when none is given. It is fitted at export on the network's training split only
(``export._stack``; ``kmerl-export superclass-stack``), stored as JSON (hashed in the manifest like every
artifact) and changes the label set's rows only: every other row (AF, the rhythm classes) is untouched.

Polarity guard: a window whose lead I has both a negative QRS area and a negative mean T on its median
beat reads as lead I recorded the other way round (a handheld device held reversed). The stack's
measurements were fitted on upright lead I and turn such a window's scores below chance, worse than the
model's own (``benchmarks.superclass_shift``, PTB-XL fold 9, lead I alone: macro AUC 0.42 stacked, 0.57
the model's), so the model's own probabilities are reported for it (:func:`inverted_lead_i`).
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
from ._measure import GLOBAL, PER_LEAD, measure_window
from .rhythm import choose_rhythm_lead

if TYPE_CHECKING:  # pragma: no cover
    from .rhythm import RhythmResult

__all__ = ["STACK_FILE", "SuperclassStack", "inverted_lead_i", "stack_measurements"]

STACK_FILE = "superclass_stack.json"
FORMAT = "kmerl-superclass-stack/1"
N_LEADS = len(LEADS)


def stack_measurements(
    windows: np.ndarray, lead_ids: Sequence[int] | np.ndarray, *, fs: float,
    rhythm: Sequence[RhythmResult | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(per-lead measurements (N, 12, len(PER_LEAD)), NaN for leads not scored; window measurements
    (N, len(GLOBAL))) of preprocessed ``windows`` (N, L, S) on ``lead_ids``. ``rhythm``: per window the
    analysis of the rhythm lead (:func:`kmerl_edge.rhythm.choose_rhythm_lead` of the leads) at the device
    rate over the window's span, or ``None`` (or a ``None`` entry) to analyse the model window."""
    ids, names, lead, row = _lead_plan(tuple(int(i) for i in lead_ids))
    if rhythm is not None and len(rhythm) != len(windows):
        raise InvalidArgumentError(f"{len(rhythm)} rhythm analyses for {len(windows)} windows")
    per = np.full((len(windows), N_LEADS, len(PER_LEAD)), np.nan)
    glob = np.zeros((len(windows), len(GLOBAL)))
    for k, w in enumerate(windows):
        r = None if rhythm is None else rhythm[k]
        if r is None:
            from .rhythm import analyse

            r = analyse(w[row], fs=fs, lead=lead)
        elif r.lead != lead:
            raise InvalidArgumentError(f"the stack analyses lead {lead}; a rhythm of lead {r.lead} was given")
        peaks: Sequence[int] | np.ndarray = r.r_peaks if r.usable else ()
        if r.fs != fs and len(peaks):  # device-rate beats on the model-rate window
            beats = np.rint(np.asarray(peaks, dtype=np.int64) * (fs / r.fs)).astype(np.int64)
            peaks = beats[beats < np.shape(w)[-1]]
        p, g = measure_window(w, names, peaks, fs=fs)
        per[k, ids] = p
        glob[k] = g
    return per, glob


@lru_cache(maxsize=64)
def _lead_plan(lead_ids: tuple[int, ...]) -> tuple[np.ndarray, tuple[str, ...], str, int]:
    """The lead ids as an index array, their names, the rhythm lead and its row."""
    names = tuple(LEADS[i] for i in lead_ids)
    lead = choose_rhythm_lead(names)
    ids = np.array(lead_ids, dtype=np.intp)
    ids.setflags(write=False)
    return ids, names, lead, names.index(lead)


def inverted_lead_i(per: np.ndarray) -> np.ndarray:
    """(N,) per window of :func:`stack_measurements`' per-lead block: lead I scored and measured with both a
    negative QRS area and a negative mean T (an inverted lead I); False where lead I is not measured."""
    i = LEADS.index("I")
    q, t = per[:, i, PER_LEAD.index("qrs_area")], per[:, i, PER_LEAD.index("t_mean")]
    with np.errstate(invalid="ignore"):
        return np.asarray((q < 0) & (t < 0), dtype=bool)


@dataclass(frozen=True)
class SuperclassStack:
    """Per class p = sigmoid(intercept + coef · :func:`design_matrix`)."""

    label_set: str
    classes: tuple[str, ...]
    logit_mean: np.ndarray
    logit_std: np.ndarray
    lead_mean: np.ndarray
    lead_std: np.ndarray
    global_mean: np.ndarray
    global_std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    clip: float = 6.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, p, g = len(self.classes), len(PER_LEAD), len(GLOBAL)
        shapes = {"logit_mean": (c,), "logit_std": (c,), "lead_mean": (N_LEADS, p), "lead_std": (N_LEADS, p),
                  "global_mean": (g,), "global_std": (g,), "coef": (c, self.n_features), "intercept": (c,)}
        for name, shape in shapes.items():
            v = np.asarray(getattr(self, name))
            if v.shape != shape:
                raise BundleError(f"superclass_stack {name} must have shape {shape}, has {v.shape}")
            if not np.all(np.isfinite(v)):
                raise BundleError(f"superclass_stack {name} holds a non-finite value")
        for name in ("logit_std", "lead_std", "global_std"):
            if np.any(np.asarray(getattr(self, name)) <= 0):
                raise BundleError(f"superclass_stack {name} must be positive")
        if not (math.isfinite(self.clip) and self.clip > 0) or len(set(self.classes)) != c or c == 0:
            raise BundleError("superclass_stack: clip > 0 and distinct classes are required")

    @property
    def n_features(self) -> int:
        return len(self.classes) + N_LEADS * len(PER_LEAD) + N_LEADS + len(GLOBAL)

    def design(self, logits: np.ndarray, per: np.ndarray, glob: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The stack's inputs (N, :attr:`n_features`): [standardised logits, standardised per-lead
        measurements (leads not scored or not measured 0, clipped to ±clip), the 12-lead presence ``mask``
        (N, 12), standardised window measurements (likewise)]."""
        n = len(logits)
        p = np.clip(np.nan_to_num((per - self.lead_mean) / self.lead_std, nan=0.0), -self.clip, self.clip)
        g = np.clip(np.nan_to_num((glob - self.global_mean) / self.global_std, nan=0.0), -self.clip, self.clip)
        return np.concatenate([(np.asarray(logits, np.float64) - self.logit_mean) / self.logit_std,
                               p.reshape(n, -1), np.asarray(mask, np.float64), g], axis=1)

    def probability(self, logits: np.ndarray, per: np.ndarray, glob: np.ndarray,
                    lead_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """(N, C) probabilities from the model's logits of :attr:`classes` (N, C) and
        :func:`stack_measurements` of the same windows on ``lead_ids``: :meth:`design` times the
        coefficients, computed on the scored leads only (the others' inputs are 0). Windows with an
        inverted lead I (:func:`inverted_lead_i`) get the model's own probabilities, sigmoid(logits)."""
        key = tuple(int(i) for i in lead_ids)
        blk = self._blocks.get(key)
        if blk is None:  # per lead set: its leads' statistics and coefficients, the presence term summed
            ids = list(key)
            lm, ls, w_l, w_p, w_m, w_g = self._parts
            blk = self._blocks[key] = (ids, self.lead_mean[ids], self.lead_std[ids],
                                       w_p[ids].reshape(len(ids) * len(PER_LEAD), -1),
                                       w_m[ids].sum(axis=0) + self.intercept)
        ids, mean, std, w_lead, const = blk
        lm, ls, w_l, _, _, w_g = self._parts
        z = ((np.asarray(logits, np.float64) - lm) / ls) @ w_l
        p = (per[:, ids] - mean) / std  # (N, L, P)
        p[np.isnan(p)] = 0.0
        np.clip(p, -self.clip, self.clip, out=p)
        z += p.reshape(len(p), -1) @ w_lead
        g = (glob - self.global_mean) / self.global_std
        g[np.isnan(g)] = 0.0
        np.clip(g, -self.clip, self.clip, out=g)
        z += g @ w_g + const
        guard = inverted_lead_i(per)
        if guard.any():
            z[guard] = np.asarray(logits, np.float64)[guard]
        return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -60.0), 60.0)))

    @cached_property
    def _blocks(self) -> dict[tuple[int, ...], tuple[Any, ...]]:
        return {}

    @cached_property
    def _parts(self) -> tuple[np.ndarray, ...]:
        """logit mean / std and the coefficients split by input block: logits (C, C), per lead (12, P, C),
        presence (12, C), window (G, C)."""
        c, p_n = len(self.classes), len(PER_LEAD)
        w = np.asarray(self.coef, np.float64).T  # (F, C)
        a, b = c, c + N_LEADS * p_n
        return (np.asarray(self.logit_mean, np.float64), np.asarray(self.logit_std, np.float64), w[:a],
                w[a:b].reshape(N_LEADS, p_n, c), w[b:b + N_LEADS], w[b + N_LEADS:])

    def to_dict(self) -> dict[str, Any]:
        def f(a: np.ndarray) -> Any:
            return np.asarray(a, np.float64).tolist()

        return {"format": FORMAT, "label_set": self.label_set, "classes": list(self.classes),
                "leads": list(LEADS), "per_lead": list(PER_LEAD), "global": list(GLOBAL),
                "logit_mean": f(self.logit_mean), "logit_std": f(self.logit_std),
                "lead_mean": f(self.lead_mean), "lead_std": f(self.lead_std),
                "global_mean": f(self.global_mean), "global_std": f(self.global_std),
                "coef": f(self.coef), "intercept": f(self.intercept), "clip": float(self.clip), "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SuperclassStack:
        if d.get("format") != FORMAT:
            raise BundleError(f"unknown superclass_stack format {d.get('format')!r}")
        if (d.get("leads") != list(LEADS) or d.get("per_lead") != list(PER_LEAD)
                or d.get("global") != list(GLOBAL)):
            raise BundleError("superclass_stack.json was fitted on measurements this runtime does not compute "
                              f"(leads {d.get('leads')}, per lead {d.get('per_lead')}, window {d.get('global')})")
        try:
            arrays = {k: np.asarray(d[k], np.float64) for k in ("logit_mean", "logit_std", "lead_mean", "lead_std",
                                                                 "global_mean", "global_std", "coef", "intercept")}
            return cls(str(d["label_set"]), tuple(str(c) for c in d["classes"]), **arrays,
                       clip=float(d["clip"]), meta=dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"superclass_stack.json is malformed: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> SuperclassStack:
        """From the verified bytes of a bundle's ``superclass_stack.json`` (:meth:`kmerl_edge.Bundle.read`)."""
        return cls.from_dict(artifact_json_object(data, "superclass_stack.json"))
