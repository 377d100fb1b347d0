"""Fit a bundle's superclass stack (:mod:`kmerl_edge._superclass_stack`) on the network's training split.

The bundle must carry the supervised linear superclass head (``--superclass-probe``): the stack's inputs are
that head's logits. Its training rows are the head's own: the PTB-XL windows of the bundle's training
patients (``heldout.json``; without it the corpus's ``train`` split), each on the lead subsets of
:func:`export._probe.subset_rows`. The head's logits on those rows are **cross-fitted** (5 folds grouped by
record, each class at the C the head was fitted with, from the manifest), so the stack never learns from
the head's in-sample outputs; the measurements come from the runtime's own function
(:func:`kmerl_edge._superclass_stack.stack_measurements`, beats of the model window). Per class one logistic
regression, C chosen by 5-fold cross-validation grouped by record (ROC AUC). A record of the corpus's
``test`` split or of a patient outside the bundle's training patients is an :class:`ExportError`.

    kmerl-export superclass-stack --bundle kmerl_edge/default_bundle --data ../shared/data
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._errors import ExportError

__all__ = ["add_superclass_stack", "check_training_records", "fit_superclass_stack", "stack_training_windows"]

#: inverse regularisation strengths tried for the stack
STACK_CS = tuple(float(c) for c in np.logspace(-3, 2, 8))
CV_FOLDS = 5


def check_training_records(records: Sequence[Any], train_patients: set[str] | None) -> None:
    """:class:`ExportError` unless every record is a training record: not in the ``test`` split, and (with
    the bundle's ``train_patients``) of a training patient, else in the ``train`` split."""
    bad = [r for r in records if r.split == "test" or (r.patient not in train_patients if train_patients is not None
                                                       else r.split != "train")]
    if bad:
        raise ExportError(f"{len(bad)} records are not training records of the bundle (e.g. {bad[0].record_id}, "
                          f"split {bad[0].split!r}): the superclass stack is fitted on training records only")


def stack_training_windows(records: Sequence[Any], classes: Sequence[str], config: Any
                           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(z-scored first windows (N, 12, S) float32, canonical lead order, unusable leads zero rows; labels
    (N, C); record ids) of the records, preprocessed as the runtime does (``drop_bad_leads``)."""
    from kmerl_edge import lead_ids, preprocess
    from kmerl_edge._io import read_record

    x = np.zeros((len(records), 12, config.window_samples), np.float32)
    for k, r in enumerate(records):
        rec = read_record(r.path)
        pre = preprocess(rec.signal, fs=rec.fs, leads=rec.leads, config=config, drop_bad_leads=True)
        x[k, lead_ids(pre.leads)] = pre.windows[0]
    y = np.asarray([[c in r.labels for c in classes] for r in records], np.float32)
    return x, y, [r.record_id for r in records]


def crossfit_head_logits(emb: np.ndarray, y: np.ndarray, groups: np.ndarray, cs: Sequence[float],
                         folds: int = CV_FOLDS) -> np.ndarray:
    """Out-of-fold head logits (N, C): per class a logistic regression at C ``cs[j]`` on the standardised
    embeddings, ``folds`` folds grouped by ``groups`` (a record never in its own fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    z = (emb - emb.mean(axis=0)) / np.maximum(emb.std(axis=0), 1e-6)
    out = np.zeros(y.shape)
    for tr, te in GroupKFold(n_splits=folds).split(z, y[:, 0], groups):
        for j, c in enumerate(cs):
            lr = LogisticRegression(C=c, max_iter=2000).fit(z[tr], y[tr, j] > 0.5)
            out[te, j] = lr.decision_function(z[te])
    return out


def _rows_measured(x: np.ndarray, win: np.ndarray, lids: Sequence[np.ndarray], fs: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-lead and window measurements and the presence mask of every (window, lead subset) row."""
    from kmerl_edge._measure import GLOBAL, PER_LEAD
    from kmerl_edge._superclass_stack import stack_measurements

    per = np.full((len(win), 12, len(PER_LEAD)), np.nan)
    glob = np.zeros((len(win), len(GLOBAL)))
    mask = np.zeros((len(win), 12))
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, lid in enumerate(lids):
        groups.setdefault(tuple(int(i) for i in lid), []).append(k)
    for lid_t, rows in groups.items():
        lid = np.asarray(lid_t)
        for a in range(0, len(rows), 64):
            part = rows[a:a + 64]
            p, g = stack_measurements(x[win[part]][:, lid], lid, fs=fs)
            per[part], glob[part] = p, g
            mask[np.ix_(np.asarray(part), lid)] = 1.0
    return per, glob, mask


def fit_superclass_stack(model: Any, head_cs: Sequence[float], x: np.ndarray, y: np.ndarray,
                         classes: Sequence[str], *, label_set: str, fs: float, probe_config: Any = None,
                         meta: dict[str, Any] | None = None) -> Any:
    """The stack for ``model`` (a :class:`kmerl_edge._model.KMERLModel` with its superclass head; ``head_cs``
    the C per class its head was fitted with) on training windows ``x`` (N, 12, S) with labels ``y``."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    from kmerl_edge._superclass_stack import SuperclassStack

    from ._probe import ProbeConfig, subset_embeddings, subset_rows

    cfg = probe_config or ProbeConfig()
    t0 = time.perf_counter()
    emb, win, count = subset_embeddings(model, x, cfg)
    rwin, lids = subset_rows(x, cfg)
    if not np.array_equal(rwin, win):  # pragma: no cover - the two walk the same subsets
        raise ExportError("subset rows and embeddings disagree")
    yr = y[win]
    logits = crossfit_head_logits(emb, yr, win, head_cs)
    per, glob, mask = _rows_measured(x, win, lids, fs)

    def std(a: np.ndarray) -> np.ndarray:
        s = np.nanstd(a, axis=0)
        return np.where(np.isfinite(s) & (s > 1e-9), s, 1.0)

    def mean(a: np.ndarray) -> np.ndarray:
        m = np.nanmean(a, axis=0) if np.isfinite(a).any() else np.zeros(a.shape[1:])
        return np.where(np.isfinite(m), m, 0.0)

    c = len(classes)
    stats = {"logit_mean": logits.mean(axis=0), "logit_std": np.maximum(logits.std(axis=0), 1e-6),
             "lead_mean": mean(per), "lead_std": std(per), "global_mean": mean(glob), "global_std": std(glob)}
    blank = SuperclassStack(label_set, tuple(classes), **stats,
                            coef=np.zeros((c, c + per.shape[1] * per.shape[2] + 12 + glob.shape[1])),
                            intercept=np.zeros(c))
    f = blank.design(logits, per, glob, mask)
    splits = list(GroupKFold(n_splits=CV_FOLDS).split(f, yr[:, 0], win))
    coef, icpt, chosen = np.zeros((c, f.shape[1])), np.zeros(c), {}
    for j, name in enumerate(classes):
        yj = yr[:, j] > 0.5
        if yj.all() or not yj.any():
            raise ExportError(f"superclass stack: class {name!r} has no {'negative' if yj.all() else 'positive'} row")
        lr = LogisticRegressionCV(Cs=list(STACK_CS), cv=splits, scoring="roc_auc", max_iter=3000).fit(f, yj)
        coef[j], icpt[j] = lr.coef_[0], float(lr.intercept_[0])
        chosen[name] = {"C": float(lr.C_[0]), "positives": int(yj.sum())}
    info = {"fitted_on": "PTB-XL windows of the network's training patients, the head's lead subsets",
            "windows": int(len(x)), "rows": int(len(win)), "measured_share": round(float(glob[:, 0].mean()), 4),
            "head_logits": "cross-fitted (5 folds grouped by record, the head's C per class)",
            "per_class": chosen, "seconds": round(time.perf_counter() - t0, 1), **(meta or {})}
    return SuperclassStack(label_set, tuple(classes), **stats, coef=coef, intercept=icpt, meta=info)


def add_superclass_stack(bundle: str | Path, shared: str | Path, *, signing_key: Any = None,
                         corpus_config: Any = None) -> dict[str, Any]:
    """Fit the stack for ``bundle`` on its training patients' PTB-XL records in ``shared`` and add it as
    ``superclass_stack.json``; returns what was fitted."""
    import json
    import tempfile

    import kmerl_edge
    from kmerl_edge._bundle import add_artifacts
    from kmerl_edge._superclass_stack import STACK_FILE

    from ._corpus import build_corpus
    from ._fusion import fusion_records

    clf = kmerl_edge.load(bundle, backend="torch")
    b = clf.bundle
    probe = (b.manifest.get("metrics") or {}).get("superclass_probe")
    if not b.model_config.probe_classes or not probe:
        raise ExportError(f"{bundle} has no superclass head (--superclass-probe): the stack stacks its logits")
    classes = list(probe["classes"])
    held = Path(bundle) / "heldout.json"
    train_patients = set(json.loads(held.read_text())["train_patients"]) if held.is_file() else None
    corpus = build_corpus(shared, corpus_config)
    recs = [r for r in fusion_records(corpus, train_patients) if r.source == "ptbxl"]
    check_training_records(recs, train_patients)
    if not recs:
        raise ExportError("no PTB-XL training record: nothing to fit the superclass stack on")
    cfg = b.preprocess_config
    x, y, _ = stack_training_windows(recs, classes, cfg)
    from kmerl_edge._model import KMERLModel

    model = getattr(clf.backend, "model", None)
    if not isinstance(model, KMERLModel):
        import torch

        model = KMERLModel(b.model_config)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in b.weights().items()}, strict=False)
    stack = fit_superclass_stack(model.eval(), [probe["per_class"][c]["C"] for c in classes], x, y, classes,
                                 label_set=probe["label_set"], fs=cfg.target_fs)
    with tempfile.TemporaryDirectory() as tmp:
        src = stack.save(Path(tmp) / STACK_FILE)
        add_artifacts(bundle, {STACK_FILE: (src, {"kind": "stack", "backend": "none", "precision": "fp64"})},
                      metrics={"superclass_stack": stack.meta}, signing_key=signing_key)
    return stack.meta
