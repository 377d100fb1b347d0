"""Zero-shot macro AUC per label set and lead subset on the labelled real data in ``../shared/data``.

Tasks:

- ``ptbxl_superclass`` / ``ptbxl_rhythm``: PTB-XL records of one ``strat_fold`` (10, the benchmark's test
  fold) at 500 Hz, 12 leads; superclasses from ``superclasses_from_scp``, rhythm classes from
  ``scp_codes`` (:data:`kmerl_edge._labels.RHYTHM_SCP_CODES`).
- ``cpsc2021_af``: CPSC2021 Holter-like records (200 Hz, leads I and II) cut into consecutive 10-s windows,
  each labelled atrial fibrillation when more than half of it lies inside an ``(AFIB`` episode of the
  ``.atr`` rhythm annotations.

Every window goes through :func:`kmerl_edge.preprocess` with the bundle's preprocessing config; a lead
subset is scored by giving the model only those rows (preprocessing is per lead, so this equals
preprocessing the subset alone). Models: ``teacher`` (a training checkpoint, through
:func:`trainer.evaluate.evaluate_zero_shot` with its text encoder), ``student`` (the bundle on torch) and
``int8`` (the bundle on onnxruntime-int8). Macro AUC is over the classes that have both positives and
negatives in the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._stats import machine_info

__all__ = [
    "LEAD_SUBSETS",
    "EvalTask",
    "macro_auc",
    "af_episodes",
    "af_window_labels",
    "load_ptbxl_tasks",
    "load_cpsc2021_task",
    "run_accuracy",
    "bootstrap_macro_auc_ci",
    "heldout_spec",
    "TrainingPatientError",
]

#: subset label → leads. Counts follow the paper's order (I, II, III, aVF, aVR, aVL, V1–V6).
LEAD_SUBSETS: dict[str, tuple[str, ...]] = {
    "1": ("I",),
    "2": ("I", "II"),
    "3": ("I", "II", "III"),
    "6": ("I", "II", "III", "aVF", "aVR", "aVL"),
    "12": ("I", "II", "III", "aVF", "aVR", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"),
    "I (wrist)": ("I",),
    "II": ("II",),
    "I+II": ("I", "II"),
    "I+II+V2": ("I", "II", "V2"),
}


@dataclass
class EvalTask:
    """Preprocessed windows of one task: ``signals`` (N, 12, 5000) in :data:`kmerl_edge.LEADS` order with
    absent leads zero and ``present`` False; ``labels`` (N, C) multi-hot over ``classes``; ``label_set``
    names the bundle's label set whose queries score these classes."""

    name: str
    label_set: str
    classes: tuple[str, ...]
    signals: np.ndarray
    present: np.ndarray
    labels: np.ndarray
    ids: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    #: per row, {lead: the window's rhythm at the device rate} for leads I and II (what ``predict`` feeds
    #: the AF fusion; :func:`export._fusion.device_rhythms`); empty: the fusion analyses the model window
    rhythm: list[dict[str, Any]] = field(default_factory=list)

    def has_leads(self, leads: Sequence[str]) -> bool:
        from kmerl_edge import LEADS

        return bool(len(self.present)) and all(self.present[:, LEADS.index(x)].all() for x in leads)


