"""The supervised linear superclass head (``export._probe``) against the query network, on PTB-XL fold 9.

For a run directory of ``python -m export.default_model`` trained without fold 9 (``teacher/``,
``shards/``, ``corpus.csv``): fits the head on the run's training split only, then scores fold 9 (the
``val`` records of the run's corpus) per lead set for three candidates through the device graph
(:class:`kmerl_edge._model.DeviceGraph`): ``query`` (no head), ``probe`` (head replaces the superclass
logits) and ``mean`` (mean of both probabilities); plus ``probe_by_count`` (three heads by lead-count group:
1, 2–3, 4–12 leads, scored outside the graph). Bootstrap 95 % intervals and paired differences to ``query``.
It also checks that every non-superclass row of the graph's output is bit-identical with and without the head.

    python -m benchmarks.superclass_probe --run /work/wt/sc4/runs/base --data ../shared/data --out fold9.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GROUPS", "LEAD_SETS", "main", "score_fold9"]

LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12 leads": ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
    "I,II,V2": ("I", "II", "V2"),
    "I": ("I",),
    "6 limb": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "I,II": ("I", "II"),
    "II": ("II",),
}
#: the three lead sets the selection rule scores
RULE_SETS = ("12 leads", "I,II,V2", "I")
#: lead-count groups of the by-count heads
GROUPS: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 12))


def _paired(y: np.ndarray, s: np.ndarray, base: np.ndarray) -> list[float]:
    """Paired bootstrap 95 % interval of macro AUC(s) − macro AUC(base), rounded."""
    from benchmarks.finetune_val import paired_macro_auc_diff_ci

    return [round(v, 4) for v in paired_macro_auc_diff_ci(y, base, s)]


def _row(y: np.ndarray, s: np.ndarray, base: np.ndarray | None, diff_key: str = "diff_vs_query") -> dict[str, Any]:
    from benchmarks._stats import macro_auc_ranks
    from benchmarks.accuracy import bootstrap_macro_auc_ci

    ci = bootstrap_macro_auc_ci(y, s)
    out: dict[str, Any] = {"macro_auc": round(macro_auc_ranks(y, s), 4),
                           "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)]}
    if base is not None:
        out[diff_key] = round(macro_auc_ranks(y, s) - macro_auc_ranks(y, base), 4)
        out["diff_ci95"] = _paired(y, s, base)
    return out


def score_fold9(run: str | Path, threads: int = 1) -> dict[str, Any]:
    import torch

    from export._corpus import read_corpus_csv
    from export._probe import (
        ProbeConfig,
        attach_probe,
        fit_head,
        fit_probe,
        probe_training_windows,
        subset_embeddings,
    )
    from kmerl_edge import lead_ids
    from kmerl_edge._labels import DEFAULT_LABEL_SETS
    from kmerl_edge._model import DeviceGraph
    from trainer.checkpoint import load_teacher
    from trainer.data import Dataset, EcgItem
    from trainer.evaluate import eval_data_from_dataset
    from trainer.text import load_text_encoder

    torch.set_num_threads(threads)
    run = Path(run)
    corpus = read_corpus_csv(run / "corpus.csv")
    sc = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    classes = [c for cs in DEFAULT_LABEL_SETS.values() for c in cs]
    sc_cols = [classes.index(c) for c in sc]
    teacher = load_teacher(run / "teacher")
    model = teacher.model.eval()
    text = load_text_encoder(teacher.text_encoder)
    with torch.no_grad():
        queries = model.project_queries(text.encode(classes).float())
    x, y, ids = probe_training_windows(run / "shards", corpus.records, sc)
    cfg = ProbeConfig()
    head = fit_probe(model, x, y, sc, cfg, ids)
    print("head:", json.dumps(head.meta), flush=True)
    # (b) three heads by lead-count group, same rows
    emb, win, count = subset_embeddings(model, x, cfg)
    by_count = {g: fit_head(emb[(count >= g[0]) & (count <= g[1])], y[win][(count >= g[0]) & (count <= g[1])],
                            win[(count >= g[0]) & (count <= g[1])], sc, cfg) for g in GROUPS}
    del x, emb
    val = [r for r in corpus.records if r.split == "val" and r.source == "ptbxl"]
    items = [EcgItem(record_id=r.record_id, path=r.path, report=r.report, labels=r.labels, start_s=r.start_s,
                     stop_s=r.stop_s, meta={"source": r.source, "patient": r.patient}) for r in val]
    ev = eval_data_from_dataset(Dataset("ptbxl_fold9_val", items, classes=tuple(classes)), classes=classes)
    q_sc = queries[sc_cols]
    graphs = {"query": DeviceGraph(model).eval(),
              "probe": DeviceGraph(attach_probe(model, head, q_sc, "replace")).eval(),
              "mean": DeviceGraph(attach_probe(model, head, q_sc, "mean")).eval()}
    other = [i for i in range(len(classes)) if i not in sc_cols]
    out: dict[str, Any] = {"run": str(run), "head": head.meta, "by_lead_set": {}, "other_rows_identical": True}
    for key, leads in LEAD_SETS.items():
        lid = lead_ids(leads)
        have = ev.present[:, lid].all(axis=1)
        xs = torch.from_numpy(np.ascontiguousarray(ev.signals[have][:, lid], dtype=np.float32))
        yv = ev.labels[have][:, sc_cols] > 0.5
        with torch.no_grad():
            logits = {k: g(xs, torch.from_numpy(lid), queries).numpy() for k, g in graphs.items()}
            pooled = model.encoder(xs, torch.from_numpy(lid))[1].numpy()
        for k in ("probe", "mean"):
            if not np.array_equal(logits[k][:, other], logits["query"][:, other]):
                out["other_rows_identical"] = False
        g = next(g for g in GROUPS if g[0] <= len(leads) <= g[1])
        scores = {k: v[:, sc_cols] for k, v in logits.items()}
        scores["probe_by_count"] = by_count[g].logits(pooled)
        base = scores["query"]
        res: dict[str, Any] = {k: _row(yv, s, None if k == "query" else base) for k, s in scores.items()}
        res["probe_vs_by_count"] = {"diff": round(res["probe_by_count"]["macro_auc"] - res["probe"]["macro_auc"], 4),
                                    "diff_ci95": _paired(yv, scores["probe_by_count"], scores["probe"])}
        res["n"] = int(have.sum())
        out["by_lead_set"][key] = res
        print(key, json.dumps(res), flush=True)
    out["rule"] = apply_rule(out["by_lead_set"])
    print("rule:", json.dumps(out["rule"]), flush=True)
    return out


def apply_rule(by: dict[str, Any]) -> dict[str, Any]:
    """The selection rule of benchmarks/results/superclass_probe/README.md, applied to the fold-9 table."""
    def mean(k: str) -> float:
        return float(np.mean([by[s][k]["macro_auc"] for s in RULE_SETS]))

    def passes(k: str, ref: str) -> bool:
        return (mean(k) - mean(ref) >= 0.010
                and all(by[s][k]["macro_auc"] - by[s][ref]["macro_auc"] >= -0.010 for s in RULE_SETS))

    means = {k: round(mean(k), 4) for k in ("query", "probe", "mean", "probe_by_count")}
    ok = [k for k in ("probe", "mean") if passes(k, "query")]
    if not ok:
        ship = None
    elif len(ok) == 2 and abs(means["mean"] - means["probe"]) < 0.005:
        ship = "probe"
    else:
        ship = max(ok, key=lambda k: means[k])
    return {"mean_scores": means, "passing": ok, "ship": ship,
            "by_count_instead_of_one_head": passes("probe_by_count", "probe")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.superclass_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="export.default_model work dir trained without fold 9")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    res = score_fold9(a.run, a.threads)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
