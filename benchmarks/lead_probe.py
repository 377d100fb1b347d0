"""Why can more leads score worse? A diagnosis on the PTB-XL validation fold (9), per lead set.

For a trained model (a trainer run directory or checkpoint) and each lead set (12 leads, 6 limb leads,
I+II+V2, I+II, I):

- ``query``: superclass macro AUC of the cardiac query network (the model's own zero-shot scores);
- ``probe``: a logistic regression on the frozen encoder's mean-pooled tokens, fitted on the PTB-XL
  training folds (1–8) with the same lead set (regularisation chosen by 5-fold cross-validation on those
  folds) and scored on fold 9 — what the representation holds, read out linearly;
- ``single_lead_mean``: the mean of the query network's logits over one pass per lead of the set — the
  many-lead input split into the one-lead inputs the default recipe mostly trains on.

Fold 10 (test) is not read. Bootstrap 95 % intervals beside every AUC.

    python -m benchmarks.lead_probe --teacher runs/v3s/teacher --data ../shared/data --out probe.json

With ``--compare RUN`` it scores a second model's query network on fold 9 instead and reports, per lead set,
both macro AUCs and the paired bootstrap interval of their difference (``RUN`` minus ``--teacher``; the
same resampled records for both).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LEAD_SETS", "compare_on_val", "main", "probe_lead_sets"]

LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12 leads": ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
    "6 limb": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "I,II,V2": ("I", "II", "V2"),
    "I,II": ("I", "II"),
    "I": ("I",),
}


def _load(shared: Path, cache: Path | None) -> dict[str, Any]:
    from export.default_model import default_datasets
    from kmerl_edge._labels import DEFAULT_LABEL_SETS
    from trainer.data import Dataset
    from trainer.evaluate import eval_data_from_dataset

    classes = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files} | {"classes": classes}
    ds = default_datasets(shared)
    train = Dataset("ptbxl_folds1_8", [it for it in ds["train"].items if it.meta["source"] == "ptbxl"],
                    classes=tuple(classes))
    tr = eval_data_from_dataset(train, classes=classes)
    va = eval_data_from_dataset(ds["ptbxl_fold9_val"], classes=classes)
    out = {"x_train": tr.signals.astype(np.float16), "p_train": tr.present, "y_train": tr.labels,
           "x_val": va.signals.astype(np.float16), "p_val": va.present, "y_val": va.labels}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, **out)  # type: ignore[arg-type]
        tmp.replace(cache)
    return out | {"classes": classes}


def _passes(model: Any, queries: Any, x: np.ndarray, ids: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(pooled embeddings (N, width), query logits (N, Q)) for windows ``x`` (N, L, 5000) of leads ``ids``."""
    import torch

    pooled, logits = [], []
    lid = torch.from_numpy(ids)
    with torch.no_grad():
        for a in range(0, len(x), batch):
            sig = torch.from_numpy(np.ascontiguousarray(x[a:a + batch], dtype=np.float32))
            tokens, pool, mask = model.encoder(sig, lid)
            pooled.append(pool.numpy())
            logits.append(model.query_head(queries, tokens, mask).numpy())
    return np.concatenate(pooled), np.concatenate(logits)


