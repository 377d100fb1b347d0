"""Does ``kmerl-edge`` tell when lead I looks inverted (LA/RA electrodes swapped, a patch worn reversed)?

Records are scored through the public path (``kmerl_edge.load(bundle)`` then ``Classifier.predict`` at the
device rate, 500 Hz) with the shipped bundles: lead sets I, I+II and I+II+V2 by ``default_bundle``, 12 leads
by ``default_bundle_12``. Three conditions of each record (mV, all 12 leads, before any lead is picked):

- ``as_recorded``;
- ``la_ra``: the left- and right-arm electrodes swapped: I → −I, II ↔ III, aVR ↔ aVL, aVF and the chest
  leads unchanged;
- ``invert_I``: lead I alone multiplied by −1 (a 1-lead patch or handheld device worn the other way round).

A record is *flagged* when ``"lead_I_inverted"`` is in ``Prediction.quality.flags``; *unknown* when lead I
was scored but no window could be measured (too few beats, flat). Rates are over the records with lead I
scored; unknown counts as not flagged. Percentile-bootstrap 95 % intervals by record (2,000 resamples).

Stages:

- ``choose`` (PTB-XL fold 9, validation): the runtime's per-window measurements of lead I (and of aVR,
  V5, V6 where scored), :func:`kmerl_edge._superclass_stack.stack_measurements` on the model windows with
  the prediction's window rhythm — what :meth:`kmerl_edge.Classifier.run_windows` computes — and the
  false-flag and detection rates of the candidate rules below, from those measurements.
- ``cost``: the check's in-process cost per window (:func:`cost`).
- ``report``: the shipped rule, read from the predictions themselves, on PTB-XL fold 10 (test, scored once
  after the rule was written down and committed) and on records never used for choosing: CPSC-2018
  (``cpsc2018_cinc2020``) and the Georgia / Chapman-Ningbo records of ``cinc2021`` (``E*``, ``JS*``; the
  ``HR*`` ones are PTB-XL and left out).

Candidate rules (written before fold 9 was measured), per window, unknown unless lead I was measured:

- ``qrs_t``: lead I's median beat has a negative QRS area and a negative mean T (the superclass stack's
  polarity guard, :func:`kmerl_edge._superclass_stack.inverted_lead_i`);
- ``qrs_t_avr``: ``qrs_t`` and, where aVR is scored, aVR's QRS area > 0 (after an LA/RA swap the aVR shown
  is aVL: normally upright or small; a true aVR is negative);
- ``qrs_t_v6``: ``qrs_t`` and, where V5 or V6 is scored, their summed QRS area > 0 (an LA/RA swap leaves the
  chest leads upright; dextrocardia and extensive lateral infarction invert them too);
- ``qrs``: lead I's QRS area negative (more sensitive, for comparison);
- ``qrs_v6`` (added after a 30-record smoke run of fold 9 showed ``qrs_t`` missing a quarter of the
  swaps, those whose lead I T wave was not upright): where V5 or V6 is scored, lead I's QRS area negative
  and their summed QRS area positive (no T condition); elsewhere ``qrs_t``.

A record is flagged when at least half of its measured windows are (PTB-XL records are one 10-s window).
Choice (written before fold 9 was measured): the rule with the highest mean detection rate over
(lead set, ``la_ra`` / ``invert_I``) among those whose fold-9 false-flag rate as recorded is at most 2 %
at every lead set; ties (within 1 point of detection) go to the simpler rule, in the order above.

Chosen on fold 9 (81 records; ``fold9_choose.json``), before fold 10 was scored: ``qrs_t``. Its largest
false-flag rate as recorded is 1.2 % (1 of 81 records, at lead I alone); ``qrs_t_avr`` and ``qrs_t_v6`` are as
low but detect less (12 leads: aVR vetoes every lead-I-alone inversion); ``qrs_v6`` (3.7 % at 12 leads) and
``qrs`` (up to 4.9 %) flag too many records as recorded. The runtime therefore reports the superclass
stack's polarity guard itself (:mod:`kmerl_edge._polarity`).

    python -m benchmarks.lead_reversal choose --data ../shared/data --out benchmarks/results/lead_reversal/fold9_choose.json
    python -m benchmarks.lead_reversal report --data ../shared/data --out benchmarks/results/lead_reversal/report.json
    python -m benchmarks.lead_reversal cost --out benchmarks/results/lead_reversal/cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CONDITIONS", "LEAD_SETS", "apply_condition", "bootstrap_rate", "main"]

LEADS12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "I": ("default_bundle", ("I",)),
    "I,II": ("default_bundle", ("I", "II")),
    "I,II,V2": ("default_bundle", ("I", "II", "V2")),
    "12 leads": ("default_bundle_12", LEADS12),
}
CONDITIONS = ("as_recorded", "la_ra", "invert_I")
#: leads whose measurements the ``choose`` stage keeps (the candidates look at no others)
KEPT = ("I", "aVR", "V5", "V6")
N_BOOT = 2000


def apply_condition(name: str, x: np.ndarray, leads: Sequence[str]) -> np.ndarray:
    """The record ``x`` (n_leads, n_samples) with named ``leads`` under one condition (a new array)."""
    y = np.array(x, dtype=np.float64, copy=True)
    idx = {lead: i for i, lead in enumerate(leads)}
    if name == "as_recorded":
        return y
    if name == "invert_I":
        y[idx["I"]] *= -1.0
        return y
    if name == "la_ra":
        y[idx["I"]] = -x[idx["I"]]
        for a, b in (("II", "III"), ("aVR", "aVL")):
            if a in idx and b in idx:
                y[idx[a]], y[idx[b]] = x[idx[b]], x[idx[a]]
        return y
    raise ValueError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}")


def bootstrap_rate(hits: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Share of True in ``hits`` (one per record) with its percentile-bootstrap 95 % interval by record."""
    h = np.asarray(hits, dtype=bool)
    n = len(h)
    if n == 0:
        return {"rate": None, "ci95": None, "n": 0, "k": 0}
    rng = np.random.default_rng(seed)
    boot = h[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"rate": round(float(h.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "n": n,
            "k": int(h.sum())}


def _ptbxl(data: Path, fold: int, limit: int | None) -> list[tuple[str, Any]]:
    from kmerl_edge import read_record
    from trainer.data import read_ptbxl

    ds = read_ptbxl(data / "ptbxl", rate=500, folds=[fold])
    return [(str(item.record_id), read_record(item.path)) for item in ds.items[:limit]]


def _other_sources(data: Path, limit: int | None) -> list[tuple[str, Any]]:
    from kmerl_edge import read_record

    paths = sorted((data / "cpsc2018_cinc2020").glob("*.hea"))
    paths += sorted(p for p in (data / "cinc2021").glob("*.hea") if p.name.startswith(("E", "JS")))
    out = []
    for p in paths[:limit]:
        r = read_record(p.with_suffix(""))
        if all(lead in r.leads for lead in LEADS12):
            out.append((f"{p.parent.name}/{p.stem}", r))
    return out


def _classifiers(bundles: Path, backend: str) -> dict[str, Any]:
    import kmerl_edge

    return {b: kmerl_edge.load(bundles / b, backend=backend, threads=1, companion=False)
            for b in {b for b, _ in LEAD_SETS.values()}}


def _rows(r: Any, leads: Sequence[str]) -> list[int]:
    return [list(r.leads).index(lead) for lead in leads]


# -- choose (fold 9) ---------------------------------------------------------------------------------------
def _measure(clf: Any, x: np.ndarray, fs: float, leads: Sequence[str]) -> np.ndarray:
    """(n_windows, len(KEPT), 2) QRS area and mean T of the kept leads as ``run_windows`` measures them
    (NaN: not scored or not measured)."""
    from kmerl_edge import LEADS, lead_ids
    from kmerl_edge._af_fusion import fusion_rhythm_lead
    from kmerl_edge._measure import PER_LEAD
    from kmerl_edge._superclass_stack import stack_measurements
    from kmerl_edge.rhythm import analyse

    pred = clf.predict(x, fs=fs, leads=leads)
    pre = clf.preprocess(x, fs=fs, leads=leads)
    keep = [i for i, lead in enumerate(pre.leads) if lead in pred.leads]
    names = [pre.leads[i] for i in keep]
    w = np.asarray(pre.windows)[:, keep]
    lead = fusion_rhythm_lead(lead_ids(names))  # the beats run_windows is given (predict's _Piecer)
    row, n = list(leads).index(lead), int(round(clf.bundle.preprocess_config.window_s * fs))
    rhythm = [analyse(x[row, int(round(s * fs)) : int(round(s * fs)) + n], fs=fs, lead=lead)
              for s in pre.window_starts_s]
    per, _ = stack_measurements(w, lead_ids(names), fs=clf.bundle.preprocess_config.target_fs, rhythm=rhythm)
    cols = [PER_LEAD.index("qrs_area"), PER_LEAD.index("t_mean")]
    return per[:, [LEADS.index(lead) for lead in KEPT]][:, :, cols]


def _nan_pos(v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(v), True, v > 0)  # a lead not scored does not veto


def rule_windows(name: str, m: np.ndarray) -> np.ndarray:
    """Per window of :func:`_measure`'s array: 1 flagged, 0 not, -1 unknown (lead I not measured)."""
    q, t = m[:, 0, 0], m[:, 0, 1]
    known = ~(np.isnan(q) | np.isnan(t))
    with np.errstate(invalid="ignore"):
        base = (q < 0) & (t < 0)
        if name == "qrs_t":
            hit = base
        elif name == "qrs_t_avr":
            hit = base & _nan_pos(m[:, 1, 0])
        elif name == "qrs_t_v6":
            chest = np.nansum(m[:, 2:4, 0], axis=1)
            chest[np.all(np.isnan(m[:, 2:4, 0]), axis=1)] = np.nan
            hit = base & _nan_pos(chest)
        elif name == "qrs_v6":
            chest = np.nansum(m[:, 2:4, 0], axis=1)
            has = ~np.all(np.isnan(m[:, 2:4, 0]), axis=1)
            hit = np.where(has, (q < 0) & (chest > 0), base)
            known = np.where(has, ~np.isnan(q), known)
        elif name == "qrs":
            hit = q < 0
            known = ~np.isnan(q)
        else:
            raise ValueError(name)
    return np.where(known, hit.astype(np.int8), np.int8(-1))


RULES = ("qrs_t", "qrs_t_avr", "qrs_t_v6", "qrs_v6", "qrs")


def record_flag(per_window: np.ndarray) -> int:
    """The record's verdict from its windows' flags (:func:`kmerl_edge._polarity.record_inverted`, the runtime's
    own): 1 flagged, 0 not, -1 no window measured."""
    from kmerl_edge._polarity import record_inverted

    v = record_inverted(per_window)
    return -1 if v is None else int(v)


def choose(data: Path, bundles: Path, backend: str, limit: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    recs = _ptbxl(data, 9, limit)
    clfs = _classifiers(bundles, backend)
    rates: dict[str, Any] = {}
    for key, (b, leads) in LEAD_SETS.items():
        for cond in CONDITIONS:
            t0 = time.perf_counter()
            ms = []
            for _, r in recs:
                x = apply_condition(cond, r.signal, r.leads)[_rows(r, leads)]
                ms.append(_measure(clfs[b], np.ascontiguousarray(x, np.float32), float(r.fs), leads))
            for rule in RULES:
                flags = np.array([record_flag(rule_windows(rule, m)) for m in ms])
                rates.setdefault(rule, {}).setdefault(key, {})[cond] = {
                    **bootstrap_rate(flags == 1), "unknown": int((flags == -1).sum())}
            log(f"{key:9s} {cond:12s} {time.perf_counter() - t0:6.1f} s  " + "  ".join(
                f"{rule} {rates[rule][key][cond]['rate']}" for rule in RULES))
    summary: dict[str, Any] = {}
    for rule in RULES:
        ff = max(rates[rule][k]["as_recorded"]["rate"] for k in LEAD_SETS)
        det = float(np.mean([rates[rule][k][c]["rate"] for k in LEAD_SETS for c in ("la_ra", "invert_I")]))
        summary[rule] = {"max_false_flag": ff, "mean_detection": round(det, 4), "eligible": ff <= 0.02}
    eligible = [r for r in RULES if summary[r]["eligible"]]
    chosen = None
    if eligible:
        best = max(summary[r]["mean_detection"] for r in eligible)
        chosen = next(r for r in eligible if summary[r]["mean_detection"] >= best - 0.01)
    return {"fold": 9, "n_records": len(recs), "rates": rates, "summary": summary, "chosen": chosen}


def _cost_calls(clf: Any, x: np.ndarray, fs: float, leads: Sequence[str]) -> tuple[Callable[[], None], Callable[[], None]]:
    import kmerl_edge as ke
    from kmerl_edge._af_fusion import fusion_rhythm_lead
    from kmerl_edge._polarity import inverted_note, run_with_polarity

    pre = clf.preprocess(x, fs=fs, leads=leads)
    lead = fusion_rhythm_lead(pre.lead_ids)  # the beats predict hands run_windows
    rh = [ke.rhythm.analyse(x[list(leads).index(lead)], fs=fs, lead=lead)]

    def plain() -> None:
        clf.run_windows(pre.windows, pre.lead_ids, rhythm=rh)

    def checked() -> None:
        _, pol = run_with_polarity(clf, pre.windows, pre.lead_ids, rhythm=rh)
        inverted_note(np.concatenate([pol]))

    return plain, checked


def cost(rounds: int = 300, iters: int = 10) -> dict[str, Any]:
    """In-process cost of the check per 10-s window (the real fixture record 00001_hr, ONNX Runtime int8, one
    thread): ``Classifier.run_windows`` alone against what ``predict`` / ``stream`` run instead
    (:func:`kmerl_edge._polarity.run_with_polarity` and the record's verdict), alternating, median µs."""
    import kmerl_edge as ke

    rec = ke.read_record(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "records" / "00001_hr")
    out: dict[str, Any] = {}
    for key, (b, leads) in LEAD_SETS.items():
        clf = ke.load(Path(ke.__file__).parent / b, backend="onnxruntime-int8", threads=1, companion=False)
        x = np.ascontiguousarray(rec.signal[_rows(rec, leads), :5000])
        plain, checked = _cost_calls(clf, x, float(rec.fs), leads)
        ts: dict[str, list[float]] = {"run_windows": [], "with_check": []}
        for f in (plain, checked) * 5:
            f()
        for rnd in range(rounds):
            for name, f in (("run_windows", plain), ("with_check", checked))[:: 1 if rnd % 2 == 0 else -1]:
                for _ in range(iters):
                    t = time.perf_counter()
                    f()
                    ts[name].append((time.perf_counter() - t) * 1e6)
        med = {k: round(float(np.median(v)), 1) for k, v in ts.items()}
        out[key] = {**med, "diff_us": round(med["with_check"] - med["run_windows"], 1)}
    return {"cost_us_per_window": out, "calls_each": rounds * iters}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lead_reversal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("choose", "report", "cost"))
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--bundles", default="kmerl_edge", help="folder holding default_bundle and default_bundle_12")
    ap.add_argument("--backend", default="onnxruntime-int8")
    ap.add_argument("--limit", type=int, default=None, help="first N records of each source (smoke test)")
    ap.add_argument("--out", required=True, help="JSON results file")
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.stage == "choose":
        res = choose(Path(a.data), Path(a.bundles), a.backend, a.limit, print)
    elif a.stage == "cost":
        res = cost()
        print(json.dumps(res))
    else:
        res = report(Path(a.data), Path(a.bundles), a.backend, a.limit, print)
    res = {"command": "python -m benchmarks.lead_reversal " + " ".join(argv if argv is not None else sys.argv[1:]),
           "backend": a.backend, "elapsed_s": round(time.time() - t0, 1), **res}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res.get("summary", {}), indent=1))
    return 0


