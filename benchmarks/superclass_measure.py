"""Classical ECG measurements (``kmerl_edge._measure``) stacked on the linear superclass head, on PTB-XL fold 9.

For a run directory of ``python -m export.default_model`` trained without fold 9 (``teacher/``,
``shards/``, ``corpus.csv``): fits the head (``export._probe``, ``ProbeConfig()``) on the run's training
split, cross-fits its logits (5 folds grouped by record, each class at the C the full head chose), measures
every training (window, lead subset) row — the head's own rows — and fits per superclass a logistic
regression on [the five head logits, the present leads' standardised measurements (absent leads 0) + a
presence mask, the window measurements]; then scores fold 9 (the run's ``val`` PTB-XL records) per lead
set: ``head`` (the head alone, as shipped), ``stack_mv`` (measurements in mV of the band-passed window)
and ``stack_z`` (the same on the z-scored model window). Bootstrap 95 % intervals, paired differences to
``head``. The selection rule is in benchmarks/results/superclass_probe/README.md.

    python -m benchmarks.superclass_measure --run /work/wt/sc4/runs/cand5 --out fold9_measure_cand5.json
    python -m benchmarks.superclass_measure --rule fold9_measure_cand5.json fold9_measure_base.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.superclass_probe import LEAD_SETS, _paired, _row

__all__ = ["CANDIDATES", "StackFeatures", "apply_rule", "main", "score_fold9"]

CANDIDATES = ("stack_mv", "stack_z")
#: the rule's lead sets: (run key, lead set)
RULE = (("cand5", "12 leads"), ("base", "I,II,V2"), ("base", "I"))
_CLIP = 6.0


def band_windows(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(band-passed mV windows (N, 12, S) at the model rate, z-scored windows (N, 12, S)) of the first
    10-s window of each record (canonical lead order; absent leads zero rows)."""
    from kmerl_edge._io import read_record
    from kmerl_edge._leads import LEADS
    from kmerl_edge._preprocess import PreprocessConfig, _model_band, normalize_window

    cfg = PreprocessConfig()
    s = cfg.window_samples
    mv = np.zeros((len(paths), 12, s), np.float32)
    z = np.zeros((len(paths), 12, s), np.float32)
    for k, p in enumerate(paths):
        r = read_record(p)
        y = _model_band(np.asarray(r.signal, np.float64), r.fs, cfg)[:, :s].astype(np.float32)
        rows = [LEADS.index(name) for name in r.leads]
        mv[k, rows, : y.shape[1]] = y
        z[k, rows, : y.shape[1]] = normalize_window(y, config=cfg)
    return mv, z


