"""Build the embedded default model from the real ECG in ``../shared/data``, end to end, seeded:

    python -m export.default_model --shared ../shared/data --work runs/default --out kmerl_edge/default_bundle

1. **Data.** :func:`export._corpus.build_corpus`: every source of ``../shared/data`` (PTB-XL, CPSC-2018,
   Georgia, Chapman/Ningbo, CPSC-2018 extra, PTB and the CPSC-2021 Holter windows), deduplicated by
   recording and split by patient into ``train`` / ``val`` / ``test``. Training: the ``train`` split with a
   report (PTB-XL folds 1–8 with English reports composed from the SCP statements, the CinC records with
   their SNOMED diagnoses as text, CPSC-2018 labels as text, Holter windows with their rhythm annotation;
   about 2,500 recordings). Validation: PTB-XL fold 9 — never trained on; every choice of recipe is made
   on it (its AUCs are in the metrics as ``ptbxl_fold9_val_superclass``). Test: PTB-XL fold 10 and the
   held-out CPSC-2021 patients (8, 35, 66, 101) — scored for the final model, never used to choose.
2. **Knowledge.** The lexicon backend of :mod:`trainer.knowledge` turns every report into entities; the
   superclass step adds the five PTB-XL superclass names ("normal ECG", "myocardial infarction", …) as
   entities, as the paper's superclass aggregation does.
3. **Teacher.** :func:`trainer.train.train` (lead and segment masking, contrastive + query BCE). With
   ``--lead-mask-choices`` the 12-lead records keep from 1 up to all 12 leads in training, so that the
   model has seen the many-lead inputs it serves.
   *Optional* (``--finetune-steps N``, off by default): :mod:`export._finetune` then trains the network end
   to end on the ground-truth PTB-XL superclass labels of the training split, 1–12 random leads per step,
   with a consistency term that keeps every other query's logit (AF, the rhythm classes) at the trained
   network's value; the metrics keep the trained network's numbers as ``teacher`` and add ``finetuned``.
   *Optional* (``--superclass-probe``, off by default): :mod:`export._probe` fits a linear superclass head
   (logistic regression on the frozen encoder's mean-pooled tokens, the linear-probe protocol) on the
   training split's PTB-XL records and puts it in the exported graph, where it scores the
   ``ptbxl_superclass`` rows and leaves every other row (AF, rhythm) as it was.
4. **Student.** :func:`export.export_bundle` distils into a student serving at most ``--max-leads`` leads
   (or keeps the trained weights with ``--distill-steps 0``) and lowers it to ONNX fp32 / int8 and
   ExecuTorch fp32 / int8, parity-checked.
5. **Evaluation.** Zero-shot macro AUC on PTB-XL fold 9 (val) and fold 10 (test) (12 leads, I+II+V2,
   I+II, I, II) for the teacher, the student and the int8 student; AF-vs-rest AUC on the held-out
   CPSC-2021 windows with lead I and lead II. The numbers go into the manifest and the model card.

It runs on a 2-core CPU within a developer session. It is a demonstration of the whole chain on a small
public training set, not a clinical model.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._config import PROBE_MODES
from kmerl_edge._labels import DEFAULT_LABEL_SETS, PTBXL_SUPERCLASS_CODES

__all__ = ["build_default_model", "default_datasets", "evaluate_classifier", "main"]

#: The superclass aggregation: knowledge superclass id → the class name the query head learns.
SUPERCLASS_NAMES = dict(PTBXL_SUPERCLASS_CODES)
EVAL_SUBSETS: tuple[tuple[str, ...], ...] = (
    tuple(("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")),
    ("I", "II", "V2"),
    ("I", "II"),
    ("I",),
    ("II",),
)


def default_datasets(shared: Path, corpus_config: Any = None) -> dict[str, Any]:
    """The training dataset (items with reports, the corpus's ``train`` split), the validation dataset
    (``ptbxl_fold9_val``: the ``val`` split, PTB-XL fold 9) and the test datasets (the ``test`` split), items
    with class labels, plus the :class:`export._corpus.Corpus` itself."""
    from export._corpus import AF, build_corpus
    from trainer.data import Dataset, EcgItem

    corpus = build_corpus(shared, corpus_config)
    classes = tuple(c for cs in DEFAULT_LABEL_SETS.values() for c in cs)

    def item(r: Any) -> Any:
        return EcgItem(record_id=r.record_id, path=r.path, report=r.report, labels=r.labels,
                       start_s=r.start_s, stop_s=r.stop_s, meta={"source": r.source, "patient": r.patient})

    train = [item(r) for r in corpus.records if r.split == "train" and r.report]
    ptb_val = [item(r) for r in corpus.records if r.split == "val" and r.source == "ptbxl"]
    ptb_test = [item(r) for r in corpus.records if r.split == "test" and r.source == "ptbxl"]
    holter_test = [item(r) for r in corpus.records if r.split == "test" and r.source == "cpsc2021"]
    return {
        "corpus": corpus,
        "train": Dataset("kmerl-default-train", train),
        "ptbxl_fold9_val": Dataset("ptbxl_fold9_val", ptb_val, classes=classes),
        "ptbxl_fold10": Dataset("ptbxl_fold10", ptb_test, classes=classes),
        "cpsc2021_heldout": Dataset("cpsc2021_heldout", holter_test, classes=(AF,)),
    }


def _superclasses(item: Any, shared: Path) -> list[str]:
    from trainer.data import _scp_statements  # the official SCP → diagnostic class table

    table = _scp_statements(shared / "ptbxl")
    out = []
    for code in dict(item.meta["scp_codes"]):
        st = table.get(code) if hasattr(table, "get") else None
        cls = getattr(st, "diagnostic_class", None) if st is not None else None
        if cls in SUPERCLASS_NAMES and SUPERCLASS_NAMES[cls] not in out:
            out.append(SUPERCLASS_NAMES[cls])
    return out


def build_labels(train: Any, work: Path) -> Any:
    """Lexicon entities for every training report plus superclass-name columns (superclass aggregation)."""
    import scipy.sparse as sp

    from trainer.knowledge import extract_knowledge, load_knowledge
    from trainer.labels import LabelMatrix

    ids = [it.record_id for it in train.items]
    out = extract_knowledge([it.report for it in train.items], ids, out_dir=work / "knowledge", progress=False)
    k = load_knowledge(out)
    vocab = list(k.vocabulary)
    dense = np.asarray(k.label_matrix.todense(), dtype=np.float32)
    extra = [n for n in SUPERCLASS_NAMES.values() if n not in vocab]
    cols = {n: i for i, n in enumerate(vocab + extra)}
    y = np.concatenate([dense, np.zeros((dense.shape[0], len(extra)), np.float32)], axis=1)
    for sc, members in k.superclasses.items():
        name = SUPERCLASS_NAMES.get(sc)
        if name is None:
            continue
        member_cols = [vocab.index(m) for m in members if m in vocab]
        if member_cols:
            y[:, cols[name]] = np.maximum(y[:, cols[name]], dense[:, member_cols].max(axis=1))
    return LabelMatrix(tuple(vocab + extra), sp.csr_matrix(y), tuple(str(r) for r in k.record_ids)), k


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def evaluate_classifier(
    score_fn: Any, data: Any, classes: Sequence[str], subsets: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Macro AUC of ``score_fn(windows (n, L, 5000), lead_ids (L,)) -> probs (n, len(classes))`` on an
    :class:`trainer.evaluate.EvalData` for each lead subset (records lacking a lead of the subset are
    left out and counted)."""
    from kmerl_edge import LEADS, lead_ids

    col = [data.classes.index(c) for c in classes]
    y = data.labels[:, col]
    out: dict[str, Any] = {}
    for leads in subsets:
        ids = lead_ids(leads)
        have = data.present[:, ids].all(axis=1)
        x = np.ascontiguousarray(data.signals[have][:, ids])
        probs = score_fn(x, ids) if len(x) else np.zeros((0, len(classes)))
        per = {c: _auc(y[have, i], probs[:, i]) for i, c in enumerate(classes)}
        vals = [v for v in per.values() if v is not None]
        out[",".join(leads) if len(leads) < len(LEADS) else "12 leads"] = {
            "macro_auc": float(np.mean(vals)) if vals else None,
            "per_class_auc": per,
            "n": int(have.sum()),
        }
    return out


def build_default_model(
    shared: Path,
    work: Path,
    out: Path,
    *,
    seed: int = 0,
    teacher_model: str = "kmerl-vit-tiny",
    epochs: int = 30,
    batch_size: int = 32,
    distill_steps: int = 1500,
    student: str = "kmerl-student-s",
    bce_weight: float = 1.0,
    tie_tolerance: float = 0.02,
    calibration_windows: int = 256,
    qdq_for_tensorrt: bool = True,
    teacher_leads: str = "all",
    max_leads: int = 12,
    augment: bool = True,
    distill_lr: float = 2e-3,
    backends: Sequence[str] | None = None,
    command: str = "",
    lead_mask_choices: Sequence[int] | None = None,
    lead_count_per: str = "sample",
    ptbxl_val_folds: Sequence[int] = (9,),
    finetune: Any = None,
    superclass_probe: Any = None,
    superclass_stack: bool = False,
) -> Path:
    """Train, export and evaluate the default model (see the module docstring). ``lead_mask_choices``: the
    numbers of leads a 12-lead training record may have masked, drawn uniformly per sample (``None``: the
    trainer's default, 9–11, i.e. 1–3 leads kept); ``lead_count_per``: ``sample`` or ``batch`` (one draw
    per batch: many-lead batches without padding the others, see :class:`trainer._config.MaskingConfig`);
    ``ptbxl_val_folds``: the PTB-XL folds kept out of training for validation (empty: they train too, as
    the bundles shipped before the validation split did); ``finetune``: an :class:`export._finetune.FinetuneConfig`
    (None or ``steps=0``: no fine-tuning stage); ``superclass_probe``: an :class:`export._probe.ProbeConfig`
    (None: no head) — a linear superclass head fitted on the run's training split, in both bundles alike;
    ``superclass_stack``: then also the measurement stack on the head (``export._stack``, needs the head)."""
    if superclass_stack and superclass_probe is None:
        from kmerl_edge._errors import ConfigError

        raise ConfigError("--superclass-stack stacks the superclass head's logits: it needs --superclass-probe")
    import torch

    from kmerl_edge._config import get_config
    from kmerl_edge._errors import ConfigError
    from trainer._config import get_preset
    from trainer.checkpoint import load_teacher
    from trainer.evaluate import eval_data_from_dataset
    from trainer.shards import prepare_shards
    from trainer.text import load_text_encoder
    from trainer.train import train as train_teacher

    if distill_steps == 0 and {**get_config(student).to_dict(), "name": ""} != {
            **get_config(teacher_model).to_dict(), "name": ""}:
        raise ConfigError(f"--distill-steps 0 keeps the trained weights, so the student must share the teacher's "
                          f"architecture: pass --student {teacher_model} (got {student})")  # before training, not after
    from trainer._config import MaskingConfig

    masking: dict[str, Any] = {"lead_count_per": lead_count_per}
    if lead_mask_choices is not None:
        masking["mask_lead_choices"] = tuple(int(c) for c in lead_mask_choices)
    MaskingConfig(**masking)  # a bad value fails here, before the data are read
    from export._corpus import CorpusConfig

    try:
        corpus_config = CorpusConfig(ptbxl_val_folds=tuple(ptbxl_val_folds))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    torch.manual_seed(seed)  # the trainer and exporter seed their own generators from `seed`
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    ds = default_datasets(shared, corpus_config)
    train = ds["train"]
    from export._corpus import write_corpus_csv

    write_corpus_csv(ds["corpus"], work / "corpus.csv")
    print(f"[1/5] data: {len(train)} training items; val: {len(ds['ptbxl_fold9_val'])} PTB-XL fold 9; "
          f"test: {len(ds['ptbxl_fold10'])} PTB-XL fold 10, "
          f"{len(ds['cpsc2021_heldout'])} held-out CPSC-2021 windows; by source: "
          f"{json.dumps(ds['corpus'].summary())}; duplicates dropped: {ds['corpus'].duplicates}", flush=True)
    labels, knowledge = build_labels(train, work)
    print(f"[2/5] knowledge: {len(labels.entities)} entities "
          f"({labels.matrix.sum() / max(len(train), 1):.1f} per record)", flush=True)
    shards = prepare_shards(train, work / "shards", workers=2, progress=False)
    cfg = get_preset("cpu-small").override(
        model=teacher_model, epochs=epochs, batch_size=batch_size, seed=seed, lr=5e-4,
        warmup_steps=50, ckpt_every=100000, log_every=20, loss={"bce_weight": bce_weight},
    )
    cfg = cfg.override(masking=masking)
    run = work / "teacher"
    res = train_teacher(cfg, data=shards, out_dir=run, labels=labels, device="auto", progress=False,
                        resume=(run / "train_config.json").exists())
    print(f"[3/5] teacher: {res}", flush=True)
    teacher = load_teacher(run)
    text = load_text_encoder(teacher.text_encoder)
    classes = [c for cs in DEFAULT_LABEL_SETS.values() for c in cs]
    ptb_eval = eval_data_from_dataset(ds["ptbxl_fold10"], classes=classes)
    val_eval = eval_data_from_dataset(ds["ptbxl_fold9_val"], classes=classes) if len(ds["ptbxl_fold9_val"]) else None
    af_eval = eval_data_from_dataset(ds["cpsc2021_heldout"], classes=["atrial fibrillation"])
    emb = text.encode(classes)

    def teacher_scores(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = teacher.model.project_queries(emb.float())
            logits = teacher.model(torch.from_numpy(x), torch.from_numpy(ids), q)
        return torch.sigmoid(logits).numpy()

    metrics: dict[str, Any] = {"teacher": _evaluate(teacher_scores, ptb_eval, af_eval, classes, val=val_eval)}
    metrics["class_status"] = seen_classes(text, classes, list(labels.entities))
    print("[3/5] teacher zero-shot:", json.dumps(_headline(metrics["teacher"])), flush=True)
    if finetune is not None and finetune.steps > 0:
        from export._finetune import finetune_af_labels, finetune_model, finetune_windows

        x_ft, y_ft, lab_ft = finetune_windows(work / "shards", ds["corpus"].records,
                                              list(DEFAULT_LABEL_SETS[finetune.label_set]))
        af_ft, af_lab_ft = finetune_af_labels(work / "shards", ds["corpus"].records,
                                              DEFAULT_LABEL_SETS[finetune.af_label_set])
        texts = {ls: text.encode(list(cs)).float() for ls, cs in DEFAULT_LABEL_SETS.items()}
        ft = finetune_model(teacher.model, texts, x_ft, y_ft, lab_ft, finetune, af_ft, af_lab_ft)
        del x_ft
        metrics["finetuned"] = _evaluate(teacher_scores, ptb_eval, af_eval, classes, val=val_eval)
        metrics["finetune"] = {"config": finetune.to_dict(), "labelled_windows": ft.labelled,
                               "windows": ft.windows, "seconds": round(ft.seconds, 1), "history": ft.history}
        print(f"[3/5] fine-tuned ({finetune.steps} steps, {ft.seconds:.0f} s):",
              json.dumps(_headline(metrics["finetuned"])), flush=True)
    from export import ExportConfig, export_bundle
    from export._augment import AugmentConfig

    lead_sets = tuple(s for s in (("I",), ("I", "II"), ("I", "II", "V2"), EVAL_SUBSETS[0]) if len(s) <= max_leads)
    ecfg = ExportConfig(student=student, max_leads=max_leads, seed=seed)
    if backends is not None:
        ecfg = replace(ecfg, backends=tuple(backends))
    ecfg = replace(ecfg, parity=replace(ecfg.parity, lead_sets=lead_sets))
    # Parity on every held-out fold-10 window; int8 top-class flips between reference logits closer than
    # `tie_tolerance` are ties (the strict figure is recorded next to it in the manifest).
    ecfg = replace(ecfg, distill=replace(ecfg.distill, steps=distill_steps, teacher_leads=teacher_leads, lr=distill_lr,
                                                 augment=AugmentConfig() if augment else None),
                   parity=replace(ecfg.parity, max_windows=0, top1_tie_tolerance=tie_tolerance),
                   calibration_windows=calibration_windows, qdq_for_tensorrt=qdq_for_tensorrt)
    distil_data = _distillation_windows(shards, ptb_eval)
    probe_data = None
    if superclass_probe is not None:
        from export._probe import ProbeData, probe_training_windows

        sc_classes = tuple(DEFAULT_LABEL_SETS[superclass_probe.label_set])
        x_pr, y_pr, ids_pr = probe_training_windows(work / "shards", ds["corpus"].records, sc_classes)
        probe_data = ProbeData(x_pr, y_pr, sc_classes, tuple(ids_pr), superclass_probe)
    bundle = export_bundle(teacher, out, ecfg, data=distil_data, text_encoder=text, overwrite=True,
                           superclass_probe=probe_data)
    del probe_data
    print(f"[4/5] bundle: {bundle}", flush=True)
    import kmerl_edge

    for backend in ("torch", "onnxruntime-int8"):
        clf = kmerl_edge.load(bundle, backend=backend)
        _, index = clf.bundle.all_queries()
        pick = [index.index((ls, c)) for c in classes for ls in DEFAULT_LABEL_SETS if (ls, c) in index]

        def scores(x: np.ndarray, ids: np.ndarray, clf: Any = clf, pick: list[int] = pick) -> np.ndarray:
            return clf.run_windows(x, ids)[:, pick]

        key = "student" if backend == "torch" else "student_int8"
        metrics[key] = _evaluate(scores, ptb_eval, af_eval, classes, max_leads=max_leads, val=val_eval)
        print(f"[5/5] {key} zero-shot:", json.dumps(_headline(metrics[key])), flush=True)
    metrics["training"] = {
        "train_items": len(train),
        "entities": len(labels.entities),
        "teacher_model": teacher_model,
        "epochs": epochs,
        "batch_size": batch_size,
        "bce_weight": bce_weight,
        "distill_steps": distill_steps,
        "distill_teacher_leads": teacher_leads,
        "max_leads": max_leads,
        "lead_mask_choices": list(cfg.masking.mask_lead_choices),
        "lead_count_per": cfg.masking.lead_count_per,
        "augment": augment,
        "distill_lr": distill_lr,
        "finetune_steps": finetune.steps if finetune is not None else 0,
        "superclass_probe": superclass_probe.to_dict() if superclass_probe is not None else None,
        "corpus": ds["corpus"].summary(),
        "duplicates_dropped": ds["corpus"].duplicates,
        "int8_top1_tie_tolerance": tie_tolerance,
        "calibration_windows": calibration_windows,
        "student": student,
        "seed": seed,
        "wall_s": round(time.time() - t0, 1),
        "command": command or "python -m export.default_model",
    }
    from kmerl_edge._bundle import add_artifacts

    _write_heldout(bundle, ds["corpus"])
    from export._fusion import add_af_fusion

    metrics["af_fusion"] = add_af_fusion(bundle, shared)
    print(f"[5/5] AF fusion: {json.dumps(metrics['af_fusion'])}", flush=True)
    if superclass_stack:
        from export._stack import add_superclass_stack

        stack = add_superclass_stack(bundle, shared)
        metrics["superclass_stack"] = {k: v for k, v in stack.items() if k != "per_class"}
        print(f"superclass stack: {json.dumps(metrics['superclass_stack'])}", flush=True)
    add_artifacts(bundle, {}, metrics={"default_model": metrics})
    (work / "default_model_metrics.json").write_text(json.dumps(metrics, indent=2))
    return bundle


#: a deployed class whose text embedding is this similar to a training query is "seen" (the paper's rule)
SEEN_SIMILARITY = 0.95


def seen_classes(text: Any, classes: Sequence[str], training_queries: Sequence[str]) -> dict[str, Any]:
    """Per deployed class: ``seen`` (supervised: a training query's text embedding has cosine similarity
    > :data:`SEEN_SIMILARITY` with the class name's) or zero-shot, with the nearest training query."""
    import torch

    with torch.no_grad():
        a = torch.nn.functional.normalize(text.encode(list(classes)).float(), dim=-1)
        b = torch.nn.functional.normalize(text.encode(list(training_queries)).float(), dim=-1)
    sim = (a @ b.T).numpy()
    out = {}
    for i, c in enumerate(classes):
        j = int(sim[i].argmax())
        out[c] = {"seen": bool(sim[i, j] > SEEN_SIMILARITY), "nearest_training_query": training_queries[j],
                  "similarity": round(float(sim[i, j]), 4)}
    return out


def _write_heldout(bundle: Path, corpus: Any) -> None:
    """The bundle's held-out list (``heldout.json``, hashed in the manifest): every test-split record, every
    validation record (``val_records``) and every patient of the training split, so an evaluation can refuse
    to score a training patient."""
    from kmerl_edge._bundle import add_artifacts

    test = sorted({r.record_id.split("@")[0] for r in corpus.records if r.split == "test"})
    val = sorted({r.record_id.split("@")[0] for r in corpus.records if r.split == "val"})
    train_patients = sorted({r.patient for r in corpus.records if r.split == "train"})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "heldout.json"
        p.write_text(json.dumps({"test_records": test, "val_records": val, "train_patients": train_patients,
                                 "note": "record ids as source:name; CPSC-2021 windows share their record's id"}))
        add_artifacts(bundle, {"heldout.json": (p, {"kind": "data", "backend": "none", "precision": "none"})})


def _evaluate(fn: Any, ptb: Any, af: Any, classes: list[str], max_leads: int = 12,
              val: Any = None) -> dict[str, Any]:
    """Superclass macro AUC on PTB-XL fold 10 (test) and, with ``val``, fold 9 (validation); AF AUC on the
    held-out CPSC-2021 windows."""
    subsets = [s for s in EVAL_SUBSETS if len(s) <= max_leads]
    superclass = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    idx = [classes.index(c) for c in superclass]

    def sc(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return fn(x, ids)[:, idx]

    af_idx = classes.index("atrial fibrillation")

    def af_fn(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return fn(x, ids)[:, [af_idx]]

    out = {
        "ptbxl_fold10_superclass": evaluate_classifier(sc, ptb, superclass, subsets),
        "cpsc2021_af": evaluate_classifier(af_fn, af, ["atrial fibrillation"], [("I",), ("II",)]),
    }
    if val is not None and len(val.labels):
        out["ptbxl_fold9_val_superclass"] = evaluate_classifier(sc, val, superclass, subsets)
    return out


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: round(v["macro_auc"], 3) if v["macro_auc"] is not None else None
           for k, v in m["ptbxl_fold10_superclass"].items()}
    out.update({f"AF {k}": round(v["macro_auc"], 3) for k, v in m["cpsc2021_af"].items() if v["macro_auc"]})
    out.update({f"val {k}": round(v["macro_auc"], 3) if v["macro_auc"] is not None else None
                for k, v in m.get("ptbxl_fold9_val_superclass", {}).items()})
    return out


def _distillation_windows(shards: Path, ptb_eval: Any) -> Any:
    """Distillation data for :func:`export.export_bundle`: every training window (fold 0) and, as the
    exporter's AUC fold 10, the held-out PTB-XL fold 10 windows with their superclass labels."""
    from export import EcgWindows
    from trainer.shards import open_shards

    store = open_shards(shards)
    train = np.asarray(store.batch(list(range(len(store)))), dtype=np.float32)
    superclass = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    y_ev = ptb_eval.labels[:, [ptb_eval.classes.index(c) for c in superclass]]
    return EcgWindows(
        windows=np.concatenate([train, ptb_eval.signals.astype(np.float32)]),
        labels=np.concatenate([np.zeros((len(train), len(superclass)), np.float32), y_ev]),
        classes=tuple(superclass),
        label_set="ptbxl_superclass",
        folds=np.concatenate([np.zeros(len(train), np.int64), np.full(len(y_ev), 10, np.int64)]),
        ids=tuple(store.record_ids) + tuple(ptb_eval.record_ids),
        source="default-model training windows + PTB-XL fold 10",
    )


def _int_list(text: str | None, flag: str = "--lead-mask-choices") -> list[int] | None:
    from kmerl_edge._errors import ConfigError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.default_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("runs/default"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "kmerl_edge" / "default_bundle")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-model", default="kmerl-vit-tiny")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--distill-steps", type=int, default=1500)
    ap.add_argument("--student", default="kmerl-student-s")
    ap.add_argument("--bce-weight", type=float, default=1.0, help="weight of the cardiac-query BCE loss")
    ap.add_argument("--top1-tie-tolerance", type=float, default=0.02,
                    help="int8 parity: logit margin under which reference top classes count as tied")
    ap.add_argument("--calibration-windows", type=int, default=256)
    ap.add_argument("--teacher-leads", choices=("all", "same"), default="all",
                    help="distillation targets from the teacher on all the window's leads or the student's")
    ap.add_argument("--no-qdq", action="store_true", help="skip the int8 QDQ ONNX for TensorRT")
    ap.add_argument("--max-leads", type=int, default=12, help="most leads the student serves (1-12)")
    ap.add_argument("--distill-lr", type=float, default=2e-3, help="distillation learning rate")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core CPU two threads ran 3-4x slower)")
    ap.add_argument("--lead-mask-choices", default=None,
                    help="comma-separated numbers of leads a 12-lead training record may have masked, drawn "
                         "uniformly per sample, e.g. 0,3,6,9,10,10,11,11 (default: the trainer's 9,10,11: "
                         "1-3 leads kept)")
    ap.add_argument("--lead-count-per", choices=("sample", "batch"), default="sample",
                    help="draw the masked-lead count per sample (default) or once per batch (many-lead choices "
                         "then cost far less compute)")
    ap.add_argument("--no-augment", action="store_true", help="distil without device-shift augmentation")
    ap.add_argument("--ptbxl-val-folds", default="9",
                    help="comma-separated PTB-XL folds kept out of training for validation, or 'none' (they "
                         "train too: how the shipped bundles were built, before the validation split)")
    ap.add_argument("--finetune-steps", type=int, default=0,
                    help="supervised fine-tuning steps on the training split's PTB-XL superclass labels after "
                         "training (export._finetune; default 0: off)")
    ap.add_argument("--finetune-lr", type=float, default=1e-4, help="fine-tuning learning rate")
    ap.add_argument("--finetune-consistency", type=float, default=1.0,
                    help="weight of the fine-tuning term that keeps the other queries' logits")
    ap.add_argument("--finetune-af-label-weight", type=float, default=0.0,
                    help="fine-tuning BCE weight on the AF query against the training split's AF labels (default 0: off)")
    ap.add_argument("--finetune-af-consistency", type=float, default=0.0,
                    help="extra fine-tuning weight anchoring the AF logit to the trained network (default 0: off)")
    ap.add_argument("--finetune-one-lead-share", type=float, default=0.0,
                    help="share of fine-tuning steps forced to one lead (default 0)")
    ap.add_argument("--finetune-augment", action="store_true",
                    help="fine-tune on device-shift-augmented windows (export._augment)")
    ap.add_argument("--superclass-probe", action="store_true",
                    help="score the PTB-XL superclasses with a supervised linear head on the frozen encoder's "
                         "mean-pooled tokens, fitted on the training split (export._probe; default: off)")
    ap.add_argument("--superclass-probe-mode", choices=PROBE_MODES, default="replace",
                    help="the head's logit (replace) or the mean of its and the query network's probabilities")
    ap.add_argument("--superclass-stack", action="store_true",
                    help="stack the head's logits with classical ECG measurements (export._stack; needs "
                         "--superclass-probe; default: off)")
    ap.add_argument("--backends", default=None, help="comma-separated artifacts (default: all the exporter knows)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    import shlex
    import sys

    args = sys.argv[1:] if argv is None else argv
    command = "python -m export.default_model " + " ".join(shlex.quote(x) for x in args)
    from kmerl_edge._errors import KmerlError

    try:
        from export._augment import AugmentConfig
        from export._finetune import FinetuneConfig
        from export._probe import ProbeConfig

        probe = ProbeConfig(mode=a.superclass_probe_mode, seed=a.seed) if a.superclass_probe else None

        finetune = FinetuneConfig(steps=a.finetune_steps, lr=a.finetune_lr, consistency_weight=a.finetune_consistency,
                                  augment=AugmentConfig() if a.finetune_augment else None, seed=a.seed,
                                  af_label_weight=a.finetune_af_label_weight,
                                  af_index=list(DEFAULT_LABEL_SETS["rhythm"]).index("atrial fibrillation"),
                                  af_consistency_weight=a.finetune_af_consistency,
                                  one_lead_share=a.finetune_one_lead_share)
        build_default_model(a.shared, a.work, a.out, seed=a.seed, teacher_model=a.teacher_model, epochs=a.epochs,
                            batch_size=a.batch_size, distill_steps=a.distill_steps, student=a.student,
                            bce_weight=a.bce_weight, tie_tolerance=a.top1_tie_tolerance,
                            calibration_windows=a.calibration_windows, qdq_for_tensorrt=not a.no_qdq,
                            teacher_leads=a.teacher_leads, max_leads=a.max_leads, augment=not a.no_augment,
                            distill_lr=a.distill_lr,
                            lead_mask_choices=_int_list(a.lead_mask_choices), lead_count_per=a.lead_count_per,
                            ptbxl_val_folds=() if a.ptbxl_val_folds.strip().lower() == "none"
                            else tuple(_int_list(a.ptbxl_val_folds, "--ptbxl-val-folds") or ()),
                            backends=a.backends.split(",") if a.backends else None, command=command,
                            finetune=finetune, superclass_probe=probe, superclass_stack=a.superclass_stack)
    except KmerlError as exc:
        print(f"python -m export.default_model: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
