"""``kmerl-bench rhythm``: R-peak detection, heart rate and the AF evidence of :mod:`kmerl_edge.rhythm`
against reference annotations, with ``wfdb.processing.xqrs_detect`` and NeuroKit2's default detector
as anchors in the same run.

- Beats: sensitivity (Se) and positive predictivity (PPV) with ``wfdb.processing.compare_annotations``
  (150 ms window) on MIT-BIH record 100 (beat symbols of its ``.atr`` only), the 50 CPSC-2019 clips
  (references in the first and last 0.5 s left out, as in the CPSC-2019 scoring: detections there
  are no false positives, nor is a detection of such a beat that falls just inside) and
  the CPSC-2021 Holter records (both leads; beat symbols of their ``.atr``).
- Heart rate: |mean HR of each 10-s window from the detected beats − from the reference beats|
  (median); for ``kmerl`` only windows whose rhythm quality is ``ok`` (the share is ``coverage``).
- AF evidence: AUC (95 % bootstrap interval, resampling records) of ``rr_irregularity`` for AF vs
  non-AF 10-s windows on CPSC-2021 (windows entirely inside or outside an AF episode) and on lead I of
  the 12-lead recordings (first 10 s; AF = SNOMED 164889003 or CPSC-2018 ``AF``; flutter 164890007
  separately against non-AF, non-flutter), with the plain rule "share of successive RR differences
  > 50 ms" on the same beats as the anchor.
- Latency: median of :func:`kmerl_edge.rhythm.analyse` per 10-s one-lead window.

NeuroKit2 (``pip install 'kmerl-edge[bench]'``) is used here only, never by the runtime.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge.rhythm import analyse, detect_beats

from ._stats import machine_info, percentile

__all__ = ["run_rhythm", "rhythm_markdown", "refresh_error_kinds", "tolerance_sweep", "tolerance_markdown", "hr_trust", "hr_trust_markdown", "error_kinds", "BEAT_SYMBOLS", "bootstrap_auc"]

#: MIT-BIH beat annotation symbols (non-beat symbols such as ``+`` rhythm changes, ``~`` noise are left out).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
TOL_S = 0.15
AF_CODE = "164889003"
AFL_CODE = "164890007"

Detector = Callable[[np.ndarray, float], np.ndarray]


# ----------------------------------------------------------------------------------------------- detectors
def _kmerl(x: np.ndarray, fs: float) -> np.ndarray:
    return detect_beats(x, fs=fs)


def _xqrs(x: np.ndarray, fs: float) -> np.ndarray:
    from wfdb import processing

    return np.asarray(processing.xqrs_detect(sig=x, fs=fs, verbose=False), dtype=np.int64)


def _neurokit(x: np.ndarray, fs: float) -> np.ndarray:
    try:
        import neurokit2 as nk
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("neurokit2 is not installed: pip install 'kmerl-edge[bench]'") from exc
    try:
        clean = nk.ecg_clean(x, sampling_rate=int(round(fs)))
        _, info = nk.ecg_peaks(clean, sampling_rate=int(round(fs)))
    except Exception:  # noqa: BLE001 - an anchor that fails on a record finds no beats there
        return np.zeros(0, dtype=np.int64)
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


DETECTORS: dict[str, Detector] = {"kmerl": _kmerl, "xqrs": _xqrs, "neurokit2": _neurokit}


# ----------------------------------------------------------------------------------------------- data
@dataclass
class _Rec:
    name: str
    x: np.ndarray
    fs: float
    ref: np.ndarray
    lo: int = 0  # evaluate references / detections in [lo, hi)
    hi: int | None = None
    rhythm: list[tuple[int, str]] | None = None  # (sample, rhythm) changes, for AF labels


def _wfdb_beats(path: Path) -> tuple[np.ndarray, list[tuple[int, str]]]:
    import wfdb

    ann = wfdb.rdann(str(path), "atr")
    beats = np.array([s for s, c in zip(ann.sample, ann.symbol) if c in BEAT_SYMBOLS], dtype=np.int64)
    changes = [(int(s), a.strip("(").strip("\x00")) for s, c, a in zip(ann.sample, ann.symbol, ann.aux_note) if c == "+"]
    return beats, changes


def _mitbih(data: Path) -> list[_Rec]:
    import wfdb

    p = data / "wfdb_samples" / "100"
    rec = wfdb.rdrecord(str(p))
    beats, changes = _wfdb_beats(p)
    return [_Rec("100 (MLII)", rec.p_signal[:, 0].astype(np.float64), float(rec.fs), beats, rhythm=changes)]


def _resampled(rec: _Rec, fs_new: int) -> _Rec:
    """The same record at another device rate (polyphase resampling; references moved with it)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    q = Fraction(int(fs_new), int(round(rec.fs)))
    x = resample_poly(rec.x, q.numerator, q.denominator)
    ref = np.round(rec.ref * fs_new / rec.fs).astype(np.int64)
    return _Rec(f"{rec.name} at {fs_new} Hz", x, float(fs_new), ref)


