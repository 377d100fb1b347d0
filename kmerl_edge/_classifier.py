"""The public classification API: :func:`load` → :class:`Classifier` → :class:`Prediction`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._af_fusion import AF_FUSION_FILE, AfFusion, window_rhythm_features
from ._backends import Backend, BackendChoice, choose_backend
from ._bundle import Bundle, load_bundle
from ._errors import BundleError, LeadError, UnknownLabelSetError
from ._leads import canonical_leads
from ._preprocess import Preprocessed, QualityReport, preprocess

if TYPE_CHECKING:  # pragma: no cover
    from .stream import StreamSession

__all__ = ["Classifier", "Prediction", "load", "default_bundle_path"]

_DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default_bundle"


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (raises :class:`BundleError` if this install has none)."""
    if not (_DEFAULT_BUNDLE / "manifest.json").exists():
        raise BundleError(
            "this installation ships no default bundle; pass bundle=PATH (see README, 'Default model')"
        )
    return _DEFAULT_BUNDLE


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


@dataclass(frozen=True)
class Prediction:
    """Scores for one recording.

    - ``scores``: {class name: probability in [0, 1]} over the requested label set(s), averaged over the
      10-s windows of the recording;
    - ``by_label_set``: the same, grouped {label set: {class: probability}};
    - ``window_scores``: one {class: probability} per window, starting at ``window_starts_s``;
    - ``quality``: per-lead and overall flags; ``leads``: the leads actually scored.
    """

    scores: dict[str, float]
    by_label_set: dict[str, dict[str, float]]
    quality: QualityReport
    leads: tuple[str, ...]
    window_starts_s: tuple[float, ...]
    window_scores: tuple[dict[str, float], ...]
    backend: str
    latency_ms: float
    trained_model: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    def top(self, k: int = 3, label_set: str | None = None) -> list[tuple[str, float]]:
        src = self.by_label_set[label_set] if label_set else self.scores
        return sorted(src.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": self.by_label_set,
            "quality": self.quality.to_dict(),
            "leads": list(self.leads),
            "window_starts_s": list(self.window_starts_s),
            "backend": self.backend,
            "latency_ms": round(self.latency_ms, 3),
            "trained_model": self.trained_model,
            "notes": list(self.notes),
        }