def bootstrap_macro_auc_ci(
    labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the macro AUC (rows resampled with replacement, ``n_boot`` times,
    seeded); None when fewer than 20 resamples can be scored. Classes without both labels in a resample
    are left out of that resample's macro mean, as in :func:`macro_auc`."""
    from scipy.stats import rankdata

    y = np.asarray(labels) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    rng = np.random.default_rng(seed)
    n = len(y)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yb, sb = y[idx], s[idx]
        per = []
        for c in range(y.shape[1]):
            pos = int(yb[:, c].sum())
            if 0 < pos < n:
                r = rankdata(sb[:, c])
                per.append((r[yb[:, c]].sum() - pos * (pos + 1) / 2) / (pos * (n - pos)))
        if per:
            vals.append(float(np.mean(per)))
    if len(vals) < 20:
        return None
    a = (1.0 - level) / 2.0
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, list[float | None]]:
    """Macro ROC-AUC (sklearn) over the classes with both positives and negatives; per-class AUCs with
    None for a class that cannot be scored. None overall when no class can be scored."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    per: list[float | None] = []
    for c in range(y.shape[1]):
        pos = int(y[:, c].sum())
        per.append(None if pos == 0 or pos == y.shape[0] else float(roc_auc_score(y[:, c], s[:, c])))
    ok = [a for a in per if a is not None]
    return (float(np.mean(ok)) if ok else None), per


# --------------------------------------------------------------------------------------------- loaders
def _pack(rows: Sequence[tuple[np.ndarray, Sequence[str]]], n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    from kmerl_edge import LEADS

    sig = np.zeros((len(rows), len(LEADS), n_samples), dtype=np.float32)
    present = np.zeros((len(rows), len(LEADS)), dtype=bool)
    for i, (w, leads) in enumerate(rows):
        idx = [LEADS.index(x) for x in leads]
        sig[i, idx] = w
        present[i, idx] = True
    return sig, present


def load_ptbxl_tasks(data_root: str | Path, *, fold: int = 10, config: Any = None) -> list[EvalTask]:
    """The superclass and rhythm tasks on the PTB-XL records of ``strat_fold == fold`` (500 Hz)."""
    from kmerl_edge import KmerlError, PreprocessConfig, preprocess, read_record
    from kmerl_edge._labels import DEFAULT_LABEL_SETS, PTBXL_SUPERCLASS_CODES, RHYTHM_SCP_CODES

    cfg = config or PreprocessConfig()
    from trainer.data import read_ptbxl

    root = Path(data_root) / "ptbxl"
    ds = read_ptbxl(root, rate=500, folds=[fold])  # a PhysioNet PTB-XL download (ptbxl_database.csv)
    sup_classes = DEFAULT_LABEL_SETS["ptbxl_superclass"]
    rhy_classes = DEFAULT_LABEL_SETS["rhythm"]
    from export._fusion import device_rhythms

    rows, ids, y_sup, y_rhy, rhythm = [], [], [], [], []
    failed: dict[str, str] = {}
    for item in ds.items:
        rid = str(item.record_id)
        try:
            r = read_record(item.path)
            pre = preprocess(r.signal, fs=r.fs, leads=r.leads, config=cfg)
        except (KmerlError, OSError) as exc:
            failed[rid] = f"{type(exc).__name__}: {exc}"
            continue
        rows.append((pre.windows[0], pre.leads))
        rhythm.append(device_rhythms(r.signal, fs=r.fs, leads=r.leads, window_s=cfg.window_s))
        ids.append(rid)
        sup = {PTBXL_SUPERCLASS_CODES[c] for c in item.meta["superclasses"] if c in PTBXL_SUPERCLASS_CODES}
        rhy = {RHYTHM_SCP_CODES[c] for c in item.meta["scp_codes"] if c in RHYTHM_SCP_CODES}
        y_sup.append([float(c in sup) for c in sup_classes])
        y_rhy.append([float(c in rhy) for c in rhy_classes])
    sig, present = _pack(rows, cfg.window_samples)
    n_sup, n_rhy = len(sup_classes), len(rhy_classes)
    return [
        EvalTask(f"ptbxl_fold{fold}_superclass", "ptbxl_superclass", sup_classes, sig, present,
                 np.asarray(y_sup, np.float32).reshape(-1, n_sup), ids, failed, rhythm),
        EvalTask(f"ptbxl_fold{fold}_rhythm", "rhythm", rhy_classes, sig, present,
                 np.asarray(y_rhy, np.float32).reshape(-1, n_rhy), ids, failed, rhythm),
    ]


def af_episodes(samples: Sequence[int], aux_notes: Sequence[str], sig_len: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of AF from rhythm annotations: an ``(AFIB`` mark opens an episode that
    the next rhythm mark (any note starting with ``(``) or the end of the record closes."""
    marks = sorted((int(s), str(n).strip()) for s, n in zip(samples, aux_notes) if str(n).strip().startswith("("))
    out: list[tuple[int, int]] = []
    start: int | None = None
    for s, note in marks:
        if start is not None:
            out.append((start, s))
            start = None
        if note.startswith("(AFIB"):
            start = s
    if start is not None:
        out.append((start, sig_len))
    return [(a, b) for a, b in out if b > a]