def _cpsc2019(data: Path) -> list[_Rec]:
    from scipy.io import loadmat

    out = []
    for f in sorted((data / "cpsc2019" / "data").glob("data_*.mat")):
        rid = f.stem.split("_")[-1]
        x = loadmat(str(f))["ecg"].ravel().astype(np.float64)
        ref = loadmat(str(data / "cpsc2019" / "ref" / f"R_{rid}.mat"))["R_peak"].ravel().astype(np.int64)
        out.append(_Rec(rid, x, 500.0, ref, lo=250, hi=x.size - 250))
    return out


def _cpsc2021(data: Path, lead: int) -> list[_Rec]:
    import wfdb

    out = []
    for folder in ("cpsc2021", "cpsc2021_extra"):
        for h in sorted((data / folder).glob("*.hea")):
            rec = wfdb.rdrecord(str(h.with_suffix("")))
            beats, changes = _wfdb_beats(h.with_suffix(""))
            # the rhythm before the first annotation: AF in persistent-AF records, normal otherwise
            persistent = "persistent" in h.read_text(errors="replace").lower()
            if not changes or changes[0][0] > 0:
                changes = [(0, "AFIB" if persistent else "N")] + changes
            out.append(_Rec(h.stem, rec.p_signal[:, lead].astype(np.float64), float(rec.fs), beats, rhythm=changes))
    return out