class StackFeatures:
    """Measurements of (window, lead subset) rows, beats cached per (window, rhythm lead)."""

    def __init__(self, mv: np.ndarray, z: np.ndarray, fs: float) -> None:
        self.mv, self.z, self.fs = mv, z, fs
        self.scale = np.maximum(mv.std(axis=-1), 1e-6)  # (N, 12): the z-score's divisor
        self._beats: dict[tuple[int, str], tuple[int, ...]] = {}
        self.seconds = {"analyse": 0.0, "measure": 0.0}

    def beats(self, w: int, lead: str) -> tuple[int, ...]:
        from kmerl_edge._leads import LEADS
        from kmerl_edge.rhythm import analyse

        key = (w, lead)
        if key not in self._beats:
            t = time.perf_counter()
            r = analyse(self.z[w, LEADS.index(lead)], fs=self.fs, lead=lead)
            self._beats[key] = r.r_peaks if r.usable else ()
            self.seconds["analyse"] += time.perf_counter() - t
        return self._beats[key]

    def rows(self, win: np.ndarray, lids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(per-lead mV (R, 12, 8) NaN where absent, per-lead z (R, 12, 8), window measurements (R, 6))."""
        from kmerl_edge._leads import LEADS
        from kmerl_edge._measure import GLOBAL, PER_LEAD, measure_window
        from kmerl_edge.rhythm import choose_rhythm_lead

        per_mv = np.full((len(win), 12, len(PER_LEAD)), np.nan)
        per_z = np.full_like(per_mv, np.nan)
        glob = np.zeros((len(win), len(GLOBAL)))
        for k, (w, lid) in enumerate(zip(win, lids)):
            names = [LEADS[i] for i in lid]
            peaks = self.beats(int(w), choose_rhythm_lead(names))
            t = time.perf_counter()
            per, g = measure_window(self.mv[w, lid], names, peaks, fs=self.fs)
            self.seconds["measure"] += time.perf_counter() - t
            per_mv[k, lid] = per
            per_z[k, lid] = per / self.scale[w, lid][:, None]
            glob[k] = g
        return per_mv, per_z, glob


class Standardiser:
    """Training-row statistics; absent / unmeasured → 0 after standardisation, clipped to ±6."""

    def __init__(self, per: np.ndarray, glob: np.ndarray, logits: np.ndarray) -> None:
        self.pm, self.ps = np.nanmean(per, axis=0), np.nanstd(per, axis=0)
        self.ps = np.where(np.isfinite(self.ps) & (self.ps > 1e-9), self.ps, 1.0)
        self.pm = np.where(np.isfinite(self.pm), self.pm, 0.0)
        self.gm, self.gs = np.nanmean(glob, axis=0), np.nanstd(glob, axis=0)
        self.gs = np.where(np.isfinite(self.gs) & (self.gs > 1e-9), self.gs, 1.0)
        self.gm = np.where(np.isfinite(self.gm), self.gm, 0.0)
        self.lm, self.ls = logits.mean(axis=0), np.maximum(logits.std(axis=0), 1e-6)

    def __call__(self, per: np.ndarray, glob: np.ndarray, logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
        p = np.clip(np.nan_to_num((per - self.pm) / self.ps, nan=0.0), -_CLIP, _CLIP).reshape(len(per), -1)
        g = np.clip(np.nan_to_num((glob - self.gm) / self.gs, nan=0.0), -_CLIP, _CLIP)
        return np.concatenate([(logits - self.lm) / self.ls, p, mask.astype(np.float64), g], axis=1)


def _fit_stack(f: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> list[Any]:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    splits = list(GroupKFold(n_splits=folds).split(f, y[:, 0], groups))
    cs = np.logspace(-3, 2, 8)
    return [LogisticRegressionCV(Cs=cs, cv=splits, scoring="roc_auc", max_iter=3000).fit(f, y[:, j] > 0.5)
            for j in range(y.shape[1])]


def score_fold9(run: str | Path, threads: int = 1, limit: int | None = None) -> dict[str, Any]:
    import torch

    from export._corpus import read_corpus_csv
    from export._probe import ProbeConfig, fit_head, probe_training_windows, subset_embeddings, subset_rows
    from export._stack import crossfit_head_logits
    from kmerl_edge import lead_ids
    from kmerl_edge._labels import DEFAULT_LABEL_SETS
    from kmerl_edge._measure import GLOBAL, PER_LEAD
    from trainer.checkpoint import load_teacher

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run = Path(run)
    corpus = read_corpus_csv(run / "corpus.csv")
    by_id = {r.record_id: r for r in corpus.records}
    sc = list(DEFAULT_LABEL_SETS["ptbxl_superclass"])
    model = load_teacher(run / "teacher").model.eval()
    cfg = ProbeConfig()
    x, y, ids = probe_training_windows(run / "shards", corpus.records, sc)
    if limit:  # a smoke test of the code path, not a result
        x, y, ids = x[:limit], y[:limit], ids[:limit]
    emb, win, count = subset_embeddings(model, x, cfg)
    rwin, rlids = subset_rows(x, cfg)
    if not (np.array_equal(rwin, win) and np.array_equal([len(v) for v in rlids], count)):
        raise RuntimeError("row bookkeeping differs from export._probe.subset_embeddings")
    head = fit_head(emb, y[win], win, sc, cfg)
    print(f"head fitted ({time.perf_counter() - t0:.0f} s):", json.dumps(head.meta["per_class"]), flush=True)
    oof = crossfit_head_logits(emb, y[win], win, [head.meta["per_class"][c]["C"] for c in sc], cfg.cv_folds)
    del emb
    mv, z = band_windows([by_id[i].path for i in ids])
    gone = np.abs(x.astype(np.float32)).max(axis=-1) == 0  # leads the shard builder dropped (flat, saturated)
    mv[gone], z[gone] = 0.0, 0.0
    # the shard windows are the z-scored windows of the same records (float16 in the store)
    zdiff = float(np.abs(z - x.astype(np.float32)).max())
    feats = StackFeatures(mv, z, 500.0)
    per_mv, per_z, glob = feats.rows(win, rlids)
    mask = np.zeros((len(win), 12), bool)
    for k, lid in enumerate(rlids):
        mask[k, lid] = True
    print(f"training rows measured ({time.perf_counter() - t0:.0f} s): {len(win)} rows, "
          f"measured {glob[:, 0].mean():.3f}, {feats.seconds}", flush=True)
    yr = y[win]
    stacks: dict[str, tuple[Any, list[Any]]] = {}
    for cand, per in (("stack_mv", per_mv), ("stack_z", per_z)):
        st = Standardiser(per, glob, oof)
        stacks[cand] = (st, _fit_stack(st(per, glob, oof, mask), yr, win, cfg.cv_folds))
        print(cand, "C:", [float(m.C_[0]) for m in stacks[cand][1]], f"({time.perf_counter() - t0:.0f} s)",
              flush=True)
    del x, mv, z
    val = [r for r in corpus.records if r.split == "val" and r.source == "ptbxl"][: limit or None]
    vmv, vz = band_windows([r.path for r in val])
    yv_all = np.asarray([[c in r.labels for c in sc] for r in val])
    vfeats = StackFeatures(vmv, vz, 500.0)
    out: dict[str, Any] = {"run": str(run), "n_train_windows": int(len(ids)), "n_train_rows": int(len(win)),
                           "shard_vs_recomputed_z_max_abs": round(zdiff, 4),
                           "train_measured_share": round(float(glob[:, 0].mean()), 4),
                           "head_C": {c: head.meta["per_class"][c]["C"] for c in sc},
                           "stack_C": {k: [float(m.C_[0]) for m in v[1]] for k, v in stacks.items()},
                           "features": {"per_lead": list(PER_LEAD), "global": list(GLOBAL)},
                           "by_lead_set": {}}
    for key, leads in LEAD_SETS.items():
        lid = lead_ids(leads)
        xs = torch.from_numpy(np.ascontiguousarray(vz[:, lid]))
        with torch.no_grad():
            pooled = model.encoder(xs, torch.from_numpy(lid))[1].numpy()
        logits = head.logits(pooled)
        n = len(val)
        vwin = np.arange(n)
        pmv, pz, g = vfeats.rows(vwin, [np.asarray(lid)] * n)
        m = np.zeros((n, 12), bool)
        m[:, lid] = True
        scores = {"head": logits}
        for cand, per in (("stack_mv", pmv), ("stack_z", pz)):
            st, models = stacks[cand]
            f = st(per, g, logits, m)
            scores[cand] = np.stack([mdl.decision_function(f) for mdl in models], axis=1)
        res: dict[str, Any] = {k: _row(yv_all, s, None if k == "head" else scores["head"], "diff_vs_head") for k, s in scores.items()}
        res["n"] = n
        res["measured_share"] = round(float(g[:, 0].mean()), 4)
        out["by_lead_set"][key] = res
        print(key, json.dumps(res), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def apply_rule(cand5: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The selection rule of benchmarks/results/superclass_probe/README.md on the two fold-9 results."""
    runs = {"cand5": cand5, "base": base}
    res: dict[str, Any] = {}
    for c in CANDIDATES:
        gains = [runs[r]["by_lead_set"][s][c]["diff_vs_head"] for r, s in RULE]
        mean = float(np.mean(gains))
        res[c] = {"gains": dict(zip([f"{r}:{s}" for r, s in RULE], gains)), "mean_gain": round(mean, 4),
                  "passes": bool(mean >= 0.010 and min(gains) >= -0.010)}
    ok = [c for c in CANDIDATES if res[c]["passes"]]
    if not ok:
        ship = None
    elif len(ok) == 2 and abs(res["stack_mv"]["mean_gain"] - res["stack_z"]["mean_gain"]) < 0.005:
        ship = "stack_z"
    else:
        ship = max(ok, key=lambda c: res[c]["mean_gain"])
    return {"candidates": res, "ship": ship}


def paired_fold10(old: str | Path, new: str | Path, data: str | Path) -> dict[str, Any]:
    """Paired bootstrap interval of fold-10 superclass macro AUC, bundles in ``new`` minus those in ``old``
    (folders holding ``default_bundle`` and ``default_bundle_12``), torch fp32, the windows and beats of
    ``kmerl-bench accuracy``. A report of the shipped choice, never an input to it."""
    import kmerl_edge
    from benchmarks._stats import macro_auc_ranks
    from benchmarks.accuracy import _student_scores, load_ptbxl_tasks

    task = load_ptbxl_tasks(data)[0]
    sets = {"12 leads": "default_bundle_12", "6 limb": "default_bundle_12", "I,II,V2": "default_bundle",
            "I,II": "default_bundle", "I": "default_bundle", "II": "default_bundle"}
    out: dict[str, Any] = {"n": len(task.ids)}
    for key, b in sets.items():
        sc = {side: _student_scores(kmerl_edge.load(Path(root) / b, backend="torch", companion=False), task,
                                    LEAD_SETS[key]) for side, root in (("old", old), ("new", new))}
        y = task.labels > 0.5
        out[key] = {"old": round(macro_auc_ranks(y, sc["old"]), 4), "new": round(macro_auc_ranks(y, sc["new"]), 4),
                    "diff_ci95": _paired(y, sc["new"], sc["old"])}
        print(key, json.dumps(out[key]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.superclass_measure", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="export.default_model work dir trained without fold 9")
    ap.add_argument("--out", help="JSON results file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="first N training and validation records (smoke test)")
    ap.add_argument("--fold10-paired", nargs=2, metavar=("OLD_DIR", "NEW_DIR"),
                    help="report: paired fold-10 interval of the bundles in NEW_DIR minus those in OLD_DIR")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--rule", nargs=2, metavar=("CAND5_JSON", "BASE_JSON"),
                    help="apply the selection rule to the two runs' results and print it")
    a = ap.parse_args(argv)
    if a.fold10_paired:
        res = paired_fold10(a.fold10_paired[0], a.fold10_paired[1], a.data)
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=2))
        return 0
    if a.rule:
        r = apply_rule(json.loads(Path(a.rule[0]).read_text()), json.loads(Path(a.rule[1]).read_text()))
        print(json.dumps(r, indent=2))
        return 0
    if not a.run or not a.out:
        ap.error("--run and --out are required (or --rule)")
    res = score_fold9(a.run, a.threads, a.limit)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