def af_window_labels(
    n_windows: int, window_len: int, episodes: Sequence[tuple[int, int]], *, threshold: float = 0.5
) -> np.ndarray:
    """1.0 for each consecutive window ``[i·window_len, (i+1)·window_len)`` whose fraction inside AF
    episodes is more than ``threshold``, else 0.0."""
    out = np.zeros(n_windows, dtype=np.float32)
    for i in range(n_windows):
        a, b = i * window_len, (i + 1) * window_len
        inside = sum(max(0, min(b, e) - max(a, s)) for s, e in episodes)
        out[i] = float(inside / window_len > threshold)
    return out


def load_cpsc2021_task(
    data_root: str | Path, *, records: Sequence[str] | None = None, config: Any = None
) -> EvalTask:
    """Consecutive 10-s windows of CPSC2021 records (default: all) labelled AF / not AF."""
    import wfdb

    from kmerl_edge import KmerlError, PreprocessConfig, preprocess, read_record

    cfg = config or PreprocessConfig()
    root = Path(data_root) / "cpsc2021"
    names = list(records) if records else sorted(p.stem for p in root.glob("*.hea"))
    if not names:
        raise FileNotFoundError(f"no CPSC2021 records in {root}")
    from export._fusion import device_rhythms

    rows, ids, labels, rhythm = [], [], [], []
    failed: dict[str, str] = {}
    for name in names:
        base = root / name
        if not base.with_suffix(".hea").exists():  # the five extra records live beside it
            base = Path(data_root) / "cpsc2021_extra" / name
        if not base.with_suffix(".hea").exists():
            raise FileNotFoundError(f"CPSC2021 record {name} not found in {root} or cpsc2021_extra")
        rec = read_record(base)
        ann = wfdb.rdann(str(base), "atr")
        n = rec.signal.shape[1]
        win = int(round(cfg.window_s * rec.fs))
        n_win = n // win
        y = af_window_labels(n_win, win, af_episodes(ann.sample, ann.aux_note, n))
        for i in range(n_win):
            seg = rec.signal[:, i * win : (i + 1) * win]
            try:
                pre = preprocess(seg, fs=rec.fs, leads=rec.leads, config=cfg)
            except KmerlError as exc:
                failed[f"{name}#{i}"] = f"{type(exc).__name__}: {exc}"
                continue
            rows.append((pre.windows[0], pre.leads))
            rhythm.append(device_rhythms(seg, fs=rec.fs, leads=rec.leads, window_s=cfg.window_s))
            ids.append(f"{name}#{i}")
            labels.append([y[i]])
    sig, present = _pack(rows, cfg.window_samples)
    return EvalTask("cpsc2021_af", "rhythm", ("atrial fibrillation",), sig, present,
                    np.asarray(labels, np.float32).reshape(-1, 1), ids, failed, rhythm)


# ---------------------------------------------------------------------------------------------- scoring
def _student_scores(clf: Any, task: EvalTask, leads: Sequence[str], batch: int = 32) -> np.ndarray:
    from kmerl_edge import LEADS, lead_ids

    _, index = clf.bundle.all_queries()
    cols = [index.index((task.label_set, c)) if (task.label_set, c) in index else -1 for c in task.classes]
    rows = [LEADS.index(x) for x in leads]
    from kmerl_edge._af_fusion import fusion_rhythm_lead

    lids = lead_ids(leads)
    lead = fusion_rhythm_lead(lids)
    out = []
    for s in range(0, len(task.ids), batch):
        x = np.ascontiguousarray(task.signals[s : s + batch][:, rows])
        rhythm = [r.get(lead) for r in task.rhythm[s : s + batch]] if task.rhythm else None
        out.append(clf.run_windows(x, lids, rhythm=rhythm))
    p = np.concatenate(out) if out else np.zeros((0, len(index)))
    return np.stack([p[:, c] if c >= 0 else np.full(len(p), np.nan) for c in cols], axis=1)


