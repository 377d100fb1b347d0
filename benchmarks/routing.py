"""Which shipped bundle should score 1–3 leads: the ≤3-lead student or the 12-lead companion?

``kmerl_edge.load()`` routes every piece of a recording (every window of a stream) by the leads that pass
the quality checks: 1–3 usable leads go to the student, 4–12 to the companion. This benchmark measures
that choice on rows neither bundle was trained on (the intersection of both bundles' held-out lists, minus
any patient either one trained on), as deployed (``Classifier.run_windows``: the companion's AF fusion
included), with percentile-bootstrap 95 % intervals (1000 resamples, seeded, resampling whole records:
the Holter windows of one record are not independent) of each AUC and of the paired difference
student − companion:

- AF vs not AF on the first 10-s window of each held-out 12-lead record and every held-out CPSC-2021
  Holter window, leads I and I+II;
- PTB-XL fold 10 superclass macro AUC, leads I, I+II and I+II+V2 (a 12-lead record whose other nine
  leads are off is exactly this input);
- what a switch of bundle does to a stream (a session re-routes when leads go off or come back): on the
  same held-out windows, the absolute change of the AF probability between the two bundles (median, 95th
  percentile) and the share of windows whose AF call at 0.5 differs.

    python -m benchmarks.routing --data ../shared/data --out benchmarks/results/routing.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

AF = ("rhythm", "atrial fibrillation")
SUPER_SETS = {"I": ("I",), "I+II": ("I", "II"), "I+II+V2": ("I", "II", "V2")}
AF_SETS = {"I": ("I",), "I+II": ("I", "II")}


def _paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, groups: list[str], n_boot: int = 1000) -> dict[str, Any]:
    """Macro AUC of scores ``a`` (student) and ``b`` (companion) on labels ``y`` (N, C), with
    record-resampling bootstrap 95 % intervals of each and of ``a − b``."""
    from benchmarks.accuracy import macro_auc

    y2, a2, b2 = y.reshape(len(y), -1) > 0.5, a.reshape(len(a), -1), b.reshape(len(b), -1)
    keys = sorted(set(groups))
    rows = {k: np.flatnonzero(np.asarray(groups) == k) for k in keys}
    rng = np.random.default_rng(0)
    va, vb, vd = [], [], []
    for _ in range(n_boot):
        idx = np.concatenate([rows[keys[i]] for i in rng.integers(0, len(keys), len(keys))])
        ra, rb = macro_auc(y2[idx], a2[idx])[0], macro_auc(y2[idx], b2[idx])[0]
        if ra is not None and rb is not None:
            va.append(ra)
            vb.append(rb)
            vd.append(ra - rb)

    def ci(v: list[float]) -> list[float] | None:
        return [round(float(x), 4) for x in np.quantile(v, [0.025, 0.975])] if len(v) >= 20 else None

    ra, rb = macro_auc(y2, a2)[0], macro_auc(y2, b2)[0]
    return {"student": {"auc": None if ra is None else round(ra, 4), "ci95": ci(va)},
            "companion": {"auc": None if rb is None else round(rb, 4), "ci95": ci(vb)},
            "student_minus_companion_ci95": ci(vd),
            "n": int(len(y2)), "records": len(keys), "positives": int(y2.any(axis=1).sum())}


def run(data: Path) -> dict[str, Any]:
    import kmerl_edge as ke
    from benchmarks.accuracy import _student_scores, heldout_spec, load_ptbxl_tasks
    from export._corpus import build_corpus
    from export._fusion import load_af_windows

    student = ke.load(ke.default_bundle_path(), backend="torch", companion=False)
    comp_path = ke.default_companion_path()
    assert comp_path is not None
    companion = ke.load(comp_path, backend="torch", companion=False)
    specs = [heldout_spec(c.bundle) for c in (student, companion)]
    if any(s is None for s in specs):
        raise SystemExit("both bundles need a held-out list")
    s1, s2 = specs[0], specs[1]
    assert s1 is not None and s2 is not None
    test_ids = s1["test_records"] & s2["test_records"]
    trained = s1["train_patients"] | s2["train_patients"]
    corpus = build_corpus(data)
    recs = [r for r in corpus.records if r.record_id.split("@")[0] in test_ids and r.patient not in trained]
    af = load_af_windows(recs)
    out: dict[str, Any] = {"rows": {"records": len({r.split("@")[0] for r in af.ids}), "windows": len(af.ids),
                                    "af_windows": int(af.af.sum()), "failed": len(af.failed),
                                    "by_source": {s: int((af.source == s).sum()) for s in sorted(set(af.source))}}}
    res_af: dict[str, Any] = {}
    switch: dict[str, Any] = {}
    groups = [r.split("@")[0] for r in af.ids]
    for name, leads in AF_SETS.items():
        rows = [("I", "II").index(x) for x in leads]
        probs = []
        for clf in (student, companion):
            col = clf.bundle.all_queries()[1].index(AF)
            probs.append(np.concatenate([
                clf.run_windows(np.ascontiguousarray(af.windows[a : a + 64][:, rows]), ke.lead_ids(leads),
                                rhythm=af.fusion_rhythm(leads, range(a, min(a + 64, len(af.ids)))))[:, col]
                for a in range(0, len(af.ids), 64)]))
        res_af[name] = _paired(af.af > 0.5, probs[0], probs[1], groups)
        d = np.abs(probs[0] - probs[1])
        switch[name] = {"abs_change_median": round(float(np.median(d)), 4),
                        "abs_change_p95": round(float(np.quantile(d, 0.95)), 4),
                        "af_call_differs": round(float(np.mean((probs[0] >= 0.5) != (probs[1] >= 0.5))), 4)}
    out["af_heldout"] = res_af
    out["switch_af_probability"] = switch
    ptb = [t for t in load_ptbxl_tasks(data, fold=10) if t.label_set == "ptbxl_superclass"][0]
    res_sup: dict[str, Any] = {}
    for name, leads in SUPER_SETS.items():
        res_sup[name] = _paired(ptb.labels, _student_scores(student, ptb, leads),
                                _student_scores(companion, ptb, leads), list(ptb.ids))
    out["ptbxl_fold10_superclass"] = res_sup
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t = time.perf_counter()
    res = run(Path(a.data))
    res["seconds"] = round(time.perf_counter() - t, 1)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
