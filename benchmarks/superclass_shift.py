"""Does the superclass measurement stack still beat the head alone on device-shifted signals? PTB-XL fold 9.

Scores the PTB-XL fold-9 records (validation; the fold the stack was chosen on, so the clean numbers are
in-distribution of that choice — the point is the change under shift) through the public path
(``kmerl_edge.load(bundle)`` then ``Classifier.predict`` at the device rate, so the rhythm analysis and the
stack run as on a device) with the shipped bundles, twice: as shipped (``stack``) and with the stack
switched off (``head``, ``clf.use_superclass_stack(None)`` on a second loaded classifier). Lead sets: I and
I+II+V2 (``default_bundle``), 12 leads (``default_bundle_12``).

Each device-shift family is applied alone to the raw record (mV, 500 Hz, all 12 leads, seeded per
(family, record) so every lead set and both scorers see the same signal), at the upper end of the
exporter's augmentation sizes (:class:`export._augment.AugmentConfig`; ``scale`` is each lead's std):

- ``invert_I``: lead I multiplied by −1 (a handheld device held the other way);
- ``wander``: two sinusoids of 0.05–0.5 Hz, each ``wander_std`` · scale;
- ``mains50``: 50 Hz + 0.3 · 150 Hz, ``mains_std`` · scale;
- ``muscle``: white noise of std ``muscle_std`` · scale;
- ``motion``: two electrode-motion transients per lead (a step of ±``motion_std`` · scale · U(1, 2) that
  relaxes with τ ∈ [0.1, 1] s, at random times);
- ``bandlimit``: a device's causal 0.5–40 Hz Butterworth band-pass (order 2, ``sosfilt``);
- ``fs128`` / ``fs250``: resampled (:func:`kmerl_edge._preprocess.resample_signal`) and scored at 128 / 250 Hz.

Superclass macro AUC with percentile-bootstrap 95 % intervals, and the paired interval of stack − head
(:func:`benchmarks.finetune_val.paired_macro_auc_diff_ci`, the same resampled records; 1,000 resamples).

Fallback candidate, written before any shifted number was seen (evaluated offline from the stored
per-record head/stack scores, a PTB-XL record being one 10-s window): report the head's superclass
probabilities when a scored lead is flagged ``noisy`` by the quality check or the window's rhythm
analysis is not ``"ok"``; otherwise the stack's. It is considered only if some (lead set, shift) has a
stack − head paired interval entirely below 0, and it would ship only if (1) on clean, for every lead set,
AUC(fallback) ≥ AUC(stack) − 0.005; (2) on every such cell the fallback − head paired interval is not
entirely below 0; (3) the mean over all shifted cells of AUC(fallback) − AUC(stack) is ≥ 0.

Second candidate, the polarity guard, written after the first run showed lead I inverted as the one cell
with stack − head below 0 (the quality fallback above does not trigger there) and before the guard was
measured: report the head's superclass probabilities when lead I is scored and its median beat, as the
stack measures it (:func:`kmerl_edge._superclass_stack.stack_measurements` on the model window with the
prediction's window rhythm), has both a negative QRS area and a negative mean T (``qrs_area < 0`` and
``t_mean < 0``: an inverted lead I flips both). Same criteria (1)–(3), the cell ``I|invert_I`` for (2).

    python -m benchmarks.superclass_shift --data ../shared/data \\
        --out benchmarks/results/superclass_probe/fold9_shift.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SHIFTS", "apply_shift", "fallback_rule", "main", "score_shifts"]

LEAD_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "I": ("default_bundle", ("I",)),
    "I,II,V2": ("default_bundle", ("I", "II", "V2")),
    "12 leads": ("default_bundle_12", ("I", "II", "III", "aVR", "aVL", "aVF",
                                       "V1", "V2", "V3", "V4", "V5", "V6")),
}
SHIFTS = ("clean", "invert_I", "wander", "mains50", "muscle", "motion", "bandlimit", "fs128", "fs250")
LABEL_SET = "ptbxl_superclass"


def apply_shift(name: str, x: np.ndarray, fs: float, leads: Sequence[str],
                rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The raw record ``x`` (n_leads, n_samples) in mV at ``fs`` after one device-shift family, and its rate."""
    from export._augment import AugmentConfig
    from kmerl_edge._preprocess import resample_signal

    cfg = AugmentConfig()
    x = np.asarray(x, dtype=np.float64)
    n_leads, s = x.shape
    t = np.arange(s) / fs
    scale = x.std(axis=-1, keepdims=True) + 1e-6
    shape = (n_leads, 1)
    if name == "clean":
        return x.copy(), fs
    if name == "invert_I":
        y = x.copy()
        y[list(leads).index("I")] *= -1.0
        return y, fs
    if name == "wander":
        f = rng.uniform(0.05, 0.5, size=(n_leads, 2, 1))
        ph = rng.uniform(0, 2 * np.pi, size=(n_leads, 2, 1))
        return x + np.sin(2 * np.pi * f * t + ph).sum(axis=1) * cfg.wander_std * scale, fs
    if name == "mains50":
        ph = rng.uniform(0, 2 * np.pi, size=shape)
        m = np.sin(2 * np.pi * 50.0 * t + ph) + 0.3 * np.sin(2 * np.pi * 150.0 * t + ph)
        return x + m * cfg.mains_std * scale, fs
    if name == "muscle":
        return x + rng.normal(0.0, 1.0, size=x.shape) * cfg.muscle_std * scale, fs
    if name == "motion":
        y = x.copy()
        for _ in range(2):
            t0 = rng.uniform(0, t[-1], size=shape)
            tau = rng.uniform(0.1, 1.0, size=shape)
            amp = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(1.0, 2.0, size=shape) * cfg.motion_std
            y = y + np.where(t >= t0, np.exp(-np.clip(t - t0, 0, None) / tau), 0.0) * amp * scale
        return y, fs
    if name == "bandlimit":
        from scipy.signal import butter, sosfilt

        sos = butter(2, [0.5, 40.0], btype="bandpass", fs=fs, output="sos")
        return sosfilt(sos, x, axis=-1), fs
    if name in ("fs128", "fs250"):
        dev = float(name[2:])
        return resample_signal(x, fs_in=fs, fs_out=dev), dev
    raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")