def _score_bundle_model(
    clf: Any, task: EvalTask, subsets: Mapping[str, Sequence[str]], ci: dict[str, Any] | None = None
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for key, leads in subsets.items():
        if not task.has_leads(leads):
            res[key] = "n/a: data lacks leads"
        elif len(leads) > clf.max_leads:
            res[key] = f"n/a: serves ≤ {clf.max_leads} leads"
        else:
            s = _student_scores(clf, task, leads)
            ok = ~np.isnan(s).all(axis=0)
            res[key] = macro_auc(task.labels[:, ok], s[:, ok])[0] if ok.any() else "n/a: class not in bundle"
            if ci is not None and ok.any():
                ci[key] = bootstrap_macro_auc_ci(task.labels[:, ok], s[:, ok])
    return res


def load_with_heldout(
    bundle: str | Path, heldout: str | Path | None, *, threads: int = 1
) -> tuple[Any, dict[str, Any]]:
    """The bundle on torch and its held-out list; :class:`TrainingPatientError` when it has none."""
    import kmerl_edge

    clf = kmerl_edge.load(bundle, backend="torch", threads=threads)
    spec = heldout_spec(clf.bundle, heldout)
    if spec is None:
        raise TrainingPatientError("the bundle has no held-out list (heldout.json): pass --heldout FILE")
    return clf, spec


def heldout_spec(bundle: Any, heldout: str | Path | None = None) -> dict[str, set[str]] | None:
    """The bundle's held-out list (``heldout.json``: test record ids, validation record ids and training
    patients), or the one in ``heldout`` for a bundle that has none; None when neither exists."""
    import json

    path = Path(heldout) if heldout is not None else Path(bundle.path) / "heldout.json"
    if not path.is_file() and heldout is None:
        path = _known_heldout(bundle) or path
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return {"test_records": set(d["test_records"]), "val_records": set(d.get("val_records", ())),
            "train_patients": set(d.get("train_patients", ()))}


#: held-out lists of bundles built before bundles carried their own (matched by the weights' SHA-256)
KNOWN_HELDOUT = Path(__file__).resolve().parent / "heldout"


def _known_heldout(bundle: Any) -> Path | None:
    import json

    art = bundle.artifacts.get("weights.safetensors")
    if art is None:
        return None
    for p in sorted(KNOWN_HELDOUT.glob("*.json")):
        if json.loads(p.read_text()).get("weights_sha256") == art.sha256:
            return p
    return None


class TrainingPatientError(ValueError):
    """An evaluation was asked to score a record of a patient the model was trained on."""


def _heldout_cpsc2021(spec: dict[str, set[str]] | None, requested: Sequence[str] | None) -> list[str] | None:
    if requested is not None:
        if spec is not None:
            bad = [r for r in requested if f"cpsc2021:{r.split('_')[1]}" in spec["train_patients"]]
            if bad:
                raise TrainingPatientError(f"CPSC2021 records {', '.join(bad)} belong to training patients")
        return list(requested)
    if spec is None:
        raise TrainingPatientError(
            "the bundle has no held-out list (heldout.json): pass --heldout FILE or --cpsc2021-records of "
            "patients it was not trained on"
        )
    return sorted({r.split(":", 1)[1] for r in spec["test_records"] if r.startswith("cpsc2021:")})


_TEXT_ENCODERS: dict[str, Any] = {}


def _score_teacher(teacher: Any, task: EvalTask, subsets: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    from trainer.evaluate import EvalData, evaluate_zero_shot
    from trainer.text import load_text_encoder

    data = EvalData(task.name, task.signals, task.present, task.labels, task.classes, task.ids, task.failed)
    usable = {k: v for k, v in subsets.items() if task.has_leads(v)}
    text = _TEXT_ENCODERS.get(teacher.text_encoder)
    if text is None:
        text = _TEXT_ENCODERS[teacher.text_encoder] = load_text_encoder(teacher.text_encoder)
    out = evaluate_zero_shot(teacher.model, text, data, lead_subsets=list(usable.values()), lead_counts=False)
    res: dict[str, Any] = {}
    for key, leads in subsets.items():
        if key not in usable:
            res[key] = "n/a: data lacks leads"
        else:
            res[key] = out["by_subset"][",".join(leads)]["macro_auc"]
    return res


def run_accuracy(
    *,
    bundle: str | Path,
    data_root: str | Path,
    teacher: str | Path | None = None,
    cpsc2021_records: Sequence[str] | None = None,
    subsets: Mapping[str, Sequence[str]] = LEAD_SUBSETS,
    fold: int = 10,
    threads: int = 1,
    heldout: str | Path | None = None,
) -> dict[str, Any]:
    """Macro AUC of teacher / student / int8 on every task and lead subset (see the module docstring),
    with a bootstrap 95 % interval beside every bundle AUC (``auc_ci95``). Only held-out records are
    scored: CPSC2021 records default to the bundle's held-out list and a record of a training patient is
    refused (:class:`TrainingPatientError`)."""
    import kmerl_edge
    from kmerl_edge import BackendUnavailableError

    student = kmerl_edge.load(bundle, backend="torch", threads=threads)
    cfg = student.bundle.preprocess_config
    spec = heldout_spec(student.bundle, heldout)
    cpsc2021_records = _heldout_cpsc2021(spec, cpsc2021_records)
    tasks = load_ptbxl_tasks(data_root, fold=fold, config=cfg)
    if spec is not None:
        held = spec["test_records"] | spec.get("val_records", set())  # fold 9 (val) scores for selection
        leaked = [i for t in tasks for i in t.ids if f"ptbxl:{i}" not in held]
        if leaked:
            raise TrainingPatientError(f"PTB-XL fold {fold} records {leaked[:5]} are not in the held-out list")
    tasks.append(load_cpsc2021_task(data_root, records=cpsc2021_records, config=cfg))
    models: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if teacher is not None:
        from trainer.checkpoint import load_teacher

        models["teacher"] = ("teacher", load_teacher(teacher))
    else:
        skipped["teacher"] = "no teacher checkpoint given (--teacher PATH)"
    models["student (torch fp32)"] = ("bundle", student)
    try:
        models["int8 (onnxruntime-int8)"] = ("bundle", kmerl_edge.load(bundle, backend="onnxruntime-int8", threads=threads))
    except BackendUnavailableError as exc:
        skipped["int8 (onnxruntime-int8)"] = str(exc)
    out_tasks = []
    for task in tasks:
        auc: dict[str, dict[str, Any]] = {}
        cis: dict[str, dict[str, Any]] = {}
        for name, (kind, m) in models.items():
            if kind == "teacher":
                auc[name] = _score_teacher(m, task, subsets)
            else:
                cis[name] = {}
                auc[name] = _score_bundle_model(m, task, subsets, cis[name])
        scored = [c for c, col in zip(task.classes, task.labels.T) if 0 < col.sum() < len(col)]
        out_tasks.append(
            {
                "name": task.name,
                "n": len(task.ids),
                "classes": list(task.classes),
                "classes_scored": scored,
                "positives": {c: int(col.sum()) for c, col in zip(task.classes, task.labels.T)},
                "failed": task.failed,
                "subsets": {k: list(v) for k, v in subsets.items()},
                "auc": auc,
                "auc_ci95": cis,
            }
        )
    return {
        "kind": "accuracy",
        "machine": machine_info(threads),
        "bundle": str(student.bundle.path),
        "bundle_trained": student.bundle.trained,
        "teacher": None if teacher is None else str(teacher),
        "cpsc2021_records": list(cpsc2021_records or ()),
        "heldout_list": "bundle heldout.json" if heldout is None and spec is not None else str(heldout),
        "tasks": out_tasks,
        "skipped_models": skipped,
    }