def exact_upper(k: int, n: int) -> float | None:
    """Clopper-Pearson 95 % upper bound of a rate of ``k`` in ``n`` (the bootstrap gives [0, 0] when k = 0)."""
    from scipy.stats import beta

    return None if n == 0 else round(float(1.0 if k == n else beta.ppf(0.975, k + 1, n - k)), 4)


def _score(clf: Any, x: np.ndarray, fs: float, leads: Sequence[str]) -> tuple[int, bool]:
    """(the record's flag: 1 flagged, 0 not, -1 lead I unknown; whether lead I was scored) through the public
    path: ``predict``'s own scoring (:func:`kmerl_edge._scoring.score_reader`, then the Prediction it makes),
    keeping the per-window polarity that the Prediction reduces to a flag."""
    from kmerl_edge._io import ArrayReader
    from kmerl_edge._polarity import INVERTED_FLAG
    from kmerl_edge._scoring import score_reader

    sw = score_reader(clf, ArrayReader(x, fs=fs, leads=tuple(leads)), batch_windows=clf.batch_windows)
    pred = clf._prediction(sw, None)
    flagged = INVERTED_FLAG in pred.quality.flags
    if flagged != any("lead I looks inverted" in n for n in pred.notes):
        raise AssertionError("flag and note disagree")
    unknown = not flagged and not np.any(sw.polarity >= 0)
    return (1 if flagged else -1 if unknown else 0), "I" in pred.leads