def _load_fold(data: str | Path, fold: int, limit: int | None) -> tuple[list[Any], np.ndarray, list[str]]:
    from kmerl_edge import read_record
    from kmerl_edge._labels import DEFAULT_LABEL_SETS, PTBXL_SUPERCLASS_CODES
    from trainer.data import read_ptbxl

    if fold == 10:
        raise SystemExit("fold 10 is the test fold; this benchmark scores validation fold 9 only")
    ds = read_ptbxl(Path(data) / "ptbxl", rate=500, folds=[fold])
    classes = DEFAULT_LABEL_SETS[LABEL_SET]
    recs, ys, ids = [], [], []
    for item in ds.items[:limit]:
        recs.append(read_record(item.path))
        sup = {PTBXL_SUPERCLASS_CODES[c] for c in item.meta["superclasses"] if c in PTBXL_SUPERCLASS_CODES}
        ys.append([c in sup for c in classes])
        ids.append(str(item.record_id))
    return recs, np.asarray(ys, bool), ids


def _lead_i_polarity(clf: Any, x: np.ndarray, fs: float, leads: Sequence[str], pred: Any) -> list[float] | None:
    """Lead I's (qrs_area, t_mean) as the stack measures them (mean over windows); None without lead I."""
    from kmerl_edge import lead_ids, preprocess
    from kmerl_edge._measure import PER_LEAD
    from kmerl_edge._superclass_stack import stack_measurements

    if "I" not in pred.leads:
        return None
    pre = preprocess(x, fs=fs, leads=leads, config=clf.bundle.preprocess_config)
    keep = [i for i, lead in enumerate(pre.leads) if lead in pred.leads]
    names = [pre.leads[i] for i in keep]
    w = np.asarray(pre.windows)[:, keep]
    rhythm = list(pred.window_rhythm) if len(pred.window_rhythm) == len(w) else None
    per, _ = stack_measurements(w, lead_ids(names), fs=clf.bundle.preprocess_config.target_fs, rhythm=rhythm)
    v = np.nanmean(per[:, 0, [PER_LEAD.index("qrs_area"), PER_LEAD.index("t_mean")]], axis=0)
    return [float(a) for a in v]


def _flags(pred: Any) -> dict[str, Any]:
    wr = list(pred.window_rhythm)
    return {"noisy": any(q.noisy for q in pred.quality.leads if q.lead in pred.leads),
            "rhythm_ok": bool(wr) and all(r.quality == "ok" for r in wr),
            "n_windows": len(pred.window_starts_s)}


