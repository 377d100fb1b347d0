"""Fit the bundle's AF fusion (:mod:`kmerl_edge._af_fusion`) on the training split, and the AF windows
of the corpus it is fitted and evaluated on.

AF windows: the first 10-s window of every 12-lead corpus record and every 10-s CPSC-2021 Holter window,
leads I and II (every source has both), preprocessed with the bundle's shared preprocessing. Each row
carries its source, split and patient so that fitting uses the training split (or the training sources of
a leave-one-source-out fold) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kmerl_edge._af_fusion import RHYTHM_FEATURES, AfFusion, window_rhythm_features

__all__ = ["AF_LEAD_SETS", "AfWindows", "add_af_fusion", "af_features", "device_rhythms", "fit_af_fusion", "load_af_windows",
           "tune_event_rule"]

#: the lead sets the AF fusion is fitted and measured on
AF_LEAD_SETS: dict[str, tuple[str, ...]] = {"I": ("I",), "I+II": ("I", "II"), "II": ("II",)}


def device_rhythms(signal: np.ndarray, *, fs: float, leads: Sequence[str], window_s: float,
                   want: Sequence[str] = ("I", "II")) -> dict[str, Any]:
    """{lead: :func:`kmerl_edge.rhythm.analyse` of the first ``window_s`` of that lead at the device rate}
    for the leads of ``want`` present: the beats ``predict`` feeds the AF fusion for that window."""
    from kmerl_edge import canonical_leads
    from kmerl_edge.rhythm import analyse

    names = canonical_leads(leads)
    n = int(round(window_s * fs))
    return {lead: analyse(np.asarray(signal[names.index(lead), :n], np.float64), fs=fs, lead=lead)
            for lead in want if lead in names}


@dataclass
class AfWindows:
    windows: np.ndarray  # (N, 2, S) float32: leads I, II
    af: np.ndarray  # (N,) float
    source: np.ndarray  # (N,) str
    split: np.ndarray  # (N,) str
    patient: np.ndarray  # (N,) str
    ids: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    #: per row, {lead: its window's rhythm at the device rate} for leads I and II (:func:`device_rhythms`)
    rhythm: list[dict[str, Any]] = field(default_factory=list)

    def rows(self, mask: np.ndarray) -> AfWindows:
        i = np.flatnonzero(mask)
        return AfWindows(self.windows[i], self.af[i], self.source[i], self.split[i], self.patient[i],
                         [self.ids[j] for j in i], self.failed,
                         [self.rhythm[j] for j in i] if self.rhythm else [])

    def fusion_rhythm(self, leads: Sequence[str], rows: Sequence[int] | None = None) -> list[Any] | None:
        """The device-rate rhythm the fusion uses on ``leads`` for each row (or for ``rows``)."""
        from kmerl_edge import lead_ids
        from kmerl_edge._af_fusion import fusion_rhythm_lead

        if not self.rhythm:
            return None
        lead = fusion_rhythm_lead(lead_ids(leads))
        idx = range(len(self.ids)) if rows is None else rows
        return [self.rhythm[i].get(lead) for i in idx]


def load_af_windows(records: Sequence[Any], config: Any = None) -> AfWindows:
    """Preprocess leads I and II of each :class:`export._corpus.CorpusRecord` (first 10-s window)."""
    from kmerl_edge import KmerlError, PreprocessConfig, preprocess
    from trainer.data import EcgItem, load_item

    cfg = config or PreprocessConfig()
    out, keep, failed, rhythm = [], [], {}, []
    for i, r in enumerate(records):
        try:
            rec = load_item(EcgItem(r.record_id, r.path, start_s=r.start_s, stop_s=r.stop_s))
            rows = [rec.leads.index(x) for x in ("I", "II")]
            pre = preprocess(rec.signal[rows], fs=rec.fs, leads=["I", "II"], config=cfg)
            beats = device_rhythms(rec.signal[rows], fs=rec.fs, leads=["I", "II"], window_s=cfg.window_s)
        except (KmerlError, ValueError, OSError) as exc:
            failed[r.record_id] = f"{type(exc).__name__}: {exc}"
            continue
        if pre.leads != ("I", "II"):
            failed[r.record_id] = f"unusable lead(s): {', '.join(pre.quality.dropped_leads)}"
            continue
        out.append(pre.windows[0].astype(np.float32))
        rhythm.append(beats)
        keep.append(i)
    recs = [records[i] for i in keep]
    return AfWindows(
        np.stack(out) if out else np.zeros((0, 2, cfg.window_samples), np.float32),
        np.array([float(r.af) for r in recs]),
        np.array([r.source for r in recs], dtype=object),
        np.array([r.split for r in recs], dtype=object),
        np.array([r.patient for r in recs], dtype=object),
        [r.record_id for r in recs],
        failed,
        rhythm,
    )


def af_features(clf: Any, data: AfWindows, leads: Sequence[str], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(model AF logit (N,), rhythm features (N, F)) of the classifier on ``leads`` of the AF windows."""
    from kmerl_edge import lead_ids

    ids = lead_ids(leads)
    rows = [("I", "II").index(x) for x in leads]
    _, index = clf.bundle.all_queries()
    col = index.index(("rhythm", "atrial fibrillation"))
    logits = []
    for s in range(0, len(data.ids), batch):
        x = np.ascontiguousarray(data.windows[s : s + batch][:, rows])
        logits.append(clf.backend.run(x, ids)[:, col].astype(np.float64))
    lg = np.concatenate(logits) if logits else np.zeros(0)
    feats = window_rhythm_features(data.windows[:, rows], ids, fs=clf.bundle.preprocess_config.target_fs,
                                   rhythm=data.fusion_rhythm(leads))
    return lg, feats