def _normal(r: Any) -> bool:
    """Sinus rhythm with no other statement: CPSC-2018 ``Normal``, SNOMED 426783006 alone (cinc2021)."""
    dx = next((c.split(":", 1)[1].strip() for c in r.comments if c.strip().startswith("Dx")), "")
    return dx in ("Normal", "426783006")


def _cells(recs: Sequence[tuple[str, Any]], clfs: dict[str, Any], conditions: Sequence[str],
           log: Callable[[str], None], tag: str, subset: np.ndarray | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (b, leads) in LEAD_SETS.items():
        for cond in conditions:
            t0 = time.perf_counter()
            flags, scored, ids = [], [], []
            for rid, r in recs:
                x = apply_condition(cond, r.signal, r.leads)[_rows(r, leads)]
                f, has_i = _score(clfs[b], np.ascontiguousarray(x, np.float32), float(r.fs), leads)
                flags.append(f)
                scored.append(has_i)
                ids.append(rid)
            fl, sc = np.array(flags), np.array(scored)
            cell: dict[str, Any] = {**bootstrap_rate(fl[sc] == 1), "unknown": int((fl[sc] == -1).sum()),
                                    "lead_I_not_scored": int((~sc).sum())}
            cell["exact95_upper"] = exact_upper(cell["k"], cell["n"])
            if cond == "as_recorded":
                cell["flagged_records"] = [i for i, f in zip(ids, flags) if f == 1]
            if subset is not None:
                m = subset & sc
                cell["normal"] = {**bootstrap_rate(fl[m] == 1), "exact95_upper": exact_upper(int((fl[m] == 1).sum()),
                                                                                            int(m.sum()))}
            out.setdefault(key, {})[cond] = cell
            log(f"{tag:9s} {key:9s} {cond:12s} {time.perf_counter() - t0:6.1f} s  rate {cell['rate']} "
                f"{cell['ci95']} unknown {cell['unknown']}")
    return out


def report(data: Path, bundles: Path, backend: str, limit: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    """The shipped rule, from the predictions: PTB-XL fold 9 (agreement with ``choose``), fold 10 (test, once)
    and the other sources."""
    clfs = _classifiers(bundles, backend)
    res: dict[str, Any] = {"rule": "lead I QRS area < 0 and mean T < 0 (kmerl_edge._superclass_stack.inverted_lead_i)"}
    for fold in (9, 10):
        recs = _ptbxl(data, fold, limit)
        res[f"ptbxl_fold{fold}"] = {"n_records": len(recs), "cells": _cells(recs, clfs, CONDITIONS, log, f"fold{fold}")}
    other = _other_sources(data, limit)
    normal = np.array([_normal(r) for _, r in other])
    res["cpsc2018_georgia_ningbo"] = {
        "n_records": len(other), "n_normal": int(normal.sum()),
        "sources": sorted({rid.split("/")[0] + "/" + rid.split("/")[1][:1] for rid, _ in other}),
        "cells": _cells(other, clfs, CONDITIONS, log, "other", subset=normal)}
    res["summary"] = {src: {key: {c: [v["rate"], v["ci95"]] for c, v in cell.items()}
                            for key, cell in res[src]["cells"].items()}
                      for src in ("ptbxl_fold9", "ptbxl_fold10", "cpsc2018_georgia_ningbo")}
    return res


if __name__ == "__main__":
    raise SystemExit(main())