def score_shifts(data: str | Path, bundles: str | Path, *, seed: int = 0, limit: int | None = None,
                 shifts: Sequence[str] = SHIFTS, backend: str = "auto",
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Per (lead set, shift): the stack's and the head's per-record superclass probabilities and flags."""
    import kmerl_edge
    from kmerl_edge._labels import DEFAULT_LABEL_SETS

    classes = DEFAULT_LABEL_SETS[LABEL_SET]
    recs, y, ids = _load_fold(data, 9, limit)
    raw: dict[str, Any] = {"classes": list(classes), "ids": ids, "labels": y.astype(int).tolist(), "cells": {}}
    clfs: dict[str, tuple[Any, Any]] = {}
    for b in {b for b, _ in LEAD_SETS.values()}:
        stack = kmerl_edge.load(Path(bundles) / b, backend=backend, threads=1, companion=False)
        head = kmerl_edge.load(Path(bundles) / b, backend=backend, threads=1, companion=False)
        if stack.superclass_stack is None:
            raise SystemExit(f"{b} carries no superclass stack")
        head.use_superclass_stack(None)
        clfs[b] = (stack, head)
    raw["backend"] = {b: c[0].backend_name for b, c in clfs.items()}
    for shift in shifts:
        sigs = []
        for ri, r in enumerate(recs):
            rng = np.random.default_rng([seed, SHIFTS.index(shift), ri])
            sigs.append(apply_shift(shift, r.signal, float(r.fs), list(r.leads), rng))
        for key, (b, leads) in LEAD_SETS.items():
            t0 = time.perf_counter()
            cell: dict[str, list[Any]] = {"stack": [], "head": [], "flags": []}
            for (sig, fs), r in zip(sigs, recs):
                rows = [list(r.leads).index(lead) for lead in leads]
                x = np.ascontiguousarray(sig[rows], dtype=np.float32)
                ps = clfs[b][0].predict(x, fs=fs, leads=leads, label_set=LABEL_SET)
                ph = clfs[b][1].predict(x, fs=fs, leads=leads, label_set=LABEL_SET)
                cell["stack"].append([round(ps.by_label_set[LABEL_SET][c], 5) for c in classes])
                cell["head"].append([round(ph.by_label_set[LABEL_SET][c], 5) for c in classes])
                cell["flags"].append({**_flags(ps), "lead_I_qrs_t": _lead_i_polarity(clfs[b][0], x, fs, leads, ps)})
            raw["cells"][f"{key}|{shift}"] = cell
            log(f"{shift:9s} {key:8s} {time.perf_counter() - t0:6.1f} s")
    return raw


def fallback_rule(stack: np.ndarray, head: np.ndarray, flags: Sequence[dict[str, Any]]) -> np.ndarray:
    """The pre-written fallback: the head where a scored lead is noisy or the window's rhythm is not ok."""
    bad = np.array([f["noisy"] or not f["rhythm_ok"] for f in flags], bool)
    return np.where(bad[:, None], head, stack)


def polarity_guard(stack: np.ndarray, head: np.ndarray, flags: Sequence[dict[str, Any]]) -> np.ndarray:
    """The second candidate: the head where lead I's QRS area and mean T are both negative."""
    bad = np.array([f["lead_I_qrs_t"] is not None and bool(np.all(np.asarray(f["lead_I_qrs_t"]) < 0))
                    for f in flags], bool)
    return np.where(bad[:, None], head, stack)


CANDIDATES: dict[str, Callable[[np.ndarray, np.ndarray, Sequence[dict[str, Any]]], np.ndarray]] = {
    "fallback": fallback_rule, "polarity_guard": polarity_guard}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    from benchmarks._stats import macro_auc_ranks
    from benchmarks.accuracy import bootstrap_macro_auc_ci
    from benchmarks.finetune_val import paired_macro_auc_diff_ci

    y = np.asarray(raw["labels"], bool)

    def r4(v: Sequence[float] | None) -> list[float] | None:
        return None if v is None else [round(float(a), 4) for a in v]

    out: dict[str, Any] = {}
    for name, cell in raw["cells"].items():
        s, h = np.asarray(cell["stack"]), np.asarray(cell["head"])
        row: dict[str, Any] = {}
        scores = {"stack": s, "head": h, **{c: fn(s, h, cell["flags"]) for c, fn in CANDIDATES.items()}}
        for k, v in scores.items():
            row[k] = {"macro_auc": round(macro_auc_ranks(y, v), 4), "ci95": r4(bootstrap_macro_auc_ci(y, v))}
        row["stack_minus_head"] = {"diff": round(row["stack"]["macro_auc"] - row["head"]["macro_auc"], 4),
                                   "ci95": r4(paired_macro_auc_diff_ci(y, h, s))}
        for c in CANDIDATES:
            f = scores[c]
            row[f"{c}_minus_head"] = {"diff": round(row[c]["macro_auc"] - row["head"]["macro_auc"], 4),
                                      "ci95": r4(paired_macro_auc_diff_ci(y, h, f))}
            row[f"{c}_minus_stack"] = {"diff": round(row[c]["macro_auc"] - row["stack"]["macro_auc"], 4),
                                       "ci95": r4(paired_macro_auc_diff_ci(y, s, f))}
            row[f"{c}_share_triggered"] = round(float(np.mean(np.any(f != s, axis=1))), 3)
        fl = cell["flags"]
        row["share_noisy"] = round(float(np.mean([x["noisy"] for x in fl])), 3)
        row["share_rhythm_not_ok"] = round(float(np.mean([not x["rhythm_ok"] for x in fl])), 3)
        out[name] = row
    return out


def decide(summary: dict[str, Any]) -> dict[str, Any]:
    """The pre-written rules (module docstring) applied to :func:`summarise`'s table, per candidate."""
    worse = [k for k, r in summary.items() if r["stack_minus_head"]["ci95"][1] < 0]
    if not worse:
        return {"stack_clearly_worse": [], "candidates": "not considered: no cell has stack − head entirely below 0"}
    out: dict[str, Any] = {"stack_clearly_worse": worse}
    clean = {k: r for k, r in summary.items() if k.endswith("|clean")}
    for c in CANDIDATES:
        c1 = all(r[c]["macro_auc"] >= r["stack"]["macro_auc"] - 0.005 for r in clean.values())
        c2 = all(summary[k][f"{c}_minus_head"]["ci95"][1] >= 0 for k in worse)
        shifted = [r[f"{c}_minus_stack"]["diff"] for k, r in summary.items() if not k.endswith("|clean")]
        c3 = float(np.mean(shifted)) >= 0
        out[c] = {"c1_clean_kept": c1, "c2_worse_cells_fixed": c2,
                  "c3_mean_shift_gain": round(float(np.mean(shifted)), 4), "ships": bool(c1 and c2 and c3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.superclass_shift", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--bundles", default="kmerl_edge", help="folder holding default_bundle and default_bundle_12")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N fold-9 records (smoke test)")
    ap.add_argument("--shifts", default=",".join(SHIFTS))
    ap.add_argument("--out", required=True, help="JSON results file")
    a = ap.parse_args(argv)
    t0 = time.time()
    raw = score_shifts(a.data, a.bundles, seed=a.seed, limit=a.limit, shifts=a.shifts.split(","),
                       backend=a.backend)
    summary = summarise(raw)
    res = {"command": "python -m benchmarks.superclass_shift " + " ".join(argv if argv is not None else
                                                                            __import__("sys").argv[1:]),
           "fold": 9, "n_records": len(raw["ids"]), "seed": a.seed, "backend": raw["backend"],
           "elapsed_s": round(time.time() - t0, 1), "summary": summary, "decision": decide(summary), "raw": raw}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: v for k, v in res.items() if k != "raw"}, indent=1)  # per-record rows compact
    Path(a.out).write_text(text[:-2] + ',\n "raw": ' + json.dumps(raw, separators=(",", ":")) + "\n}\n")
    for k, r in summary.items():
        print(f"{k:22s} stack {r['stack']['macro_auc']:.3f} head {r['head']['macro_auc']:.3f} "
              f"diff {r['stack_minus_head']['diff']:+.3f} {r['stack_minus_head']['ci95']} "
              f"fallback {r['fallback']['macro_auc']:.3f} guard {r['polarity_guard']['macro_auc']:.3f} "
              f"({r['polarity_guard_share_triggered']}) noisy {r['share_noisy']} rhythm_bad {r['share_rhythm_not_ok']}")
    print(json.dumps(res["decision"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
