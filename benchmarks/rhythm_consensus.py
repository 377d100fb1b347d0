"""Beat labels from 12-lead consensus, for choosing the R-peak detector's constants on training data.

``python -m benchmarks.rhythm_consensus label DATA LABELS.json`` labels the PTB-XL training records
(strat_fold 1–8 only; folds 9–10 are never read): every detector of :data:`benchmarks.rhythm.DETECTORS`
(the runtime's ``detect_beats``, ``wfdb.processing.xqrs_detect``, NeuroKit2) runs on every lead; the
detections of all lead × detector voters are clustered within ±``tol_s`` (:func:`consensus_beats`) and a
cluster supported by at least ``majority`` of the voters is a beat. A record whose consensus is
ambiguous (more than ``max_middling`` clusters with support between ``middling`` and ``majority``, away
from the record's edges) is dropped and counted.

``python -m benchmarks.rhythm_consensus measure DATA LABELS.json OUT.json`` scores the runtime detector
on every single lead of the kept records against the consensus (150 ms, as ``kmerl-bench rhythm``;
the first and last 0.5 s are not scored, as on CPSC-2019), on the leads as recorded and on seeded
augmented copies (``export.beat_verifier.augment``: baseline steps, spikes, EMG, electrode motion,
drop-outs, gain changes, inversion, resampling), with the error kinds of
:func:`benchmarks.rhythm.error_kinds`.

``python -m benchmarks.rhythm_consensus grid DATA LABELS.json OUT.json`` evaluates the stated grid of
:data:`GRID` by the selection rule of ``benchmarks/results/rhythm/README.md`` (PTB-XL consensus
signals, CPSC-2021 training patients, MIT-BIH 100; nothing else is read).

The labels include the runtime detector's own votes (one detector of three): they lean towards it
where the leads disagree, so they are a conservative yardstick for changing it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge.rhythm import DetectorConfig, detect_beats

from .rhythm import _Rec as _Sig  # a signal and its reference beats

__all__ = [
    "ConsensusConfig",
    "Consensus",
    "consensus_beats",
    "training_records",
    "label_records",
    "measure",
    "GRID",
    "run_grid",
]

EDGE_S = 0.5
TRAIN_FOLDS = frozenset(range(1, 9))


@dataclass(frozen=True)
class ConsensusConfig:
    """``tol_s``: detections of one beat lie within ± this of the cluster's centre detection;
    ``majority``: a beat has at least this share of the voters; ``middling``: clusters with a share in
    [middling, majority) are ambiguous; a record with more than ``max_middling`` of them (outside the
    first and last ``edge_s``) or with fewer than ``min_beats`` beats is dropped."""

    tol_s: float = 0.075
    majority: float = 2.0 / 3.0
    middling: float = 1.0 / 3.0
    max_middling: int = 1
    min_beats: int = 4
    edge_s: float = EDGE_S


@dataclass
class Consensus:
    beats: np.ndarray  # consensus beat positions (median of the cluster's detections), samples
    support: np.ndarray  # share of voters per consensus beat
    middling: int  # ambiguous clusters away from the edges
    kept: bool
    reason: str = ""
    clusters: list[tuple[int, float]] = field(default_factory=list)  # every cluster: (position, share)


def consensus_beats(
    detections: Sequence[np.ndarray], fs: float, n: int, config: ConsensusConfig | None = None
) -> Consensus:
    """Cluster the detections of several voters (one array of sample positions per voter).

    Greedy: the detection with the most voters within ±``tol_s`` of it (ties: the earliest) is a
    cluster's centre; each voter contributes its detection nearest the centre within ±``tol_s``;
    those detections are removed and the next centre is sought. The cluster's position is the median
    of its detections; its support the share of all voters in it."""
    cfg = config or ConsensusConfig()
    n_voters = len(detections)
    if n_voters == 0:
        raise ValueError("consensus needs at least one voter")
    tol = cfg.tol_s * fs
    pos = np.concatenate([np.asarray(d, dtype=np.int64).ravel() for d in detections]) if detections else np.zeros(0, np.int64)
    who = np.concatenate([np.full(np.asarray(d).size, v, dtype=np.int64) for v, d in enumerate(detections)])
    order = np.argsort(pos, kind="stable")
    pos, who = pos[order], who[order]
    alive = np.ones(pos.size, dtype=bool)
    clusters: list[tuple[int, float]] = []
    while alive.any():
        idx = np.flatnonzero(alive)
        p, w = pos[idx], who[idx]
        # voters within ±tol of each live detection (distinct voters)
        near = np.abs(p[:, None] - p[None, :]) <= tol
        votes = np.array([np.unique(w[row]).size for row in near])
        c = int(np.argmax(votes))  # first maximum: the earliest
        members = []
        for v in np.unique(w[near[c]]):
            cand = np.flatnonzero(near[c] & (w == v))
            members.append(cand[np.argmin(np.abs(p[cand] - p[c]))])
        m = np.asarray(members)
        clusters.append((int(np.round(np.median(p[m]))), len(members) / n_voters))
        alive[idx[m]] = False
    clusters.sort()
    beats = np.array([c for c, s in clusters if s >= cfg.majority], dtype=np.int64)
    support = np.array([s for c, s in clusters if s >= cfg.majority], dtype=np.float64)
    edge = cfg.edge_s * fs
    middling = sum(1 for c, s in clusters if cfg.middling <= s < cfg.majority and edge <= c < n - edge)
    reason = ""
    if middling > cfg.max_middling:
        reason = f"{middling} ambiguous clusters"
    elif beats.size < cfg.min_beats:
        reason = f"{beats.size} consensus beats"
    return Consensus(beats, support, middling, not reason, reason, clusters)


# ----------------------------------------------------------------------------------------------- data
def training_records(data: Path, *, n250: int = 350, seed: int = 0) -> list[tuple[str, Path, float]]:
    """PTB-XL training records (strat_fold 1–8): every 500-Hz record of ``ptbxl/records500`` in
    ``ptbxl_500_index.csv`` and a seeded random subset of ``n250`` records of
    ``ptbxl_folds1_8/records250``. (name, WFDB path without suffix, fs)."""
    import csv

    out: list[tuple[str, Path, float]] = []
    with open(data / "ptbxl" / "ptbxl_500_index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if int(row["strat_fold"]) in TRAIN_FOLDS:
                out.append((f"ptbxl500/{row['ecg_id']}", data / "ptbxl" / row["filename_hr"], 500.0))
    rows = []
    with open(data / "ptbxl_folds1_8" / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if int(row["strat_fold"]) in TRAIN_FOLDS:
                rows.append(row)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(rows), size=min(n250, len(rows)), replace=False).tolist())
    for i in pick:
        row = rows[i]
        out.append((f"ptbxl250/{row['ecg_id']}", data / "ptbxl_folds1_8" / row["record"], 250.0))
    return out


def _read(path: Path) -> tuple[np.ndarray, float, list[str]]:
    import wfdb

    rec = wfdb.rdrecord(str(path))
    x = np.nan_to_num(np.asarray(rec.p_signal, dtype=np.float64))
    return x, float(rec.fs), list(rec.sig_name)


def label_record(
    x: np.ndarray, fs: float, detectors: Sequence[str] = ("kmerl", "xqrs", "neurokit2"), config: ConsensusConfig | None = None
) -> Consensus:
    """Consensus of ``detectors`` over every lead (column) of ``x``."""
    from .rhythm import DETECTORS

    votes = []
    for lead in range(x.shape[1]):
        for name in detectors:
            try:
                d = DETECTORS[name](np.ascontiguousarray(x[:, lead]), fs)
            except Exception:  # noqa: BLE001 - a reference detector that fails on a lead votes for nothing
                d = np.zeros(0, dtype=np.int64)
            votes.append(np.asarray(d, dtype=np.int64))
    return consensus_beats(votes, fs, x.shape[0], config)


def label_records(data: Path, out: Path, *, n250: int = 350, seed: int = 0, config: ConsensusConfig | None = None) -> dict[str, Any]:
    """Label :func:`training_records` and write the labels (JSON) to ``out``."""
    import time

    cfg = config or ConsensusConfig()
    recs = training_records(data, n250=n250, seed=seed)
    res: dict[str, Any] = {"config": asdict(cfg), "n250": n250, "seed": seed, "records": {}}
    t0 = time.time()
    for k, (name, path, _) in enumerate(recs):
        x, fs, leads = _read(path)
        c = label_record(x, fs, config=cfg)
        res["records"][name] = {
            "path": str(path),
            "fs": fs,
            "leads": leads,
            "n": int(x.shape[0]),
            "beats": c.beats.tolist(),
            "support": [round(float(s), 4) for s in c.support],
            "middling": c.middling,
            "kept": c.kept,
            "reason": c.reason,
        }
        if k % 50 == 0:
            print(f"{k}/{len(recs)} {time.time() - t0:.0f} s", flush=True)
    kept = [r for r in res["records"].values() if r["kept"]]
    res["summary"] = {
        "records": len(recs),
        "kept": len(kept),
        "dropped": len(recs) - len(kept),
        "beats": int(sum(len(r["beats"]) for r in kept)),
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(res) + "\n")
    tmp.replace(out)
    return res


# ----------------------------------------------------------------------------------------------- scoring
def training_signals(labels: dict[str, Any], *, copies: int = 1, seed: int = 0) -> tuple[list[_Sig], list[_Sig]]:
    """Every lead of every kept record against its consensus beats, and ``copies`` augmented copies
    of each (seeded)."""
    from export.beat_verifier import augment

    clean, aug = [], []
    rng = np.random.default_rng(seed)
    for name, r in labels["records"].items():
        if not r["kept"]:
            continue
        x, fs, leads = _read(Path(r["path"]))
        ref = np.asarray(r["beats"], dtype=np.int64)
        for i, lead in enumerate(leads):
            clean.append(_Sig(f"{name}/{lead}", x[:, i].copy(), fs, ref))
            for c in range(copies):
                xa, fa, ra = augment(x[:, i], fs, ref, rng)
                aug.append(_Sig(f"{name}/{lead}/aug{c}", xa, fa, ra))
    return clean, aug


def score(sigs: Sequence[_Sig], config: DetectorConfig | None = None, *, kinds: bool = False) -> dict[str, Any]:
    """TP / FN / FP of the runtime detector on ``sigs`` (150 ms; first and last 0.5 s not scored),
    per lead name (the part of the signal name after the record) and in total; error kinds if asked."""
    from .rhythm import FN_KINDS, FP_KINDS, _errors, error_kinds

    tot = {"tp": 0, "fn": 0, "fp": 0}
    per: dict[str, dict[str, int]] = {}
    fnk = dict.fromkeys(FN_KINDS, 0)
    fpk = dict.fromkeys(FP_KINDS, 0)
    for s in sigs:
        det = np.sort(detect_beats(s.x, fs=s.fs, config=config))
        lo, hi = int(EDGE_S * s.fs), s.x.size - int(EDGE_S * s.fs)
        fn, fp = _errors(s.ref, det, s.fs, lo=lo, hi=hi)
        n_ref = int(((s.ref >= lo) & (s.ref < hi)).sum())
        lead = s.name.split("/")[2]
        p = per.setdefault(lead, {"tp": 0, "fn": 0, "fp": 0})
        for d in (tot, p):
            d["tp"] += n_ref - len(fn)
            d["fn"] += len(fn)
            d["fp"] += len(fp)
        if kinds and (fn or fp):
            a, b = error_kinds(s.x, s.fs, s.ref, fn, fp)
            for k in a:
                fnk[k] += 1
            for k in b:
                fpk[k] += 1
    out: dict[str, Any] = {**tot, **_rates(tot), "per_lead": {k: {**v, **_rates(v)} for k, v in per.items()}}
    if kinds:
        out["fn_kinds"], out["fp_kinds"] = fnk, fpk
    return out


def _rates(d: dict[str, int]) -> dict[str, float | None]:
    tp, fn, fp = d["tp"], d["fn"], d["fp"]
    return {"se": tp / (tp + fn) if tp + fn else None, "ppv": tp / (tp + fp) if tp + fp else None}


def measure(data: Path, labels: dict[str, Any], *, copies: int = 2, seed: int = 0) -> dict[str, Any]:
    """The runtime detector (its defaults) on the consensus signals, as recorded and augmented."""
    clean, aug = training_signals(labels, copies=copies, seed=seed)
    return {
        "signals": {"clean": len(clean), "augmented": len(aug)},
        "clean": score(clean, kinds=True),
        "augmented": score(aug, kinds=True),
    }


# ----------------------------------------------------------------------------------------------- grid
#: The stated grid: each value is one change from the defaults (every other constant at its default);
#: the best admissible single changes are then combined greedily (:func:`run_grid`). Two values per
#: constant, one either side of the default; see benchmarks/results/rhythm/README.md.
GRID: dict[str, tuple[Any, ...]] = {
    "threshold": (0.4, 0.5),
    "twave_ratio": (0.5, 0.7),
    "twave_s": (0.4, 0.6),
    "twave_rr": (0.6, 0.8),
    "searchback_rr": (1.5, 1.8),
    "searchback_height": (0.3, 0.5),
    "searchback_prominence": (8.0, 12.0),
    "locate_before_s": (0.07, 0.11),
    "locate_after_s": (0.04, 0.07),
    "integration_s": (0.08, 0.12),
    "band_hz": ((5.0, 20.0), (10.0, 25.0)),
    "level_cap": (3.0, 6.0),
}


def _anchor_sets(data: Path) -> dict[str, list[_Sig]]:
    from .rhythm import _cpsc2021, _holter_patient, _mitbih, holter_test_patients

    held = holter_test_patients()
    c21 = [r for lead in (0, 1) for r in _cpsc2021(data, lead) if _holter_patient(r.name) not in held]
    return {
        "cpsc2021_train": [_Sig(f"{r.name}/{i}/x", r.x, r.fs, r.ref) for i, r in enumerate(c21)],
        "mitbih100": [_Sig(f"{r.name}/0/x", r.x, r.fs, r.ref) for r in _mitbih(data)],
    }


def _score_anchor(sigs: Sequence[_Sig], config: DetectorConfig) -> dict[str, Any]:
    from .rhythm import _compare

    tp = fn = fp = 0
    for s in sigs:
        a, b, c = _compare(s.ref, np.sort(detect_beats(s.x, fs=s.fs, config=config)), s.fs, lo=0, hi=s.x.size)
        tp, fn, fp = tp + a, fn + b, fp + c
    d = {"tp": tp, "fn": fn, "fp": fp}
    return {**d, **_rates(d)}


def evaluate(config: DetectorConfig, clean: Sequence[_Sig], aug: Sequence[_Sig], anchors: dict[str, list[_Sig]]) -> dict[str, Any]:
    c, a = score(clean, config), score(aug, config)
    return {
        "ptbxl_clean": {k: c[k] for k in ("tp", "fn", "fp", "se", "ppv")},
        "ptbxl_aug": {k: a[k] for k in ("tp", "fn", "fp", "se", "ppv")},
        "errors": c["fn"] + c["fp"] + a["fn"] + a["fp"],
        **{k: _score_anchor(v, config) for k, v in anchors.items()},
    }


def admissible(r: dict[str, Any], base: dict[str, Any]) -> bool:
    """The rule's constraints: no more missed and no more false beats than the defaults on the CPSC-2021
    training patients (both leads together), and MIT-BIH 100 Se and PPV ≥ 99.5 %."""
    c, b, m = r["cpsc2021_train"], base["cpsc2021_train"], r["mitbih100"]
    return c["fn"] <= b["fn"] and c["fp"] <= b["fp"] and m["se"] >= 0.995 and m["ppv"] >= 0.995


def run_grid(data: Path, labels: dict[str, Any], *, copies: int = 2, seed: int = 0) -> dict[str, Any]:
    """Stage 1: the defaults and each single change of :data:`GRID`. Stage 2: the admissible single
    changes that lower the PTB-XL errors, combined greedily in order of their gain (each kept only if
    the combination stays admissible and lowers the errors further). Chosen: the admissible setting
    with the fewest PTB-XL errors (ties: fewer changed parameters, then the earlier)."""
    clean, aug = training_signals(labels, copies=copies, seed=seed)
    anchors = _anchor_sets(data)
    base_cfg = DetectorConfig()
    base = evaluate(base_cfg, clean, aug, anchors)
    rows: list[dict[str, Any]] = [{"changes": {}, **base, "admissible": True}]
    print("defaults", base["errors"], base["cpsc2021_train"], flush=True)
    for p, values in GRID.items():
        for v in values:
            r = evaluate(replace(base_cfg, **{p: v}), clean, aug, anchors)
            rows.append({"changes": {p: v}, **r, "admissible": admissible(r, base)})
            print(p, v, r["errors"], admissible(r, base), r["cpsc2021_train"]["fn"], r["cpsc2021_train"]["fp"], flush=True)
    singles = sorted(
        (r for r in rows[1:] if r["admissible"] and r["errors"] < base["errors"]), key=lambda r: r["errors"]
    )
    # one value per parameter: its best
    best_per: dict[str, dict[str, Any]] = {}
    for r in singles:
        (p,) = r["changes"]
        best_per.setdefault(p, r)
    combo: dict[str, Any] = {}
    cur = base
    for r in sorted(best_per.values(), key=lambda r: r["errors"]):
        trial = {**combo, **r["changes"]}
        if len(trial) == 1:
            res = r
        else:
            res = {**evaluate(replace(base_cfg, **trial), clean, aug, anchors)}
            res["admissible"] = admissible(res, base)
            rows.append({"changes": trial, **res})
            print("combo", trial, res["errors"], res["admissible"], flush=True)
        if res["admissible"] and res["errors"] < cur["errors"]:
            combo, cur = trial, res
    adm = [r for r in rows if r["admissible"]]
    chosen = min(adm, key=lambda r: (r["errors"], len(r["changes"])))
    return {
        "signals": {"clean": len(clean), "augmented": len(aug)},
        "grid": {k: list(v) for k, v in GRID.items()},
        "rows": rows,
        "chosen": chosen["changes"],
        "chosen_row": chosen,
    }


_USAGE = (
    "usage: python -m benchmarks.rhythm_consensus label DATA LABELS.json | measure DATA LABELS.json OUT.json "
    "| grid DATA LABELS.json OUT.json"
)

if __name__ == "__main__":
    import sys

    a = sys.argv[1:]
    if len(a) < 3 or a[0] not in ("label", "measure", "grid"):
        raise SystemExit(_USAGE)
    if a[0] == "label":
        s = label_records(Path(a[1]), Path(a[2]))["summary"]
        print(json.dumps(s))
    else:
        if len(a) != 4:
            raise SystemExit(_USAGE)
        lab = json.loads(Path(a[2]).read_text())
        res = measure(Path(a[1]), lab) if a[0] == "measure" else run_grid(Path(a[1]), lab)
        Path(a[3]).write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k not in ("rows",)}, indent=1)[:6000])
