"""A/B of end-to-end ``predict`` latency per 10-s window, bundle A against bundle B (e.g. before / after the
superclass stack), alternating rounds in one process so both see the same machine load.

    python -m benchmarks.superclass_stack_latency --a /tmp/old --b kmerl_edge --rounds 20 --iters 25

``--a`` / ``--b`` are folders holding ``default_bundle`` and ``default_bundle_12``: 1 lead (I) and 3 leads
(I, II, V2) are scored by ``default_bundle``, 12 leads by ``default_bundle_12``, on the real PTB-XL record
``tests/fixtures/records/00001_hr`` (500 Hz), ONNX Runtime int8, one thread. Median milliseconds per call.

``--code-ab REV`` instead times the measurement code of git revision ``REV`` (``kmerl_edge/_measure.py``,
``kmerl_edge/_superclass_stack.py`` and ``kmerl_edge/_af_fusion.py`` as committed there, imported from a
temporary copy) against the working tree's, in one process, alternating which goes first each round:

    python -m benchmarks.superclass_stack_latency --code-ab main --records 500 --rounds 7

- ``measure_window``, ``stack_measurements`` and the AF fusion's ``window_rhythm_features`` (one window
  per call, as ``predict`` of a 10-s record makes it) on the model windows of the first ``--records`` PTB-XL records of ``../shared/data`` (the test
  fixtures when absent) at 1 lead (I), 3 (I, II, V2) and 12, with the beats of the runtime's analysis of the
  rhythm lead: median microseconds per window, both sides' outputs checked equal bit for bit first;
- end to end: ``predict`` of ``00001_hr`` (as above, ``default_bundle`` / ``default_bundle_12``) with the
  classifier's ``stack_measurements`` and ``window_rhythm_features`` swapped between the two sides: median
  milliseconds per call, and whether both sides' scores are equal.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REC = ROOT / "tests" / "fixtures" / "records" / "00001_hr"
_PTBXL = ROOT.parent / "shared" / "data" / "ptbxl" / "records500"
LEAD_SETS = {1: ("I",), 3: ("I", "II", "V2"), 12: None}  # None: all 12


def old_modules(rev: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """``kmerl_edge._measure``, ``._superclass_stack`` and ``._af_fusion`` as committed at git revision ``rev``,
    imported as a throwaway package whose other imports come from the current ``kmerl_edge``."""
    tmp = Path(tempfile.mkdtemp(prefix="kmerl_code_ab_"))
    package = f"kmerl_code_ab_{uuid.uuid4().hex[:12]}"  # a fresh package per call: no stale module cache
    pkg = tmp / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    ours = ("_measure", "_superclass_stack", "_af_fusion")
    for name in ours:
        src = subprocess.run(["git", "show", f"{rev}:kmerl_edge/{name}.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        src = re.sub(r"from \.(\w+) import", lambda m: f"from {'.' if m[1] in ours else 'kmerl_edge.'}{m[1]} import", src)
        (pkg / f"{name}.py").write_text(src)
    sys.path.insert(0, str(tmp))
    return tuple(importlib.import_module(f"{package}.{mod}") for mod in ours)  # type: ignore[return-value]


def _model_windows(n_records: int) -> dict[int, list[tuple[np.ndarray, np.ndarray, Any]]]:
    """Per lead count: (window (1, L, 5000), lead ids, [rhythm of the window's rhythm lead]) of real records."""
    import kmerl_edge
    from kmerl_edge._leads import LEADS
    from kmerl_edge.rhythm import analyse, choose_rhythm_lead

    heads = sorted(_PTBXL.glob("*/*_hr.hea"))[:n_records] if _PTBXL.is_dir() else []
    paths = [h.with_suffix("") for h in heads] or sorted(p.with_suffix("") for p in REC.parent.glob("0*_hr.hea"))
    out: dict[int, list[tuple[np.ndarray, np.ndarray, Any]]] = {k: [] for k in LEAD_SETS}
    cfg = kmerl_edge.PreprocessConfig()
    for path in paths:
        r = kmerl_edge.read_record(path)
        for k, subset in LEAD_SETS.items():
            leads = r.leads if subset is None else subset
            pre = kmerl_edge.preprocess(r.signal[[r.leads.index(x) for x in leads]], fs=r.fs, leads=leads,
                                        config=cfg)
            names = [LEADS[i] for i in pre.lead_ids]
            lead = choose_rhythm_lead(names)
            for w in pre.windows:
                out[k].append((w[None], pre.lead_ids, [analyse(w[names.index(lead)], fs=cfg.target_fs, lead=lead)]))
    return out


def _swap(classifier_module: ModuleType, fns: tuple[Any, ...]) -> None:
    """The classifier module's stack_measurements and window_rhythm_features (looked up at each call)."""
    setattr(classifier_module, "stack_measurements", fns[1])  # noqa: B010 - a module global, swapped on purpose
    setattr(classifier_module, "window_rhythm_features", fns[2])  # noqa: B010


def code_ab(rev: str, *, n_records: int, rounds: int, iters: int) -> dict[str, Any]:
    import kmerl_edge
    from kmerl_edge import _af_fusion, _classifier, _measure, _superclass_stack
    from kmerl_edge._leads import LEADS

    old_m, old_s, old_f = old_modules(rev)
    sides = {"old": (old_m.measure_window, old_s.stack_measurements, old_f.window_rhythm_features),
             "new": (_measure.measure_window, _superclass_stack.stack_measurements,
                     _af_fusion.window_rhythm_features)}
    data = _model_windows(n_records)
    res: dict[str, Any] = {"rev": rev, "windows": {str(k): len(v) for k, v in data.items()}}
    calls: dict[str, dict[int, list[Any]]] = {"measure_window": {}, "stack_measurements": {},
                                              "window_rhythm_features": {}}
    for k, items in data.items():
        mw, sm = [], []
        for w, ids, rh in items:
            r = rh[0]
            peaks = np.asarray(r.r_peaks if r.usable else (), dtype=np.int64)
            mw.append((w[0], [LEADS[i] for i in ids], peaks))
            sm.append((w, ids, rh))
        calls["measure_window"][k], calls["stack_measurements"][k] = mw, sm
        calls["window_rhythm_features"][k] = sm  # the same (window, lead ids, rhythm); its lead is the same
    fs = 500.0
    same = True
    for k in data:  # both sides' outputs, bit for bit
        for w, names, peaks in calls["measure_window"][k]:
            a, b = (fns[0](w, names, peaks, fs=fs) for fns in sides.values())
            same &= all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
        for w, ids, rh in calls["stack_measurements"][k]:
            a, b = (fns[1](w, ids, fs=fs, rhythm=rh) for fns in sides.values())
            same &= all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
            fa, fb = (fns[2](w, ids, fs=fs, rhythm=rh) for fns in sides.values())
            same &= fa.tobytes() == fb.tobytes()
    res["identical"] = bool(same)
    times: dict[str, dict[str, dict[int, list[float]]]] = {
        stage: {side: {k: [] for k in data} for side in sides} for stage in calls}
    for rnd in range(rounds):
        for side in (("old", "new") if rnd % 2 == 0 else ("new", "old")):
            mw_fn, sm_fn, rf_fn = sides[side]
            for k in data:
                t = times["measure_window"][side][k]
                for w, names, peaks in calls["measure_window"][k]:
                    t0 = time.perf_counter()
                    mw_fn(w, names, peaks, fs=fs)
                    t.append((time.perf_counter() - t0) * 1e6)
                t = times["stack_measurements"][side][k]
                for w, ids, rh in calls["stack_measurements"][k]:
                    t0 = time.perf_counter()
                    sm_fn(w, ids, fs=fs, rhythm=rh)
                    t.append((time.perf_counter() - t0) * 1e6)
                t = times["window_rhythm_features"][side][k]
                for w, ids, rh in calls["window_rhythm_features"][k]:
                    t0 = time.perf_counter()
                    rf_fn(w, ids, fs=fs, rhythm=rh)
                    t.append((time.perf_counter() - t0) * 1e6)
    for stage, by_side in times.items():
        res[f"{stage}_us"] = {side: {str(k): round(float(np.median(v)), 2) for k, v in d.items()}
                              for side, d in by_side.items()}
        res[f"{stage}_us"]["saved"] = {str(k): round(res[f"{stage}_us"]["old"][str(k)] - res[f"{stage}_us"]["new"][str(k)], 2)
                                       for k in data}
    # end to end: predict with the classifier's stack_measurements swapped
    r = kmerl_edge.read_record(REC)
    cases = {1: ("default_bundle", ["I"]), 3: ("default_bundle", ["I", "II", "V2"]),
             12: ("default_bundle_12", list(r.leads))}
    sig = {k: np.ascontiguousarray(r.signal[[list(r.leads).index(x) for x in v[1]], :5000]) for k, v in cases.items()}
    clf = {k: kmerl_edge.load(ROOT / "kmerl_edge" / b, backend="onnxruntime-int8", threads=1, companion=False)
           for k, (b, _) in cases.items()}
    e2e: dict[str, dict[int, list[float]]] = {side: {k: [] for k in cases} for side in sides}
    probs = {}
    try:
        for side in sides:
            _swap(_classifier, sides[side])
            probs[side] = [clf[k].predict(sig[k], fs=r.fs, leads=cases[k][1]).scores for k in cases]
            for k in cases:  # warm up
                for _ in range(10):
                    clf[k].predict(sig[k], fs=r.fs, leads=cases[k][1])
        for rnd in range(rounds * 4):
            for side in (("old", "new") if rnd % 2 == 0 else ("new", "old")):
                _swap(_classifier, sides[side])
                for k in cases:
                    c, leads = clf[k], cases[k][1]
                    for _ in range(iters):
                        t0 = time.perf_counter()
                        c.predict(sig[k], fs=r.fs, leads=leads)
                        e2e[side][k].append((time.perf_counter() - t0) * 1e3)
    finally:
        _swap(_classifier, sides["new"])
    res["predict_identical"] = probs["old"] == probs["new"]
    res["predict_ms"] = {side: {str(k): round(float(np.median(v)), 4) for k, v in d.items()} for side, d in e2e.items()}
    res["predict_ms"]["saved_us"] = {str(k): round((res["predict_ms"]["old"][str(k)] - res["predict_ms"]["new"][str(k)]) * 1e3, 1)
                                     for k in cases}
    res["predict_calls_per_side_and_lead_count"] = rounds * 4 * iters
    return res


def main(argv: list[str] | None = None) -> int:
    import kmerl_edge

    ap = argparse.ArgumentParser(prog="python -m benchmarks.superclass_stack_latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", help="folder holding bundle A's default_bundle and default_bundle_12")
    ap.add_argument("--b", help="likewise bundle B")
    ap.add_argument("--code-ab", metavar="REV", help="time the measurement code of git revision REV against the "
                    "working tree's instead (see above)")
    ap.add_argument("--records", type=int, default=500, help="--code-ab: PTB-XL records (one window each)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.code_ab:
        res = code_ab(a.code_ab, n_records=a.records, rounds=a.rounds, iters=a.iters)
        print(json.dumps(res))
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=1))
        return 0
    if not (a.a and a.b):
        ap.error("--a and --b are required (or --code-ab REV)")
    r = kmerl_edge.read_record(REC)
    cases = {1: ("default_bundle", ["I"]), 3: ("default_bundle", ["I", "II", "V2"]),
             12: ("default_bundle_12", list(r.leads))}
    data = {k: np.ascontiguousarray(r.signal[[list(r.leads).index(x) for x in v[1]], :5000]) for k, v in cases.items()}
    clf = {(side, k): kmerl_edge.load(Path(root) / b, backend="onnxruntime-int8", threads=1, companion=False)
           for side, root in (("a", a.a), ("b", a.b)) for k, (b, _) in cases.items()}
    times: dict[str, dict[int, list[float]]] = {"a": {k: [] for k in cases}, "b": {k: [] for k in cases}}
    for (_side, k), c in clf.items():  # warm up
        for _ in range(10):
            c.predict(data[k], fs=r.fs, leads=cases[k][1])
    for rnd in range(a.rounds):
        for side in (("a", "b") if rnd % 2 == 0 else ("b", "a")):
            for k in cases:
                c, leads = clf[(side, k)], cases[k][1]
                for _ in range(a.iters):
                    t = time.perf_counter()
                    c.predict(data[k], fs=r.fs, leads=leads)
                    times[side][k].append((time.perf_counter() - t) * 1e3)
    res = {side: {str(k): round(float(np.median(v)), 3) for k, v in d.items()} for side, d in times.items()}
    res["b_minus_a"] = {str(k): round(res["b"][str(k)] - res["a"][str(k)], 3) for k in cases}
    res["calls_per_side_and_lead_count"] = a.rounds * a.iters
    print(json.dumps(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