def _macro(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from benchmarks.accuracy import bootstrap_macro_auc_ci

    ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    auc = float(np.mean([roc_auc_score(y[:, j], s[:, j]) for j in ok]))
    ci = bootstrap_macro_auc_ci(y[:, ok], s[:, ok])
    return {"macro_auc": round(auc, 4), "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
            "n": int(len(y))}


def probe_lead_sets(teacher_path: str | Path, shared: str | Path, *, cache: str | Path | None = None,
                    lead_sets: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from kmerl_edge import lead_ids
    from trainer.checkpoint import load_teacher
    from trainer.text import load_text_encoder

    d = _load(Path(shared), Path(cache) if cache else None)
    teacher = load_teacher(teacher_path)
    model = teacher.model.eval()
    text = load_text_encoder(teacher.text_encoder)
    with torch.no_grad():
        queries = model.project_queries(text.encode(d["classes"]).float())
    out: dict[str, Any] = {"teacher": str(teacher_path), "classes": d["classes"], "by_lead_set": {}}
    for key, leads in (lead_sets or LEAD_SETS).items():
        ids = lead_ids(leads)
        tr = d["p_train"][:, ids].all(axis=1)
        va = d["p_val"][:, ids].all(axis=1)
        xtr, xva = d["x_train"][tr][:, ids], d["x_val"][va][:, ids]
        ytr, yva = d["y_train"][tr], d["y_val"][va]
        emb_tr, _ = _passes(model, queries, xtr, ids)
        emb_va, logit_va = _passes(model, queries, xva, ids)
        probe = np.zeros_like(yva)
        for j in range(ytr.shape[1]):
            clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=5, max_iter=2000,
                                                                         scoring="roc_auc"))
            clf.fit(emb_tr, ytr[:, j])
            probe[:, j] = clf.predict_proba(emb_va)[:, 1]
        res = {"query": _macro(yva, logit_va), "probe": _macro(yva, probe), "n_train": int(tr.sum())}
        if len(ids) > 1:
            single = np.mean([_passes(model, queries, xva[:, [i]], ids[[i]])[1] for i in range(len(ids))], axis=0)
            res["single_lead_mean"] = _macro(yva, single)
        out["by_lead_set"][key] = res
        print(key, json.dumps(res), flush=True)
    return out


def _macro_auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, j], s[:, j]) for j in ok]))


def compare_on_val(base: str | Path, other: str | Path, shared: str | Path, *, cache: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Query-network macro AUC of two models on fold 9 per lead set, with the paired bootstrap 95 % interval
    of ``other - base``."""
    import torch

    from kmerl_edge import lead_ids
    from trainer.checkpoint import load_teacher
    from trainer.text import load_text_encoder

    d = _load(Path(shared), Path(cache) if cache else None)
    scored = []
    for path in (base, other):
        t = load_teacher(path)
        text = load_text_encoder(t.text_encoder)
        with torch.no_grad():
            q = t.model.eval().project_queries(text.encode(d["classes"]).float())
        scored.append((t.model, q))
    rng = np.random.default_rng(seed)
    y = d["y_val"]
    out: dict[str, Any] = {"base": str(base), "other": str(other), "by_lead_set": {}}
    for key, leads in LEAD_SETS.items():
        ids = lead_ids(leads)
        m = d["p_val"][:, ids].all(axis=1)
        x = d["x_val"][m][:, ids]
        s = [_passes(model, q, x, ids)[1] for model, q in scored]
        ym = y[m]
        diffs = []
        for _ in range(n_boot):
            i = rng.integers(0, len(ym), len(ym))
            if any(ym[i, j].min() == ym[i, j].max() for j in range(ym.shape[1]) if 0 < ym[:, j].sum() < len(ym)):
                continue
            diffs.append(_macro_auc(ym[i], s[1][i]) - _macro_auc(ym[i], s[0][i]))
        a, b = _macro_auc(ym, s[0]), _macro_auc(ym, s[1])
        res = {"base": round(a, 4), "other": round(b, 4), "diff": round(b - a, 4),
               "diff_ci95": [round(float(np.percentile(diffs, 2.5)), 4), round(float(np.percentile(diffs, 97.5)), 4)],
               "n": int(m.sum())}
        out["by_lead_set"][key] = res
        print(key, json.dumps(res), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lead_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="trainer run directory or checkpoint")
    ap.add_argument("--data", default="../shared/data", help="the shared data folder")
    ap.add_argument("--cache", default=None, help="npz cache of the preprocessed folds 1-8 and 9 windows")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--compare", default=None, help="a second run: paired comparison of the query networks")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    res = (compare_on_val(a.teacher, a.compare, a.data, cache=a.cache) if a.compare
           else probe_lead_sets(a.teacher, a.data, cache=a.cache))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
