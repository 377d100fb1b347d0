"""The public classification API: :func:`load` → :class:`Classifier` → :class:`Prediction`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from ._af_fusion import AF_FUSION_FILE, AfFusion, window_rhythm_features
from ._backends import Backend, BackendChoice, choose_backend
from ._bundle import Bundle, load_bundle
from ._errors import BundleError, InvalidArgumentError, LeadError, UnknownLabelSetError
from ._io import ArrayReader
from ._leads import canonical_leads
from ._polarity import lead_i_polarity, window_polarity
from ._preprocess import Preprocessed, QualityReport, _check_fs, preprocess
from ._scoring import Coverage, Route, ScoredWindows, score_reader
from ._superclass_stack import STACK_FILE, SuperclassStack, stack_measurements
from .rhythm import RhythmResult

if TYPE_CHECKING:  # pragma: no cover
    from ._io import Record
    from .stream import StreamSession

__all__ = ["Classifier", "Prediction", "load", "default_bundle_path", "default_companion_path"]

_COMPANION_START = threading.Lock()
_DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default_bundle"
#: the default bundle's companion: it scores the lead counts the default student does not serve (4–12)
_DEFAULT_COMPANION = Path(__file__).resolve().parent / "default_bundle_12"


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (raises :class:`BundleError` if this install has none)."""
    if not (_DEFAULT_BUNDLE / "manifest.json").exists():
        raise BundleError(
            "this installation ships no default bundle; pass bundle=PATH (see README, 'Default model')"
        )
    return _DEFAULT_BUNDLE


def default_companion_path() -> Path | None:
    """The companion bundle shipped beside the default one (more leads than the student serves), or ``None``."""
    return _DEFAULT_COMPANION if (_DEFAULT_COMPANION / "manifest.json").exists() else None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(x, -60.0), 60.0)))  # np.clip's numbers, less overhead


@dataclass(frozen=True)
class Prediction:
    """Scores for one recording.

    - ``scores``: {class name: probability in [0, 1]} over the requested label set(s), averaged over the
      10-s windows of the recording;
    - ``by_label_set``: the same, grouped {label set: {class: probability}};
    - ``window_scores``: one {class: probability} per window, starting at ``window_starts_s``;
    - ``quality``: per-lead and overall flags (record-level: ``padded``, ``gap``, ``lead_I_inverted`` — lead I
      looks inverted, electrodes swapped or the device reversed, explained in ``notes``; it never changes a
      score); ``leads``: the leads actually scored;
    - ``coverage``: how much of the recording was missing (gaps) or left unscored; windows never overlap
      a gap. A class name that appears in two label sets is keyed ``"label set/class"`` in ``scores``;
    - ``rhythm``: beats, heart rate, HRV and RR irregularity of the whole recording on one lead at its own
      rate (:func:`kmerl_edge.rhythm.analyse`; intervals never span a gap); ``window_rhythm``: the same
      per scored window;
    - ``bundle``: the bundle directory that scored it (the one that scored most windows when the leads
      changed along the recording) and ``backend`` the backend it ran on. A classifier with a companion
      (:func:`load`) routes each piece of the recording by the leads that *passed the quality checks*, not
      the leads given: ``leads_given`` are the leads given, ``leads`` those scored, ``dropped`` {lead: why}
      those left out (``flat``, ``saturated``, ``out_of_range``, ``missing samples``) and ``routes`` which
      bundle scored which windows on which leads.
    """

    scores: dict[str, float]
    by_label_set: dict[str, dict[str, float]]
    quality: QualityReport
    leads: tuple[str, ...]
    window_starts_s: tuple[float, ...]
    window_scores: Sequence[dict[str, float]]
    backend: str
    latency_ms: float
    trained_model: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    coverage: Coverage | None = None
    rhythm: RhythmResult | None = None
    window_rhythm: Sequence[RhythmResult] = ()
    bundle: str = ""
    leads_given: tuple[str, ...] = ()
    dropped: dict[str, str] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()

    def top(self, k: int = 3, label_set: str | None = None) -> list[tuple[str, float]]:
        src = self.by_label_set[label_set] if label_set else self.scores
        return sorted(src.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": self.by_label_set,
            "quality": self.quality.to_dict(),
            "leads": list(self.leads),
            "leads_given": list(self.leads_given),
            "dropped_leads": dict(self.dropped),
            "bundle": self.bundle,
            "routes": [r.to_dict() for r in self.routes],
            "window_starts_s": list(self.window_starts_s),
            "backend": self.backend,
            "latency_ms": round(self.latency_ms, 3),
            "trained_model": self.trained_model,
            "notes": list(self.notes),
            "coverage": self.coverage.to_dict() if self.coverage is not None else None,
            "rhythm": self.rhythm.to_dict() if self.rhythm is not None else None,
            "window_rhythm": [r.to_dict(beats=False) for r in self.window_rhythm],
        }


