"""Atrial fibrillation from one or two leads, measured on sources the fusion never saw.

``kmerl-bench accuracy --loso`` adds this part. The data are the AF windows of the whole corpus
(:func:`export._corpus.build_corpus`: first 10-s window of every 12-lead record, every 10-s Holter window),
leads I and II, with source, split and patient per row. For each lead set (I, I+II, II):

- ``bundle``: the probability the bundle reports (its AF fusion when it carries one, else the model's),
  on the held-out rows (the bundle's held-out list) of each source and of all sources together;
- ``model``: the model's own AF probability on the same rows;
- ``loso_fusion``: for each source S, the fusion (model AF logit + rhythm features) refitted on the
  training-split rows of every *other* source and scored on the held-out rows of S — the network saw
  other patients of S, the fusion never saw S;
- ``loso_fusion_unseen``: the fusion refitted on every row of the other sources and scored on every row
  of S whose patient the network never trained on — a device or hospital neither part saw;
- ``loso_rhythm``: rhythm evidence alone (no network), fitted on every row of the other sources and
  scored on *every* row of S — nothing was fitted on S at all, so this is external validation in full.

Every AUC comes with a bootstrap 95 % interval (rows resampled; windows of one Holter patient are not
independent, so the Holter intervals are optimistic) and the numbers of positives and negatives.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_af_loso", "af_loso_markdown", "MIN_PER_CLASS"]

#: an AUC is reported only with at least this many AF and non-AF rows
MIN_PER_CLASS = 3


def _auc_ci(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    from .accuracy import bootstrap_macro_auc_ci, macro_auc

    pos = int((y > 0.5).sum())
    out: dict[str, Any] = {"n": int(len(y)), "positives": pos}
    if min(pos, len(y) - pos) < MIN_PER_CLASS:
        out["auc"] = None
        out["ci95"] = None
        out["note"] = f"fewer than {MIN_PER_CLASS} AF or non-AF rows"
        return out
    out["auc"] = macro_auc(y[:, None], s[:, None])[0]
    ci = bootstrap_macro_auc_ci(y, s)
    out["ci95"] = None if ci is None else [round(ci[0], 4), round(ci[1], 4)]
    return out


def run_af_loso(
    *,
    bundle: str | Path,
    data_root: str | Path,
    threads: int = 1,
    heldout: str | Path | None = None,
    lead_sets: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    from export._corpus import build_corpus
    from export._fusion import AF_LEAD_SETS, af_features, fit_af_fusion, load_af_windows

    from .accuracy import load_with_heldout

    clf, spec = load_with_heldout(bundle, heldout, threads=threads)
    corpus = build_corpus(data_root)
    data = load_af_windows(corpus.records, clf.bundle.preprocess_config)
    test = np.array([i.split("@")[0] in spec["test_records"] and p not in spec["train_patients"]
                     for i, p in zip(data.ids, data.patient)])
    train = np.array([p in spec["train_patients"] for p in data.patient])
    sources = sorted(set(data.source))
    out: dict[str, Any] = {
        "kind": "af_loso",
        "bundle": str(clf.bundle.path),
        "bundle_fusion": clf.af_fusion is not None,
        "rows": {s: {"all": int((data.source == s).sum()), "heldout": int((test & (data.source == s)).sum()),
                     "af": int(data.af[data.source == s].sum()),
                     "heldout_af": int(data.af[test & (data.source == s)].sum())} for s in sources},
        "failed": data.failed,
        "by_lead_set": {},
    }
    for key, leads in (lead_sets or AF_LEAD_SETS).items():
        if len(leads) > clf.max_leads:
            continue
        logit, feats = af_features(clf, data, leads)
        model_p = 1.0 / (1.0 + np.exp(-logit))
        shipped = model_p if clf.af_fusion is None else clf.af_fusion.probability(logit, feats)
        res: dict[str, Any] = {"bundle": {}, "model": {}, "loso_fusion": {}, "loso_fusion_unseen": {},
                               "loso_rhythm_heldout": {}, "loso_rhythm": {}}
        pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
            "loso_fusion": ([], []), "loso_fusion_unseen": ([], []), "loso_rhythm_heldout": ([], []),
            "loso_rhythm": ([], [])}
        for name in [*sources, "all"]:
            m = test if name == "all" else test & (data.source == name)
            res["bundle"][name] = _auc_ci(data.af[m], shipped[m])
            res["model"][name] = _auc_ci(data.af[m], model_p[m])
        for s in sources:
            src = data.source == s
            fit_rows = train & ~src
            if data.af[fit_rows].sum() == 0:
                continue
            fus = fit_af_fusion(logit[fit_rows], feats[fit_rows], data.af[fit_rows])
            fus_all = fit_af_fusion(logit[~src], feats[~src], data.af[~src])
            rhy = fit_af_fusion(logit[~src], feats[~src], data.af[~src], use_model=False)
            m = test & src
            for part, model, rows in (("loso_fusion", fus, m), ("loso_fusion_unseen", fus_all, src & ~train),
                                      ("loso_rhythm_heldout", rhy, m), ("loso_rhythm", rhy, src)):
                p = model.probability(logit[rows], feats[rows])
                res[part][s] = _auc_ci(data.af[rows], p)
                pooled[part][0].append(data.af[rows])
                pooled[part][1].append(p)
        for part, (ys, ps) in pooled.items():
            if ys:
                res[part]["all"] = _auc_ci(np.concatenate(ys), np.concatenate(ps))
        out["by_lead_set"][key] = res
    return out


def af_loso_markdown(report: Mapping[str, Any]) -> str:
    def cell(d: Mapping[str, Any] | None) -> str:
        if not d or d.get("auc") is None:
            return "—"
        ci = d.get("ci95")
        txt = f"{d['auc']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        return f"{txt} ({d['positives']}/{d['n']})"

    lines = ["### AF leave-one-source-out (AUC [bootstrap 95 %] (AF/rows)); the last column pools the rows "
             "(for the leave-one-source-out rows: each scored by the fit that never saw its source)", ""]
    for key, res in report["by_lead_set"].items():
        sources = [s for s in report["rows"]]
        lines += [f"**{key}**", "", "| | " + " | ".join(sources) + " | all held-out |",
                  "| --- |" + " --- |" * (len(sources) + 1)]
        for part, label in (("bundle", "bundle (held-out rows)"), ("model", "model only (held-out rows)"),
                            ("loso_fusion", "fusion refitted without the source (held-out rows)"),
                            ("loso_fusion_unseen", "fusion refitted without the source (rows of patients the "
                             "network never saw)"),
                            ("loso_rhythm_heldout", "rhythm only, fitted without the source (held-out rows)"),
                            ("loso_rhythm", "rhythm only, fitted without the source (all rows)")):
            row = [cell(res[part].get(s)) for s in sources]
            row.append(cell(res[part].get("all")))
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)