# ----------------------------------------------------------------------------------------------- beats
def _match(
    ref: np.ndarray, det: np.ndarray, fs: float, *, lo: int, hi: int, tol_s: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """References and detections matched over the whole record (``compare_annotations``, ``tol_s``;
    150 ms unless given): (per reference: matched, references inside [lo, hi), unmatched detections
    inside [lo, hi))."""
    from wfdb import processing

    ref = np.asarray(ref, dtype=np.int64)
    det = np.asarray(det, dtype=np.int64)
    ref_in = (ref >= lo) & (ref < hi)
    det_in = (det >= lo) & (det < hi)
    if ref.size == 0 or det.size == 0:
        return np.zeros(ref.size, dtype=bool), ref_in, det_in
    c = processing.compare_annotations(ref, det, int(round((TOL_S if tol_s is None else tol_s) * fs)))
    c.compare()
    m = np.asarray(c.matching_sample_nums, dtype=np.int64)  # per reference: matched detection or -1
    matched = np.zeros(det.size, dtype=bool)
    matched[m[m >= 0]] = True
    return m >= 0, ref_in, ~matched & det_in


def _compare(
    ref: np.ndarray, det: np.ndarray, fs: float, *, lo: int, hi: int, tol_s: float | None = None
) -> tuple[int, int, int]:
    """(TP, FN, FP) in the scored range [lo, hi): references and detections are matched over the whole
    record (``compare_annotations``, 150 ms), then the references inside the range are TP or FN and the
    unmatched detections inside it are FP (a detection of a beat just outside the range is neither)."""
    hit, ref_in, fp = _match(ref, det, fs, lo=lo, hi=hi, tol_s=tol_s)
    return int((hit & ref_in).sum()), int((~hit & ref_in).sum()), int(fp.sum())


def _errors(ref: np.ndarray, det: np.ndarray, fs: float, *, lo: int, hi: int) -> tuple[list[int], list[int]]:
    """Sample positions of the missed references (FN) and of the false detections (FP) in [lo, hi),
    counted as in :func:`_compare`."""
    hit, ref_in, fp = _match(ref, det, fs, lo=lo, hi=hi)
    return np.asarray(ref, dtype=np.int64)[~hit & ref_in].tolist(), np.asarray(det, dtype=np.int64)[fp].tolist()


def holter_test_patients() -> frozenset[str]:
    """CPSC-2021 patients the default model holds out (the corpus split): beats on their records are
    reported apart and never used to tune the detector."""
    from export._corpus import CorpusConfig

    return frozenset(CorpusConfig().holter_test_patients)


def _holter_patient(record: str) -> str:
    """Patient of a CPSC-2021 record name (``data_<patient>_<record>``)."""
    return record.split("_")[1]


#: Kinds of missed (FN) and false (FP) beats, in the order they are tested (the first that applies).
FN_KINDS = ("mislocated", "artefact", "premature", "low amplitude", "other")
FP_KINDS = ("mislocated", "artefact", "after a beat (T wave)", "other")


def error_kinds(
    x: np.ndarray, fs: float, ref: np.ndarray, fn: Sequence[int], fp: Sequence[int]
) -> tuple[list[str], list[str]]:
    """What kind of error each missed reference (``fn``) and false detection (``fp``) is, from the
    signal around it (the first kind that applies):

    - ``mislocated``: a false detection and a missed reference within 0.4 s of each other (the beat was
      found but placed on something else, 150 ms < offset < 400 ms);
    - ``artefact``: the signal's peak-to-peak within ±0.3 s of a missed beat (±0.1 s of a false one)
      exceeds 3× the record's beat amplitude (the 75th percentile over the references of the
      peak-to-peak within ±80 ms);
    - missed beats: ``premature`` (its interval < 0.8× the median RR), ``low amplitude`` (< 0.5× the
      beat amplitude); false beats: ``after a beat (T wave)`` (0.15–0.45 s after a reference);
    - ``other``.
    """
    ref = np.asarray(ref, dtype=np.int64)
    h80, h100, h300 = (int(round(s * fs)) for s in (0.08, 0.1, 0.3))

    def ptp(i: int, h: int) -> float:
        seg = x[max(0, i - h) : min(x.size, i + h + 1)]
        return float(seg.max() - seg.min()) if seg.size else 0.0

    amp = float(np.percentile([ptp(int(i), h80) for i in ref], 75)) if ref.size else 0.0
    rr = float(np.median(np.diff(ref))) if ref.size > 1 else 0.0
    near = 0.4 * fs
    fpa, fna = np.asarray(fp, dtype=np.int64), np.asarray(fn, dtype=np.int64)
    fn_k = []
    for i in fna.tolist():
        j = int(np.searchsorted(ref, i))
        prev = int(ref[j - 1]) if j > 0 else None
        if fpa.size and np.abs(fpa - i).min() < near:
            fn_k.append("mislocated")
        elif amp > 0 and ptp(i, h300) > 3 * amp:
            fn_k.append("artefact")
        elif prev is not None and rr > 0 and i - prev < 0.8 * rr:
            fn_k.append("premature")
        elif ptp(i, h80) < 0.5 * amp:
            fn_k.append("low amplitude")
        else:
            fn_k.append("other")
    fp_k = []
    for d in fpa.tolist():
        before = ref[ref < d]
        if fna.size and np.abs(fna - d).min() < near:
            fp_k.append("mislocated")
        elif amp > 0 and ptp(d, h100) > 3 * amp:
            fp_k.append("artefact")
        elif before.size and 0.15 * fs <= d - int(before[-1]) <= 0.45 * fs:
            fp_k.append("after a beat (T wave)")
        else:
            fp_k.append("other")
    return fn_k, fp_k


def _kind_counts(per: dict[str, Any], names: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Error kinds summed over the records of :func:`_per_record` (all, or those in ``names``)."""
    fn = dict.fromkeys(FN_KINDS, 0)
    fp = dict.fromkeys(FP_KINDS, 0)
    for name, r in per.items():
        if names is not None and name not in names:
            continue
        for k in r.get("fn_kinds", ()):
            fn[k] += 1
        for k in r.get("fp_kinds", ()):
            fp[k] += 1
    return {"fn": fn, "fp": fp}


def _error_kind_table(per: dict[str, Any], c19: list[_Rec]) -> dict[str, Any]:
    """Error kinds of kmerl on CPSC-2019 (all, even, odd clips) and on CPSC-2021 (per lead)."""
    c = per["CPSC-2019"]
    return {
        "CPSC-2019 (50 clips)": _kind_counts(c),
        "CPSC-2019 even clips": _kind_counts(c, [r.name for r in c19[0::2]]),
        "CPSC-2019 odd clips": _kind_counts(c, [r.name for r in c19[1::2]]),
        **{k: _kind_counts(v) for k, v in per.items() if k.startswith("CPSC-2021")},
    }


def refresh_error_kinds(data: Path, results: Path) -> dict[str, Any]:
    """Recompute kmerl's per-record errors and their kinds (no timing, deterministic) into an existing
    ``rhythm.json`` in ``results`` and rewrite ``rhythm.md`` from it; the other parts stay as measured."""
    import json

    path = Path(results) / "rhythm.json"
    res = json.loads(path.read_text())
    c19 = _cpsc2019(Path(data))
    per = {"CPSC-2019": _per_record(c19), **{f"CPSC-2021 lead {n}": _per_record(_cpsc2021(Path(data), i)) for n, i in (("I", 0), ("II", 1))}}
    res["kmerl_per_record"] = per
    res["kmerl_error_kinds"] = _error_kind_table(per, c19)
    for name, text in (("rhythm.json", json.dumps(res, indent=2) + "\n"), ("rhythm.md", rhythm_markdown(res))):
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(path.with_name(name))
    return res


def _per_record(recs: list[_Rec]) -> dict[str, Any]:
    """kmerl beats per record: TP / FN / FP, Se, PPV and the positions of the errors (samples)."""
    out: dict[str, Any] = {}
    for r in recs:
        det = np.sort(_kmerl(r.x, r.fs))
        hi = r.x.size if r.hi is None else r.hi
        fn, fp = _errors(r.ref, det, r.fs, lo=r.lo, hi=hi)
        n_ref = int(((r.ref >= r.lo) & (r.ref < hi)).sum())
        tp = n_ref - len(fn)
        fn_k, fp_k = error_kinds(r.x, r.fs, r.ref, fn, fp)
        out[r.name] = {
            "fs": r.fs,
            "tp": tp,
            "fn": len(fn),
            "fp": len(fp),
            "se": tp / n_ref if n_ref else None,
            "ppv": tp / (tp + len(fp)) if tp + len(fp) else None,
            "fn_samples": fn,
            "fp_samples": fp,
            "fn_kinds": fn_k,
            "fp_kinds": fp_k,
        }
    return out


def _window_hr(beats: np.ndarray, a: int, b: int, fs: float) -> float | None:
    w = beats[(beats >= a) & (beats < b)]
    return 60.0 * fs / float(np.mean(np.diff(w))) if w.size >= 3 else None


def _window_rates(r: _Rec, name: str, det: np.ndarray) -> Iterator[tuple[float, float | None]]:
    """(reference rate, rate given) per 10-s window of ``r`` with a reference rate: ``kmerl``'s from
    :func:`~kmerl_edge.rhythm.analyse` (``None`` where its quality gate withholds it), another detector's from
    its beats ``det`` (no gate)."""
    n = int(round(10.0 * r.fs))
    for s in range(0, max(1, r.x.size - n + 1), n):
        e = min(r.x.size, s + n)
        hr_ref = _window_hr(r.ref, s, e, r.fs)
        if hr_ref is None:
            continue
        yield hr_ref, analyse(r.x[s:e], fs=r.fs, lead="II").hr_bpm if name == "kmerl" else _window_hr(det, s, e, r.fs)


def _beats_part(recs: list[_Rec], detectors: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in detectors:
        fn = DETECTORS[name]
        tp = fn_ = fp = 0
        errs: list[float] = []
        windows = covered = 0
        t_total = 0.0
        for r in recs:
            t0 = time.perf_counter()
            det = np.sort(fn(r.x, r.fs))
            t_total += time.perf_counter() - t0
            hi = r.x.size if r.hi is None else r.hi
            a, b, c = _compare(r.ref, det, r.fs, lo=r.lo, hi=hi)
            tp, fn_, fp = tp + a, fn_ + b, fp + c
            for hr_ref, hr in _window_rates(r, name, det):
                windows += 1
                if hr is not None:
                    covered += 1
                    errs.append(abs(hr - hr_ref))
        out[name] = {
            "tp": tp,
            "fn": fn_,
            "fp": fp,
            "se": tp / (tp + fn_) if tp + fn_ else None,
            "ppv": tp / (tp + fp) if tp + fp else None,
            "hr_windows": windows,
            "hr_coverage": covered / windows if windows else None,
            "hr_abs_err_bpm_median": percentile(errs, 50) if errs else None,
            "hr_abs_err_bpm_p90": percentile(errs, 90) if errs else None,
            "detect_s_total": round(t_total, 3),
        }
    return out


# ----------------------------------------------------------------------------------------------- AF evidence
def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def bootstrap_auc(
    y: Sequence[int], s: Sequence[float], groups: Sequence[str], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """AUC with a 95 % percentile bootstrap interval that resamples ``groups`` (records) with
    replacement, so windows of one recording stay together."""
    ya, sa, ga = np.asarray(y), np.asarray(s, dtype=np.float64), np.asarray(groups)
    auc = _auc(ya, sa)
    uniq = np.unique(ga)
    idx = {g: np.flatnonzero(ga == g) for g in uniq}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = np.concatenate([idx[g] for g in rng.choice(uniq, size=uniq.size, replace=True)])
        v = _auc(ya[pick], sa[pick])
        if v is not None:
            boots.append(v)
    lo, hi = (percentile(boots, 2.5), percentile(boots, 97.5)) if boots else (None, None)
    return {
        "auc": auc,
        "ci95": [lo, hi],
        "n_pos": int(ya.sum()),
        "n_neg": int((1 - ya).sum()),
        "n_groups": int(uniq.size),
    }


def _af_windows(recs: list[_Rec]) -> list[tuple[str, str, np.ndarray, float]]:
    """(record, label in AF/AFL/non-AF, 10-s window, fs) for windows inside one rhythm only."""
    out = []
    for r in recs:
        n = int(round(10.0 * r.fs))
        ch = r.rhythm or []
        starts = [s for s, _ in ch]
        for s in range(0, r.x.size - n + 1, n):
            e = s + n
            i = int(np.searchsorted(starts, s, side="right")) - 1
            j = int(np.searchsorted(starts, e - 1, side="right")) - 1
            if i < 0 or i != j:
                continue
            lab = ch[i][1]
            label = "AF" if lab == "AFIB" else "AFL" if lab == "AFL" else "non-AF"
            out.append((r.name, label, r.x[s:e], r.fs))
    return out


def _twelve_lead(data: Path, unread: dict[str, str] | None = None) -> list[tuple[str, str, np.ndarray, float]]:
    """Lead I (first 10 s) of every 12-lead CinC record, read with :func:`kmerl_edge.read_record` (which
    reads the Georgia headers whose record name carries the ``.mat`` suffix: wfdb alone refuses them).
    Records that cannot be read are listed in ``unread`` (name → reason), never dropped silently."""
    from kmerl_edge import KmerlError, read_record

    seen: set[str] = set()
    out = []
    for folder in ("cinc2021", "cinc2021_extra", "cpsc2018_cinc2020"):
        for h in sorted((data / folder).glob("*.hea")):
            if h.stem in seen:
                continue
            seen.add(h.stem)
            dx = ""
            for line in h.read_text(errors="replace").splitlines():
                if line.lstrip("# ").lower().startswith("dx"):
                    dx = line.split(":", 1)[1]
            codes = {c.strip() for c in dx.split(",")}
            label = "AF" if (AF_CODE in codes or "AF" in codes) else "AFL" if AFL_CODE in codes else "non-AF"
            try:
                rec = read_record(h.with_suffix(""))
            except (KmerlError, OSError) as exc:
                if unread is not None:
                    unread[f"{folder}/{h.stem}"] = f"{type(exc).__name__}: {exc}"
                continue
            if "I" not in rec.leads:
                continue
            fs = float(rec.fs)
            x = rec.signal[rec.leads.index("I"), : int(round(10 * fs))].astype(np.float64)
            if x.size < int(round(10 * fs)) or not np.isfinite(x).all():
                continue
            out.append((h.stem, label, x, fs))
    return out


def _af_part(windows: list[tuple[str, str, np.ndarray, float]], lead: str) -> dict[str, Any]:
    rows = []
    for name, label, x, fs in windows:
        r = analyse(x, fs=fs, lead=lead)
        rows.append((name, label, r.rr_irregularity, r.pnn50))
    res: dict[str, Any] = {"windows": {k: sum(1 for w in rows if w[1] == k) for k in ("AF", "AFL", "non-AF")}}
    for pos in ("AF", "AFL"):
        sel = [w for w in rows if w[1] in (pos, "non-AF")]
        usable = [w for w in sel if w[2] is not None]
        if not usable or len({w[1] for w in usable}) < 2:
            res[pos] = None
            continue
        y = [1 if w[1] == pos else 0 for w in usable]
        g = [w[0] for w in usable]
        res[pos] = {
            "coverage": {
                k: (sum(1 for w in usable if w[1] == k) / max(1, sum(1 for w in sel if w[1] == k)))
                for k in (pos, "non-AF")
            },
            "rr_irregularity": bootstrap_auc(y, [float(w[2] or 0.0) for w in usable], g),
            "anchor_share_drr_gt_50ms": bootstrap_auc(y, [float(w[3] or 0.0) for w in usable], g),
        }
    return res


# ----------------------------------------------------------------------------------------------- latency
def _latency(recs: list[_Rec], *, repeats: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in recs:
        n = int(round(10 * r.fs))
        wins = [r.x[s : s + n].copy() for s in range(0, r.x.size - n + 1, n)]
        for w in wins[:5]:
            analyse(w, fs=r.fs, lead="II")
        ts, cpu = [], []
        for _ in range(repeats):
            for w in wins:
                c0 = time.thread_time_ns()
                t0 = time.perf_counter_ns()
                analyse(w, fs=r.fs, lead="II")
                ts.append((time.perf_counter_ns() - t0) / 1e6)
                cpu.append((time.thread_time_ns() - c0) / 1e6)
        out[f"{r.fs:g} Hz ({r.name})"] = {
            "windows": len(ts),
            "median_ms": percentile(ts, 50),
            "p90_ms": percentile(ts, 90),
            "cpu_median_ms": percentile(cpu, 50),
        }
    return out


def _stream_hop(r: _Rec, *, chunk_s: float = 0.2, repeats: int = 5) -> dict[str, Any]:
    """What a stream session adds per 2-s hop: the tracker's detector on the new samples (pushed in
    ``chunk_s`` chunks) plus the window summary."""
    from kmerl_edge.rhythm import RhythmTracker

    hop, ch, win = int(round(2 * r.fs)), int(round(chunk_s * r.fs)), int(round(10 * r.fs))
    ts, cpu = [], []
    for _ in range(repeats):
        tr = RhythmTracker(fs=r.fs, lead="I")
        for s in range(0, r.x.size - hop + 1, hop):
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            for c in range(s, s + hop, ch):
                tr.push(r.x[c : min(c + ch, s + hop)])
            tr.window(win, t_end=(s + hop) / r.fs)
            ts.append((time.perf_counter_ns() - t0) / 1e6)
            cpu.append((time.thread_time_ns() - c0) / 1e6)
    return {
        "record": r.name,
        "fs": r.fs,
        "chunk_s": chunk_s,
        "hops": len(ts),
        "median_ms": percentile(ts, 50),
        "cpu_median_ms": percentile(cpu, 50),
    }


# ----------------------------------------------------------------------------------------------- run
def run_rhythm(data: Path, *, detectors: Sequence[str] = ("kmerl", "xqrs", "neurokit2")) -> dict[str, Any]:
    """Every part above; a JSON-ready dict."""
    data = Path(data)
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
    mit = _mitbih(data)
    c19 = _cpsc2019(data)
    c21 = {"I": _cpsc2021(data, 0), "II": _cpsc2021(data, 1)}
    held = holter_test_patients()
    res: dict[str, Any] = {"kind": "rhythm", "machine": machine_info(1), "tolerance_s": TOL_S}
    res["beats"] = {
        "MIT-BIH 100": _beats_part(mit, detectors),
        "CPSC-2019 (50 clips)": _beats_part(c19, detectors),
        "CPSC-2019 even clips (tuning)": _beats_part(c19[0::2], ("kmerl",)),
        "CPSC-2019 odd clips (held out)": _beats_part(c19[1::2], ("kmerl",)),
        **{
            f"MIT-BIH 100 resampled to {f} Hz": _beats_part([_resampled(mit[0], f)], ("kmerl",))
            for f in (100, 128, 250, 500, 1000)
        },
        "CPSC-2021 lead I": _beats_part(c21["I"], detectors),
        "CPSC-2021 lead II": _beats_part(c21["II"], detectors),
        **{
            f"CPSC-2021 lead {lead}, {part}": _beats_part(
                [r for r in c21[lead] if (_holter_patient(r.name) in held) == (part != "training patients")],
                ("kmerl",),
            )
            for lead in ("I", "II")
            for part in ("training patients", f"held-out patients ({', '.join(sorted(held, key=int))})")
        },
    }
    # every missed / false beat of kmerl, per record (the error analysis behind the totals)
    res["kmerl_per_record"] = {
        "CPSC-2019": _per_record(c19),
        **{f"CPSC-2021 lead {lead}": _per_record(c21[lead]) for lead in ("I", "II")},
    }
    res["kmerl_error_kinds"] = _error_kind_table(res["kmerl_per_record"], c19)
    res["holter_held_out_patients"] = sorted(held, key=int)
    unread: dict[str, str] = {}
    res["af_evidence"] = {
        "CPSC-2021 lead I (10-s windows)": _af_part(_af_windows(c21["I"]), "I"),
        "CPSC-2021 lead II (10-s windows)": _af_part(_af_windows(c21["II"]), "II"),
        "12-lead recordings, lead I (first 10 s)": _af_part(_twelve_lead(data, unread), "I"),
    }
    res["af_evidence_unreadable"] = unread
    five = [_Rec(f"CPSC-2019, {len(c19)} clips", np.concatenate([r.x for r in c19]), 500.0, np.zeros(0))]
    short = _Rec(mit[0].name, mit[0].x[: int(300 * mit[0].fs)], mit[0].fs, mit[0].ref)
    res["latency_per_10s_window"] = _latency(
        mit + five + [c21["I"][0]] + [_resampled(short, f) for f in (128, 250, 500, 1000)]
    )
    res["stream_per_2s_hop"] = _stream_hop(c21["I"][0])
    res["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return res


def _f(v: Any, pct: bool = False, nd: int = 3) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.2f} %" if pct else f"{v:.{nd}f}"


def rhythm_markdown(res: dict[str, Any]) -> str:
    lines = ["## Rhythm: R-peak detection (150 ms), heart rate, AF evidence", ""]
    lines += ["| data | detector | Se | PPV | HR error median (bpm) | HR windows covered |", "| --- | --- | --- | --- | --- | --- |"]
    for data, per in res["beats"].items():
        for det, m in per.items():
            lines.append(
                f"| {data} | {det} | {_f(m['se'], True)} | {_f(m['ppv'], True)} | "
                f"{_f(m['hr_abs_err_bpm_median'], nd=2)} | {_f(m['hr_coverage'], True)} |"
            )
    per = res.get("kmerl_per_record", {})
    if per.get("CPSC-2021 lead I"):
        held = set(res.get("holter_held_out_patients", ()))
        lines += ["", "kmerl per CPSC-2021 record (held-out patients marked *):", "",
                  "| record | beats | lead I Se | lead I PPV | lead I FN / FP | lead II Se | lead II PPV | lead II FN / FP |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, a in per["CPSC-2021 lead I"].items():
            b = per["CPSC-2021 lead II"][name]
            star = " *" if _holter_patient(name) in held else ""
            lines.append(
                f"| {name}{star} | {a['tp'] + a['fn']} | {_f(a['se'], True)} | {_f(a['ppv'], True)} | {a['fn']} / {a['fp']} | "
                f"{_f(b['se'], True)} | {_f(b['ppv'], True)} | {b['fn']} / {b['fp']} |"
            )
    kinds = res.get("kmerl_error_kinds")
    if kinds:
        lines += ["", "kmerl's missed (FN) and false (FP) beats by kind (`benchmarks.rhythm.error_kinds`):", "",
                  "| data | " + " | ".join(f"FN {k}" for k in FN_KINDS) + " | " + " | ".join(f"FP {k}" for k in FP_KINDS) + " |",
                  "| --- |" + " --- |" * (len(FN_KINDS) + len(FP_KINDS))]
        for data, m in kinds.items():
            lines.append(f"| {data} | " + " | ".join(str(m["fn"][k]) for k in FN_KINDS) + " | "
                         + " | ".join(str(m["fp"][k]) for k in FP_KINDS) + " |")
    lines += ["", "| data | positive | windows (pos / non-AF) | AUC rr_irregularity [95 % CI] | AUC share ΔRR > 50 ms [95 % CI] |",
              "| --- | --- | --- | --- | --- |"]
    for data, per in res["af_evidence"].items():
        for pos in ("AF", "AFL"):
            m = per.get(pos)
            if not m:
                continue
            a, b = m["rr_irregularity"], m["anchor_share_drr_gt_50ms"]
            lines.append(
                f"| {data} | {pos} | {a['n_pos']} / {a['n_neg']} | {_f(a['auc'])} [{_f(a['ci95'][0])}, {_f(a['ci95'][1])}] | "
                f"{_f(b['auc'])} [{_f(b['ci95'][0])}, {_f(b['ci95'][1])}] |"
            )
    lines += ["", "| signal | windows | analyse() median ms (wall) | p90 ms | median ms (CPU time) |",
              "| --- | --- | --- | --- | --- |"]
    for k, m in res["latency_per_10s_window"].items():
        lines.append(
            f"| {k} | {m['windows']} | {_f(m['median_ms'])} | {_f(m['p90_ms'])} | {_f(m.get('cpu_median_ms'))} |"
        )
    sh = res.get("stream_per_2s_hop")
    if sh:
        lines.append(
            f"\nStream: rhythm tracking adds {_f(sh['median_ms'])} ms (CPU {_f(sh['cpu_median_ms'])} ms) per 2-s hop "
            f"at {sh['fs']:g} Hz ({sh['chunk_s']:g}-s chunks, median of {sh['hops']})."
        )
    if res.get("load_average"):
        lines.append(f"\nLoad average during the run: {', '.join(str(v) for v in res['load_average'])}.")
    return "\n".join(lines) + "\n"


def tolerance_sweep(
    data: Path,
    *,
    tolerances_s: Sequence[float] = (0.075, 0.1, 0.15, 0.25),
    detectors: Sequence[str] = ("kmerl", "xqrs", "neurokit2"),
    n_boot: int = 2000,
) -> dict[str, Any]:
    """CPSC-2019 Se / PPV (95 % intervals over clips) of each detector at several matching tolerances (the standard is 150 ms).

    What share of the errors is *placement* (a beat found but placed more than 150 ms from the
    reference: on wide or fragmented complexes the references and a detector may pick different
    deflections) and what share is a beat missed or invented at any tolerance."""
    c19 = _cpsc2019(Path(data))
    out: dict[str, Any] = {"kind": "rhythm_tolerance_sweep", "data": "CPSC-2019 (50 clips)", "detectors": {}}
    for name in detectors:
        dets = [DETECTORS[name](r.x, r.fs) for r in c19]
        rows = {}
        for tol in tolerances_s:
            per = np.array(
                [_compare(r.ref, d, r.fs, lo=r.lo, hi=r.x.size if r.hi is None else r.hi, tol_s=tol) for r, d in zip(c19, dets)],
                dtype=np.int64,
            )
            tp, fn, fp = (int(v) for v in per.sum(axis=0))
            # 95 % intervals resampling clips (errors cluster in a few clips), seeded
            rng = np.random.default_rng(0)
            boot = per[rng.integers(0, len(per), size=(n_boot, len(per)))].sum(axis=1).astype(np.float64)
            se_b = boot[:, 0] / np.maximum(boot[:, 0] + boot[:, 1], 1)
            ppv_b = boot[:, 0] / np.maximum(boot[:, 0] + boot[:, 2], 1)
            rows[f"{tol:g}"] = {
                "tp": tp, "fn": fn, "fp": fp, "se": tp / (tp + fn), "ppv": tp / (tp + fp),
                "se_ci95": [float(v) for v in np.percentile(se_b, [2.5, 97.5])],
                "ppv_ci95": [float(v) for v in np.percentile(ppv_b, [2.5, 97.5])],
                "clips_with_errors": int(((per[:, 1] + per[:, 2]) > 0).sum()),
            }
        out["detectors"][name] = rows
    out["clips"] = len(c19)
    out["bootstrap"] = {"resamples": n_boot, "unit": "clip", "seed": 0}
    return out


def tolerance_markdown(res: dict[str, Any]) -> str:
    def ci(v: list[float]) -> str:
        return f"[{100 * v[0]:.2f}, {100 * v[1]:.2f}]"

    lines = [
        "| detector | tolerance (s) | TP / FN / FP | Se [95 % CI] | PPV [95 % CI] | clips with an error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in res["detectors"].items():
        for tol, m in rows.items():
            lines.append(
                f"| {name} | {tol} | {m['tp']} / {m['fn']} / {m['fp']} | {_f(m['se'], True)} {ci(m['se_ci95'])} "
                f"| {_f(m['ppv'], True)} {ci(m['ppv_ci95'])} | {m['clips_with_errors']} of {res['clips']} |"
            )
    return "\n".join(lines) + "\n"


def hr_trust(data: Path, *, detectors: Sequence[str] = ("kmerl", "xqrs", "neurokit2"), wrong: float = 0.1) -> dict[str, Any]:
    """How often a reported heart rate is wrong: per data set and detector, the 10-s windows with a
    reference rate, those given a rate (``kmerl``: :func:`~kmerl_edge.rhythm.analyse`, which withholds it on
    flat, noisy or too-few-beat windows; the anchors: their beats, no quality gate) and, of those, the
    share more than ``wrong`` (10 %) off the reference beats' rate, with a Wilson 95 % interval."""
    from scipy.stats import binomtest

    data = Path(data)
    held = holter_test_patients()
    c21 = {lead: _cpsc2021(data, i) for lead, i in (("I", 0), ("II", 1))}
    sets = {
        "MIT-BIH 100": _mitbih(data),
        "CPSC-2019 (50 clips)": _cpsc2019(data),
        **{
            f"CPSC-2021 lead {lead}, {part}": [r for r in c21[lead] if (_holter_patient(r.name) in held) == (part == "held-out patients")]
            for lead in ("I", "II")
            for part in ("training patients", "held-out patients")
        },
    }
    out: dict[str, Any] = {"kind": "rhythm_hr_trust", "wrong_if_off_by_more_than": wrong, "sets": {}}
    for label, recs in sets.items():
        rows = {}
        for name in detectors:
            windows = given = bad = 0
            for r in recs:
                det = np.zeros(0, dtype=np.int64) if name == "kmerl" else np.sort(DETECTORS[name](r.x, r.fs))
                for hr_ref, hr in _window_rates(r, name, det):
                    windows += 1
                    if hr is not None:
                        given += 1
                        bad += int(abs(hr - hr_ref) > wrong * hr_ref)
            ci = binomtest(bad, given).proportion_ci(method="wilson") if given else None
            rows[name] = {
                "windows": windows,
                "given": given,
                "wrong": bad,
                "wrong_share": bad / given if given else None,
                "wrong_share_ci95": None if ci is None else [float(ci.low), float(ci.high)],
            }
        out["sets"][label] = rows
    return out


def hr_trust_markdown(res: dict[str, Any]) -> str:
    pct = round(100 * res["wrong_if_off_by_more_than"])
    lines = [
        f"| data | detector | windows | rate given | of them > {pct} % off [95 % CI] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, rows in res["sets"].items():
        for name, m in rows.items():
            ci = m["wrong_share_ci95"]
            share = "–" if ci is None else f"{m['wrong']} ({_f(m['wrong_share'], True)}) [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
            lines.append(f"| {label} | {name} | {m['windows']} | {m['given']} | {share} |")
    return "\n".join(lines) + "\n"


_USAGE = (
    "usage: python -m benchmarks.rhythm --refresh-error-kinds DATA RESULTS | --tolerance-sweep DATA OUT.json "
    "| --hr-trust DATA OUT.json "
    "(the full run: kmerl-bench rhythm)"
)

if __name__ == "__main__":  # python -m benchmarks.rhythm --refresh-error-kinds DATA RESULTS
    import json
    import sys

    if len(sys.argv) != 4 or sys.argv[1] not in ("--refresh-error-kinds", "--tolerance-sweep", "--hr-trust"):
        raise SystemExit(_USAGE)
    if sys.argv[1] == "--refresh-error-kinds":
        refresh_error_kinds(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "--hr-trust":
        trust = hr_trust(Path(sys.argv[2]))
        Path(sys.argv[3]).write_text(json.dumps(trust, indent=2) + "\n")
        print(hr_trust_markdown(trust))
    else:
        sweep = tolerance_sweep(Path(sys.argv[2]))
        Path(sys.argv[3]).write_text(json.dumps(sweep, indent=2) + "\n")
        print(tolerance_markdown(sweep))