class Classifier:
    """A loaded, verified bundle bound to one backend. Create it with :func:`kmerl_edge.load`.

    With a ``companion`` bundle, lead sets this bundle does not serve (more than its ``max_leads``, or
    not among its ``supported_lead_sets``) are scored by the companion (loaded on first use, on the same
    backend request): :meth:`route` says which. Scoring routes by the leads that pass the quality
    checks, per piece of a recording and per window of a stream."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        choice: BackendChoice | None = None,
        *,
        companion: Bundle | None = None,
        backend_request: tuple[str, int | None] = ("auto", None),
    ) -> None:
        self.bundle = bundle
        #: the companion bundle (verified; its backend starts on first use), or ``None``
        self.companion_bundle = companion
        self._companion: Classifier | None = None
        #: on a companion: the classifier it is the companion of (routing goes through it)
        self._parent: Classifier | None = None
        self._request = backend_request
        #: a note on every prediction of this classifier (set on a companion: why it scored)
        self.routing_note = ""
        self.backend = backend
        #: what ``load`` chose and why (``backend="auto"`` weighs load time against per-window latency)
        self.backend_choice = choice or BackendChoice(backend.name, backend.name, "given")
        _, self._index = bundle.all_queries()
        #: per label set (None: all), the (column, label set, class, flat key) of each class scored
        self._score_keys: dict[str | None, list[tuple[int, str, str, str]]] = {}
        self._serves: dict[tuple[str, ...], bool] = {}  # lead set → whether this bundle serves it
        self._max_leads = bundle.max_leads
        self._lead_sets = bundle.spec.supported_lead_sets if bundle.spec is not None else None
        self.af_fusion: AfFusion | None = None
        self._fusion_col = -1
        if AF_FUSION_FILE in bundle.artifacts:
            self.use_af_fusion(AfFusion.from_bytes(bundle.read(AF_FUSION_FILE)))  # the verified bytes
        self.superclass_stack: SuperclassStack | None = None
        self._stack_cols: list[int] = []
        if STACK_FILE in bundle.artifacts:
            self.use_superclass_stack(SuperclassStack.from_bytes(bundle.read(STACK_FILE)))

    def use_superclass_stack(self, stack: SuperclassStack | None) -> None:
        """Report ``stack``'s superclass probabilities from now on (``None``: the model's own)."""
        if stack is None:
            self.superclass_stack, self._stack_cols = None, []
            return
        keys = [(stack.label_set, c) for c in stack.classes]
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise BundleError(f"superclass_stack.json stacks {missing}, which the bundle's queries do not score")
        self.superclass_stack, self._stack_cols = stack, [self._index.index(k) for k in keys]

    @property
    def needs_rhythm(self) -> bool:
        """Whether :meth:`run_windows` uses the windows' rhythm (AF fusion or superclass stack)."""
        return self.af_fusion is not None or self.superclass_stack is not None

    def use_af_fusion(self, fusion: AfFusion | None) -> None:
        """Report ``fusion``'s AF probability from now on (``None``: the model's own). The exporter uses
        this to tune an event rule for a fusion before it is sealed into the bundle."""
        if fusion is None:
            self.af_fusion, self._fusion_col = None, -1
            return
        key = (fusion.label_set, fusion.class_name)
        if key not in self._index:
            raise BundleError(f"af_fusion.json fuses {key}, which the bundle's queries do not score")
        self.af_fusion, self._fusion_col = fusion, self._index.index(key)

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
        """The most leads scored at once: this bundle's, or its companion's where larger."""
        comp = self.companion_bundle
        return max(self._max_leads, comp.max_leads if comp is not None else 0)

    @property
    def companion(self) -> Classifier | None:
        """The companion's classifier, started on first access (``None`` without a companion)."""
        with _COMPANION_START:  # a stream worker thread may route to it first
            return self._start_companion()

    def _start_companion(self) -> Classifier | None:
        if self._companion is None and self.companion_bundle is not None:
            comp = self.companion_bundle
            be, choice = choose_backend(comp, self._request[0], self._request[1])
            self._companion = Classifier(comp, be, choice)
            self._companion._parent = self
            self._companion.batch_windows = self.batch_windows
            serves = f"at most {self._max_leads} leads" + (
                f", the lead sets {', '.join('+'.join(s) for s in self._lead_sets)}" if self._lead_sets else "")
            self._companion.routing_note = (
                f"scored by the companion bundle {comp.path.name} on the leads that passed the quality checks "
                f"({self.bundle.path.name} serves {serves}; {comp.path.name} up to {comp.max_leads})"
            )
        return self._companion

    def serves(self, leads: Sequence[str]) -> bool:
        """Whether this classifier's own bundle scores exactly this lead set (``max_leads`` and
        ``supported_lead_sets``); its companion is not asked."""
        try:
            ok = self._serves.get(leads)  # type: ignore[call-overload]  # a lead set asked before, as given
        except TypeError:  # unhashable: checked (and refused) below
            ok = None
        if ok is None:
            names = canonical_leads(leads)
            ok = self._serves[names] = _bundle_serves(self.bundle, names)
        return ok

    def route(self, leads: Sequence[str]) -> Classifier | None:
        """The classifier whose bundle scores this lead set: the primary bundle when it serves it (the
        ≤3-lead student is the better model at 1–3 leads), else its companion (started on first use);
        ``None`` when neither does. On a companion, routing goes through its primary."""
        top = self._parent or self
        if top.serves(leads):
            return top
        comp = top.companion_bundle
        if comp is not None and _bundle_serves(comp, canonical_leads(leads)):
            return top.companion
        return None

    def for_leads(self, leads: Sequence[str]) -> Classifier:
        """:meth:`route`, raising :class:`LeadError` when no bundle serves that lead set."""
        names = canonical_leads(leads)
        target = self.route(names)
        if target is None:
            raise self.unserved_error(names)
        return target

    def unserved_error(self, leads: Sequence[str], dropped: Sequence[str] = ()) -> LeadError:
        """The :class:`LeadError` for a lead set no bundle of this classifier serves (``dropped``: the
        leads the quality checks left out, named in the message)."""
        top = self._parent or self
        names = canonical_leads(leads)
        comp = top.companion_bundle
        why = (f"after the quality checks dropped {', '.join(dropped)}, the lead set {'+'.join(names)} is left, and "
               if dropped else "")
        if len(names) > top.max_leads:
            if comp is not None:
                return LeadError(
                    f"{why}bundle {top.bundle.path.name} serves at most {top._max_leads} leads and its companion "
                    f"{comp.path.name} at most {comp.max_leads}; got {len(names)} ({', '.join(names)}): "
                    "choose a subset with leads=[...]"
                )
            return LeadError(
                f"{why}bundle {top.bundle.path.name} serves at most {top._max_leads} leads; got {len(names)} "
                f"({', '.join(names)}): choose a subset with leads=[...]"
            )
        # the count fits: a supported_lead_sets list refuses the set
        holder = top.bundle if len(names) <= top._max_leads or comp is None else comp
        sets = holder.spec.supported_lead_sets if holder.spec is not None else None
        listed = ", ".join("+".join(s) for s in sets) if sets else "any"
        return LeadError(
            f"{why}bundle {holder.path.name} serves only the lead sets {listed}; got {'+'.join(names)}"
        )

    def check_leads(self, leads: Sequence[str]) -> tuple[str, ...]:
        """The canonical names of ``leads``; :class:`LeadError` when no bundle of this classifier
        serves that set as given."""
        names = canonical_leads(leads)
        self.for_leads(names)
        return names

    #: windows per backend call: bounds the backend's memory whatever the recording's length
    batch_windows: int = 8  # ONNX Runtime's arena grows with the batch: 8 costs ~40 MB less than 32

    def run_windows(
        self,
        windows: np.ndarray,
        lead_ids: np.ndarray,
        *,
        fuse: bool = True,
        rhythm: Sequence[RhythmResult | None] | None = None,
    ) -> np.ndarray:
        """Probabilities (n_windows, Q) for preprocessed windows; Q in :meth:`Bundle.all_queries` order.
        The backend sees at most :attr:`batch_windows` windows at a time.

        With an ``af_fusion.json`` in the bundle (and ``fuse``), the fused class's probability is the
        calibrated fusion of the model's logit with the window's rhythm evidence
        (:mod:`kmerl_edge._af_fusion`); ``fuse=False`` gives the model's own probabilities. ``rhythm``:
        per window, the analysis at the device rate of the fusion's rhythm lead
        (:func:`kmerl_edge._af_fusion.fusion_rhythm_lead`) over the window's samples, as ``predict`` and
        ``stream`` pass it; ``None`` (or a ``None`` entry) analyses the model window instead. With a
        ``superclass_stack.json`` (and ``fuse``), the stacked label set's probabilities come from the model's
        logits and the window's ECG measurements on the same beats (:mod:`kmerl_edge._superclass_stack`)."""
        return self._run_windows(windows, lead_ids, fuse=fuse, rhythm=rhythm)[0]

    def _run_windows(
        self,
        windows: np.ndarray,
        lead_ids: np.ndarray,
        *,
        fuse: bool = True,
        rhythm: Sequence[RhythmResult | None] | None = None,
        polarity: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`run_windows`, and with ``polarity`` each window's lead I polarity
        (:func:`kmerl_edge._polarity.lead_i_polarity`: 1 looks inverted, 0 not, -1 unknown) from the
        superclass stack's own measurements, or measured here when the stack did not run; else ``None``.
        The probabilities are the same either way."""
        n, b = len(windows), max(1, int(self.batch_windows))
        if n <= b:
            logits = self.backend.run(windows, lead_ids).astype(np.float64)
        else:
            logits = np.concatenate(
                [self.backend.run(windows[a : a + b], lead_ids).astype(np.float64) for a in range(0, n, b)]
            )
        probs = _sigmoid(logits)
        fs = self.bundle.preprocess_config.target_fs
        if fuse and self.af_fusion is not None and len(probs):
            feats = window_rhythm_features(windows, lead_ids, fs=fs, rhythm=rhythm)
            probs[:, self._fusion_col] = self.af_fusion.probability(logits[:, self._fusion_col], feats)
        pol: np.ndarray | None = None
        if fuse and self.superclass_stack is not None and len(probs):
            per, glob = stack_measurements(windows, lead_ids, fs=fs, rhythm=rhythm)
            cols = self._stack_cols
            probs[:, cols] = self.superclass_stack.probability(logits[:, cols], per, glob, lead_ids)
            if polarity:
                pol = lead_i_polarity(per)
        if polarity and pol is None:
            pol = window_polarity(windows, lead_ids, fs=fs, rhythm=rhythm)
        return probs, pol

    def scores_from_probs(
        self, probs: np.ndarray, label_set: str | None = None
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Split a (Q,) probability vector into flat and per-label-set dicts."""
        if label_set is not None and label_set not in self.bundle.label_sets:
            raise UnknownLabelSetError(
                f"label set {label_set!r} not in bundle; it has {', '.join(self.bundle.label_sets)}"
            )
        keys = self._score_keys.get(label_set)
        if keys is None:
            chosen = [(i, ls, cls) for i, (ls, cls) in enumerate(self._index) if label_set is None or ls == label_set]
            names = [cls for _, _, cls in chosen]
            # never let two classes collapse: a name in two label sets is keyed "label set/class"
            keys = [(i, ls, cls, cls if names.count(cls) == 1 else f"{ls}/{cls}") for i, ls, cls in chosen]
            self._score_keys[label_set] = keys
        values = probs.tolist() if isinstance(probs, np.ndarray) and probs.ndim == 1 else [float(p) for p in probs]
        by: dict[str, dict[str, float]] = {}
        flat: dict[str, float] = {}
        for i, ls, cls, key in keys:
            if i < len(values):
                by.setdefault(ls, {})[cls] = flat[key] = float(values[i])
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

        NaN samples are missing samples (gaps): windows never overlap them and ``coverage`` reports them.
        Unusable leads (flat, saturated, out of range) are dropped and reported in ``quality``; the model
        scores the remaining subset. Raises a named :class:`kmerl_edge.KmerlError` for bad input.
        """
        top = self._parent or self
        top._check_label_set(label_set)
        names = top.check_leads(leads)
        rate = _check_fs(fs)
        x = _as_2d(signal, len(names))
        reader = ArrayReader(x, fs=rate, leads=names)
        return top._prediction(score_reader(top, reader, batch_windows=top.batch_windows), label_set)

    def predict_record(
        self,
        record: str | Path | Record,
        *,
        fs: float | None = None,
        leads: Sequence[str] | None = None,
        lead_map: dict[str, str] | str | None = None,
        label_set: str | None = None,
        units: str | None = None,
        gain: float | None = None,
    ) -> Prediction:
        """Score a recording file (read in pieces: memory does not grow with its length) or a
        :class:`kmerl_edge.Record`. ``leads`` picks standard leads; ``lead_map`` ({channel: lead} or
        ``"ECG 1=I,V=V5"``) says which standard lead an ECG channel of unknown position is. Channels that
        are not ECG, and ECG channels of unknown position beside standard leads, are left out with a note.
        ``units``/``gain``: what the numbers of a CSV/.npy are when the file does not say (see
        :func:`kmerl_edge.read_record`)."""
        from ._io import Record, open_record

        top = self._parent or self
        if top is not self:
            return top.predict_record(record, fs=fs, leads=leads, lead_map=lead_map, label_set=label_set,
                                      units=units, gain=gain)
        if isinstance(record, Record):
            rec_leads = canonical_leads(record.leads)  # a Record built by hand is checked like predict()'s input
            names = self.check_leads(leads if leads is not None else rec_leads)
            self._check_label_set(label_set)
            rate = _check_fs(record.fs)
            signal = _as_2d(record.signal, len(rec_leads))
            rows = [rec_leads.index(lead) for lead in names if lead in rec_leads]
            if len(rows) != len(names):
                from ._errors import MissingLeadError

                raise MissingLeadError(f"{record.name}: leads {', '.join(names)} not all in {', '.join(record.leads)}")
            reader = ArrayReader(signal, fs=rate, leads=names, rows=rows, name=record.name, notes=record.notes)
            return self._prediction(score_reader(self, reader, batch_windows=self.batch_windows), label_set)
        with open_record(record, fs=fs, leads=leads, lead_map=lead_map, units=units, gain=gain) as r:
            if leads is None and len(r.leads) > self.max_leads:
                raise LeadError(
                    f"{r.name} has {len(r.leads)} leads ({', '.join(r.leads)}) but the bundle serves at most "
                    f"{self.max_leads}; pick some with --leads / leads=[...]"
                )
            self._check_label_set(label_set)
            return self._prediction(score_reader(self, r, batch_windows=self.batch_windows), label_set)

    def _check_label_set(self, label_set: str | None) -> None:
        if label_set is not None and label_set not in self.bundle.label_sets:
            raise UnknownLabelSetError(
                f"label set {label_set!r} not in bundle; it has {', '.join(self.bundle.label_sets)}"
            )

    def _prediction(self, sw: ScoredWindows, label_set: str | None) -> Prediction:
        flat, by = self.scores_from_probs(sw.probs.mean(axis=0), label_set)
        windows = WindowScores(self, sw.probs, label_set)
        notes = list(sw.notes)
        by_path = {str(c.bundle.path): c for c in (self, self._companion) if c is not None}
        counts: dict[str, int] = {}
        for r in sw.routes:
            counts[r.bundle] = counts.get(r.bundle, 0) + r.n_windows
        main = max(counts, key=lambda b: counts[b]) if counts else str(self.bundle.path)
        scorers = [by_path.get(b, self) for b in counts] or [self]
        total = sum(counts.values())
        for b, n in counts.items():
            clf = by_path.get(b, self)
            if clf.routing_note:
                notes.insert(0, clf.routing_note if n == total else f"{n} of {total} windows {clf.routing_note}")
        if any(not c.bundle.trained for c in scorers):
            notes.insert(0, "randomly initialised test bundle: scores are meaningless")
        gates = [g for g in dict.fromkeys(c.bundle.quality_gate_failed for c in scorers) if g]
        for gate in gates:
            notes.insert(0, f"QUALITY GATE FAILED — held-out AUC not clearly above chance ({gate}): scores are unreliable")
        if sw.dropped:
            notes.append("dropped unusable leads: " + ", ".join(f"{k} ({v})" for k, v in sw.dropped.items()))
        return Prediction(
            scores=flat,
            by_label_set=by,
            quality=sw.quality,
            leads=sw.leads,
            window_starts_s=sw.starts_s,
            window_scores=windows,
            backend=by_path.get(main, self).backend.name,
            latency_ms=sw.latency_ms,
            trained_model=all(c.bundle.trained for c in scorers),
            notes=tuple(notes),
            coverage=sw.coverage,
            rhythm=sw.rhythm,
            window_rhythm=sw.window_rhythm,
            bundle=main,
            leads_given=sw.leads_given,
            dropped=dict(sw.dropped),
            routes=sw.routes,
        )

    def stream(self, *, fs: float, leads: Sequence[str], hop_s: float | None = None, **kwargs: Any) -> StreamSession:
        """A live :class:`kmerl_edge.stream.StreamSession` over this classifier (see that module).
        ``hop_s`` (default: ``config.hop_s``, 2 s) overrides the hop of a ``config=StreamConfig(...)``.
        The session's lead set picks its classifier (:meth:`for_leads`): ``session.classifier``. Unlike
        :meth:`predict`, which routes every piece of a file by the leads that pass its quality checks, a
        session *keeps its bundle* while that bundle serves the leads that pass (a 12-lead session whose
        other nine leads go off stays with the companion): on held-out windows the two shipped bundles'
        AF calls differ on about a third of the same windows with no accuracy difference either way
        (``python -m benchmarks.routing``), so a mid-session switch would step the smoothed probability
        and the event hysteresis for nothing. Only a window whose remaining leads the session's bundle
        does not serve (``supported_lead_sets``) goes to the other bundle, or is skipped
        (``unserved_lead_set``); ``WindowResult.bundle`` says which bundle scored each window."""
        from .stream import StreamSession

        return StreamSession(self.for_leads(leads), fs=fs, leads=leads, hop_s=hop_s, **kwargs)


class WindowScores(Sequence[dict[str, float]]):
    """One {class: probability} per window, built on access from a (n_windows, Q) array: a 24-h
    recording has ~17,000 windows, whose dicts would cost ~12 MB; the array costs ~1.5 MB."""

    def __init__(self, clf: Classifier, probs: np.ndarray, label_set: str | None) -> None:
        self._clf, self._probs, self._ls = clf, np.asarray(probs, dtype=np.float64), label_set

    def __len__(self) -> int:
        return int(self._probs.shape[0])

    def column(self, label_set: str, class_name: str) -> np.ndarray:
        """The probability of one class in every window, (n_windows,) float64."""
        try:
            col = self._clf._index.index((label_set, class_name))
        except ValueError:
            raise UnknownLabelSetError(f"no class {class_name!r} in label set {label_set!r}") from None
        return self._probs[:, col].copy()

    @overload
    def __getitem__(self, i: int) -> dict[str, float]: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[dict[str, float], ...]: ...

    def __getitem__(self, i: int | slice) -> dict[str, float] | tuple[dict[str, float], ...]:
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        return self._clf.scores_from_probs(self._probs[i], self._ls)[0]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WindowScores({len(self)} windows)"


def _bundle_serves(bundle: Bundle, names: tuple[str, ...]) -> bool:
    if not names or len(names) > bundle.max_leads:
        return False
    sets = bundle.spec.supported_lead_sets if bundle.spec is not None else None
    return sets is None or tuple(sorted(names)) in {tuple(sorted(s)) for s in sets}


def _as_2d(signal: Any, n_leads: int) -> np.ndarray:
    """Check the documented (n_leads, n_samples) numeric layout; NaN (missing) allowed, ±Inf not."""
    from ._errors import NonFiniteSignalError
    from ._preprocess import _as_layout

    x = _as_layout(signal, n_leads)
    if x.dtype.kind == "f" and np.isinf(x).any():
        raise NonFiniteSignalError(f"signal holds {int(np.isinf(x).sum())} infinite samples")
    return x


def load(
    bundle: str | Path | None = None,
    backend: str = "auto",
    *,
    threads: int | None = None,
    verify: bool = True,
    public_key: Any = None,
    digest: str | None = None,
    companion: str | Path | Literal[False] | None = None,
) -> Classifier:
    """Load a verified bundle (``None``: the default bundle shipped in the package) on a backend.

    ``backend`` is ``"auto"`` (lowest load time + per-window latency among the installed backends; see
    :attr:`Classifier.backend_choice` for what it chose and why), ``"torch"``, ``"onnxruntime"``,
    ``"onnxruntime-int8"``, ``"executorch"``, ``"executorch-int8"`` or ``"tensorrt"``.

    ``public_key`` pins the Ed25519 key the bundle must be signed with (PEM path, PEM bytes, raw 32
    bytes); ``digest`` pins its bundle digest (``kmerl-edge info`` prints it). See :mod:`kmerl_edge._bundle`.

    ``companion``: a second bundle that scores the lead sets the first one does not serve (more than its
    ``max_leads`` or outside its ``supported_lead_sets``; verified now, with the same
    ``verify``/``public_key``; its backend, of the same ``backend`` request, starts on first use). Both
    must share the preprocessing and the classes (one recording's windows may be scored by both). Which
    one scores is decided by the leads that pass the quality checks (see :class:`Prediction`). ``None``: the default bundle gets the package's ``default_bundle_12`` companion
    (the ≤3-lead student scores 1–3 leads, the companion 4–12), an explicit ``bundle`` none; ``False``: none.
    """
    if threads is not None:
        import os

        limit = 4 * (os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
            raise InvalidArgumentError(
                f"threads must be a whole number from 1 to {limit} (4 × this machine's {os.cpu_count()} CPUs), "
                f"got {threads!r}"
            )
    path = default_bundle_path() if bundle is None else Path(bundle)
    b = load_bundle(path, verify=verify, public_key=public_key, digest=digest)
    comp_path = default_companion_path() if companion is None and bundle is None else companion or None
    comp = None
    if comp_path is not None:
        comp = load_bundle(Path(comp_path), verify=verify, public_key=public_key)
        if comp.max_leads <= b.max_leads:
            raise InvalidArgumentError(
                f"companion {comp.path.name} serves at most {comp.max_leads} leads, no more than "
                f"{b.path.name}'s {b.max_leads}: it would never score"
            )
        if comp.preprocess_config != b.preprocess_config or comp.all_queries()[1] != b.all_queries()[1]:
            raise InvalidArgumentError(
                f"companion {comp.path.name} does not share {b.path.name}'s preprocessing and classes: "
                "the windows of one recording may be scored by either, so both must score the same classes "
                "on the same input"
            )
    be, choice = choose_backend(b, backend, threads)
    return Classifier(b, be, choice, companion=comp, backend_request=(backend, threads))