class Classifier:
    """A loaded, verified bundle bound to one backend. Create it with :func:`kmerl_edge.load`."""

    def __init__(self, bundle: Bundle, backend: Backend, choice: BackendChoice | None = None) -> None:
        self.bundle = bundle
        self.backend = backend
        #: what ``load`` chose and why (``backend="auto"`` weighs load time against per-window latency)
        self.backend_choice = choice or BackendChoice(backend.name, backend.name, "given")
        _, self._index = bundle.all_queries()
        self._max_leads = bundle.max_leads
        self._lead_sets = bundle.spec.supported_lead_sets if bundle.spec is not None else None
        self.af_fusion: AfFusion | None = None
        self._fusion_col = -1
        if AF_FUSION_FILE in bundle.artifacts:
            self.af_fusion = AfFusion.load(bundle.path / AF_FUSION_FILE)
            key = (self.af_fusion.label_set, self.af_fusion.class_name)
            if key not in self._index:
                raise BundleError(f"af_fusion.json fuses {key}, which the bundle's queries do not score")
            self._fusion_col = self._index.index(key)

    @property
    def label_sets(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.bundle.label_sets.items()}

    @property
    def bundle_path(self) -> Path:
        return self.bundle.path

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def max_leads(self) -> int:
        return self._max_leads

    def check_leads(self, leads: Sequence[str]) -> tuple[str, ...]:
        names = canonical_leads(leads)
        if len(names) > self._max_leads:
            raise LeadError(
                f"bundle {self.bundle.path.name} serves at most {self._max_leads} leads; got {len(names)} "
                f"({', '.join(names)}): choose a subset with leads=[...]"
            )
        if self._lead_sets is not None and tuple(sorted(names)) not in {tuple(sorted(s)) for s in self._lead_sets}:
            raise LeadError(
                f"bundle {self.bundle.path.name} serves only the lead sets "
                f"{', '.join('+'.join(s) for s in self._lead_sets)}; got {'+'.join(names)}"
            )
        return names

    def run_windows(self, windows: np.ndarray, lead_ids: np.ndarray, *, fuse: bool = True) -> np.ndarray:
        """Probabilities (n_windows, Q) for preprocessed windows; Q in :meth:`Bundle.all_queries` order.

        With an ``af_fusion.json`` in the bundle (and ``fuse``), the fused class's probability is the
        calibrated fusion of the model's logit with the window's rhythm evidence
        (:mod:`kmerl_edge._af_fusion`); ``fuse=False`` gives the model's own probabilities."""
        logits = self.backend.run(windows, lead_ids).astype(np.float64)
        probs = _sigmoid(logits)
        if fuse and self.af_fusion is not None and len(probs):
            feats = window_rhythm_features(windows, lead_ids, fs=self.bundle.preprocess_config.target_fs)
            probs[:, self._fusion_col] = self.af_fusion.probability(logits[:, self._fusion_col], feats)
        return probs

    def scores_from_probs(
        self, probs: np.ndarray, label_set: str | None = None
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Split a (Q,) probability vector into flat and per-label-set dicts."""
        if label_set is not None and label_set not in self.bundle.label_sets:
            raise UnknownLabelSetError(
                f"label set {label_set!r} not in bundle; it has {', '.join(self.bundle.label_sets)}"
            )
        by: dict[str, dict[str, float]] = {}
        flat: dict[str, float] = {}
        for (ls, cls), p in zip(self._index, probs):
            if label_set is not None and ls != label_set:
                continue
            by.setdefault(ls, {})[cls] = float(p)
            flat[cls] = float(p)
        return flat, by

    def preprocess(self, signal: np.ndarray, *, fs: float, leads: Sequence[str]) -> Preprocessed:
        return preprocess(
            signal, fs=fs, leads=leads, config=self.bundle.preprocess_config, drop_bad_leads=True
        )

    def predict(
        self,
        signal: np.ndarray,
        *,
        fs: float,
        leads: Sequence[str],
        label_set: str | None = None,
    ) -> Prediction:
        """Score a (n_leads, n_samples) mV recording sampled at ``fs`` Hz with the named ``leads``.

        Unusable leads (flat, saturated, out of range) are dropped and reported in ``quality``; the model
        scores the remaining subset. Raises a named :class:`kmerl_edge.KmerlError` for bad input.
        """
        if label_set is not None and label_set not in self.bundle.label_sets:
            raise UnknownLabelSetError(
                f"label set {label_set!r} not in bundle; it has {', '.join(self.bundle.label_sets)}"
            )
        self.check_leads(leads)
        t0 = time.perf_counter()
        pre = self.preprocess(signal, fs=fs, leads=leads)
        probs = self.run_windows(pre.windows, pre.lead_ids)
        latency = (time.perf_counter() - t0) * 1e3
        flat, by = self.scores_from_probs(probs.mean(axis=0), label_set)
        windows = tuple(self.scores_from_probs(p, label_set)[0] for p in probs)
        notes = []
        if not self.bundle.trained:
            notes.append("randomly initialised test bundle: scores are meaningless")
        gate = self.bundle.quality_gate_failed
        if gate:
            notes.append(f"QUALITY GATE FAILED — held-out AUC not clearly above chance ({gate}): scores are unreliable")
        if pre.quality.dropped_leads:
            notes.append(f"dropped unusable leads: {', '.join(pre.quality.dropped_leads)}")
        return Prediction(
            scores=flat,
            by_label_set=by,
            quality=pre.quality,
            leads=pre.leads,
            window_starts_s=pre.window_starts_s,
            window_scores=windows,
            backend=self.backend.name,
            latency_ms=latency,
            trained_model=self.bundle.trained,
            notes=tuple(notes),
        )

    def stream(self, *, fs: float, leads: Sequence[str], hop_s: float = 2.0, **kwargs: Any) -> StreamSession:
        """A live :class:`kmerl_edge.stream.StreamSession` over this classifier (see that module)."""
        from .stream import StreamSession

        return StreamSession(self, fs=fs, leads=leads, hop_s=hop_s, **kwargs)


def load(
    bundle: str | Path | None = None,
    backend: str = "auto",
    *,
    threads: int | None = None,
    verify: bool = True,
    public_key: Any = None,
    digest: str | None = None,
) -> Classifier:
    """Load a verified bundle (``None``: the default bundle shipped in the package) on a backend.

    ``backend`` is ``"auto"`` (lowest load time + per-window latency among the installed backends; see
    :attr:`Classifier.backend_choice` for what it chose and why), ``"torch"``, ``"onnxruntime"``,
    ``"onnxruntime-int8"``, ``"executorch"``, ``"executorch-int8"`` or ``"tensorrt"``.

    ``public_key`` pins the Ed25519 key the bundle must be signed with (PEM path, PEM bytes, raw 32
    bytes); ``digest`` pins its bundle digest (``kmerl-edge info`` prints it). See :mod:`kmerl_edge._bundle`.
    """
    path = default_bundle_path() if bundle is None else Path(bundle)
    b = load_bundle(path, verify=verify, public_key=public_key, digest=digest)
    be, choice = choose_backend(b, backend, threads)
    return Classifier(b, be, choice)