def fit_af_fusion(
    model_logit: np.ndarray, rhythm: np.ndarray, y: np.ndarray, *, use_model: bool = True, C: float = 1.0,
    meta: dict[str, Any] | None = None,
) -> AfFusion:
    """Logistic regression (sklearn, unweighted so that probabilities stay calibrated) on standardised
    features; ``use_model=False`` fits rhythm evidence alone (the model logit's coefficient is 0)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([np.asarray(model_logit, np.float64)[:, None], np.asarray(rhythm, np.float64)], axis=1)
    mean = np.nanmean(x, axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    x = np.where(np.isnan(x), mean, x)
    std = np.maximum(x.std(axis=0), 1e-6)
    z = (x - mean) / std
    if not use_model:
        z[:, 0] = 0.0
    lr = LogisticRegression(C=C, max_iter=2000).fit(z, np.asarray(y) > 0.5)
    coef = lr.coef_[0].astype(np.float64)
    if not use_model:
        coef[0] = 0.0
    return AfFusion("rhythm", "atrial fibrillation", ("model_logit",) + RHYTHM_FEATURES, mean, std, coef,
                    float(lr.intercept_[0]), dict(meta or {}))


def fusion_records(corpus: Any, train_patients: set[str] | None) -> list[Any]:
    """The corpus records an AF fusion is fitted on: those of the patients the bundle's network trained on
    (``train_patients`` from its ``heldout.json``), never a test record — a bundle built before the
    validation split trained on PTB-XL fold 9 too, so its fusion is fitted there too, and one built with
    it is not; without a held-out list, the corpus's ``train`` split."""
    if train_patients is None:
        return [r for r in corpus.records if r.split == "train"]
    return [r for r in corpus.records if r.split != "test" and r.patient in train_patients]


def add_af_fusion(
    bundle: Any, shared: Any, *, corpus_config: Any = None, C: float = 1.0, signing_key: Any = None,
    tune_events: bool = True,
) -> dict[str, Any]:
    """Fit the AF fusion on the training split of the corpus (the bundle's own training patients) with the
    bundle's torch student on leads I, II and I+II (rows pooled), and add it to the bundle as
    ``af_fusion.json``, with the AF event rule tuned on the training patients' Holter records
    (:func:`tune_event_rule`; ``tune_events=False`` leaves the session's default rule). Returns what was
    fitted (also stored in the fusion's ``meta``)."""
    import json
    import tempfile
    from pathlib import Path

    import kmerl_edge
    from kmerl_edge._af_fusion import AF_FUSION_FILE
    from kmerl_edge._bundle import add_artifacts

    from ._corpus import build_corpus

    clf = kmerl_edge.load(bundle, backend="torch")
    held = Path(bundle) / "heldout.json"
    train_patients = set(json.loads(held.read_text())["train_patients"]) if held.is_file() else None
    corpus = build_corpus(shared, corpus_config)
    recs = fusion_records(corpus, train_patients)
    data = load_af_windows(recs, clf.bundle.preprocess_config)
    logits, feats, ys = [], [], []
    for leads in AF_LEAD_SETS.values():
        lg, ft = af_features(clf, data, leads)
        logits.append(lg)
        feats.append(ft)
        ys.append(data.af)
    meta = {
        "fitted_on": "training split of the corpus (export._corpus), leads I, II and I+II pooled",
        "features": ["model_logit", *RHYTHM_FEATURES],
        "rows": int(len(data.ids)),
        "af_rows": int(data.af.sum()),
        "sources": sorted(set(data.source)),
        "C": C,
    }
    fus = fit_af_fusion(np.concatenate(logits), np.concatenate(feats), np.concatenate(ys), C=C, meta=meta)
    if tune_events:
        rule, on_train = tune_event_rule(clf, fus, shared, {r.patient for r in recs})
        fus = replace(fus, event_rule=rule,
                      meta={**fus.meta, "event_rule_tuning": on_train})
    summary = {**fus.meta, "coef": dict(zip(fus.features, [round(float(c), 4) for c in fus.coef])),
               "event_rule": fus.event_rule}
    with tempfile.TemporaryDirectory() as tmp:
        src = fus.save(Path(tmp) / AF_FUSION_FILE)
        add_artifacts(bundle, {AF_FUSION_FILE: (src, {"kind": "fusion", "backend": "none", "precision": "fp64"})},
                      metrics={"af_fusion": summary}, signing_key=signing_key)
    return summary


def tune_event_rule(
    clf: Any, fusion: AfFusion, shared: Any, train_patients: set[str], *, hop_s: float = 2.0,
    min_sensitivity: float = 0.8,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The AF event rule (:func:`export._events.choose_event_rule`) for ``fusion`` on the Holter records
    of the training patients only, scored at the session's default hop from lead I and from leads I+II
    (both pooled: the rule must hold for a one-lead wearable and a two-lead Holter)."""
    from kmerl_edge._errors import ExportError

    from ._events import choose_event_rule, holter_records, score_holter_record

    clf.use_af_fusion(fusion)
    bases = [b for b in holter_records(shared) if f"cpsc2021:{b.name.split('_')[1]}" in train_patients]
    if not bases:
        raise ExportError("no Holter record of a training patient to tune the AF event rule on")
    scored = [score_holter_record(clf, b, leads, hop_s) for b in bases for leads in (("I",), ("I", "II"))]
    rule, summary = choose_event_rule(scored, min_sensitivity=min_sensitivity)
    return rule, {"records": sorted(b.name for b in bases), "leads": ["I", "I+II"], "hop_s": hop_s,
                  "selection": f"fewest false events/h with episode sensitivity >= {min_sensitivity}", **summary}
