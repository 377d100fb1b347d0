"""``predict`` and ``stream`` of the shipped bundles give, bit for bit, the outputs pinned here.

Speed work on the per-call path (preprocessing, rhythm features, fusion, bookkeeping) must not change a
single number: every score, rhythm field, quality flag, note, route and event of real fixture records is
reduced to an exact canonical text (floats as ``float.hex``) and compared, part by part, with the digests
stored in ``tests/fixtures/predict_golden.json`` — written by the code before that work.

The AF fusion is pinned to ``tests/fixtures/predict_golden_af_fusion.json`` (a copy of the one the
bundles shipped when the digests were written), so refitting a bundle's fusion does not move these
digests; the model artifacts themselves are part of what is pinned. The digests hold for this
machine's numpy / scipy / ONNX Runtime builds (other CPU kernels may round differently); rewrite them,
only for such a change and never to hide a changed number, with ``python tests/test_predict_golden.py --write``.

``tests/fixtures/predict_golden_without_stack.json`` holds the digests written before the bundles carried a
superclass stack (``superclass_stack.json``): with the stack switched off every output — AF, rhythm, events,
quality, routes and the query network's / head's superclass scores — must still be those, bit for bit
(the stack changes the superclass scores only, and a bundle without it behaves exactly as before).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._af_fusion import AfFusion
from kmerl_edge._preprocess import resample_signal

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDS = FIXTURES / "records"
GOLDEN = FIXTURES / "predict_golden.json"
GOLDEN_WITHOUT_STACK = FIXTURES / "predict_golden_without_stack.json"
FUSION = FIXTURES / "predict_golden_af_fusion.json"
BACKEND = "onnxruntime-int8"


def canon(obj: Any) -> Any:
    """An exact, JSON-ready form: floats as hex, arrays and tuples as lists, dataclasses as dicts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canon(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): canon(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return canon(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj).hex()
    if isinstance(obj, (list, tuple)) or hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, str):
        return [canon(v) for v in obj]
    return obj


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(canon(obj), sort_keys=True).encode()).hexdigest()[:20]


def prediction_parts(p: ke.Prediction) -> dict[str, str]:
    return {
        "scores": digest(p.by_label_set),
        "window_scores": digest([dict(w) for w in p.window_scores]),
        "window_starts": digest(p.window_starts_s),
        "quality": digest(p.quality),
        "rhythm": digest(p.rhythm),
        "window_rhythm": digest(list(p.window_rhythm)),
        "coverage": digest(p.coverage),
        "routing": digest([p.leads, p.leads_given, p.dropped, [dataclasses.replace(r, bundle=Path(r.bundle).name)
                                                               for r in p.routes],
                           Path(p.bundle).name, p.backend, p.trained_model]),
        "notes": digest(p.notes),
    }


def stream_parts(sess: Any, results: list[Any]) -> dict[str, str]:
    res = [dataclasses.replace(r, latency_ms=0.0, bundle=Path(r.bundle).name) for r in results]
    return {
        "windows": digest([{k: v for k, v in canon(r).items() if k != "rhythm"} for r in res]),
        "window_rhythm": digest([r.rhythm for r in res]),
        "events": digest(list(sess.events())),
    }


def _classifier() -> ke.Classifier:
    clf = ke.load(backend=BACKEND)
    fusion = AfFusion.load(FUSION)
    clf.use_af_fusion(fusion)
    comp = clf.companion
    assert comp is not None
    comp.use_af_fusion(fusion)
    return clf


def _rec(name: str, leads: list[str] | None = None) -> tuple[np.ndarray, float, list[str]]:
    r = ke.read_record(RECORDS / name)
    names = list(leads or r.leads)
    return np.asarray(r.signal[[list(r.leads).index(x) for x in names]]), float(r.fs), names


def _predict_lead_i_250hz(clf: ke.Classifier) -> ke.Prediction:
    x, fs, leads = _rec("00001_hr", ["I"])
    return clf.predict(resample_signal(x, fs_in=fs, fs_out=250.0).astype(np.float32), fs=250.0, leads=leads)


def _predict_flat_and_gap(clf: ke.Classifier) -> ke.Prediction:
    x, fs, leads = _rec("s0010_re_10s", ["I", "II", "V2"])
    x = np.concatenate([x, x], axis=1)
    x[2] = 0.0  # V2 flat: dropped
    x[:, 9000:9500] = np.nan  # a gap: two stretches of 9 and 10.5 s
    return clf.predict(x, fs=fs, leads=leads)


def _stream_af(clf: ke.Classifier) -> dict[str, str]:
    x, fs, leads = _rec("data_101_6")
    sess = clf.stream(fs=fs, leads=leads, synchronous=True)
    out: list[Any] = []
    for a in range(0, x.shape[1], 777):  # chunks that do not align with the hop
        out += sess.push(x[:, a : a + 777])
    out += sess.close()
    return stream_parts(sess, out)


def _pred(name: str, leads: list[str] | None = None) -> Callable[[ke.Classifier], dict[str, str]]:
    def run(clf: ke.Classifier) -> dict[str, str]:
        x, fs, names = _rec(name, leads)
        return prediction_parts(clf.predict(x, fs=fs, leads=names))

    return run


CASES: dict[str, Callable[[ke.Classifier], dict[str, str]]] = {
    "ptbxl_500hz_I": _pred("00001_hr", ["I"]),
    "ptbxl_500hz_I_II_V2": _pred("00001_hr", ["I", "II", "V2"]),
    "ptbxl_500hz_12_leads": _pred("00017_hr"),
    "georgia_500hz_II": _pred("E07500", ["II"]),
    "ptbxl_250hz_I": lambda clf: prediction_parts(_predict_lead_i_250hz(clf)),
    "cpsc2021_af_200hz_I_II": _pred("data_101_6"),
    "mitdb_360hz_120s_II": _pred("mitdb100_120s"),
    "ptb_1000hz_flat_lead_and_gap": lambda clf: prediction_parts(_predict_flat_and_gap(clf)),
    "stream_cpsc2021_af_200hz": _stream_af,
}


@pytest.fixture(scope="module")
def clf() -> ke.Classifier:
    pytest.importorskip("onnxruntime")
    return _classifier()


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_are_bit_identical_to_the_pinned_ones(clf: ke.Classifier, case: str) -> None:
    want = json.loads(GOLDEN.read_text())["cases"][case]
    got = CASES[case](clf)
    assert got == want, f"{case}: changed parts {[k for k in want if got.get(k) != want[k]]}"


@pytest.fixture(scope="module")
def clf_without_stack() -> ke.Classifier:
    pytest.importorskip("onnxruntime")
    c = _classifier()
    c.use_superclass_stack(None)
    assert c.companion is not None
    c.companion.use_superclass_stack(None)
    return c


@pytest.mark.parametrize("case", sorted(CASES))
def test_without_the_superclass_stack_outputs_are_those_pinned_before_it(clf_without_stack: ke.Classifier,
                                                                          case: str) -> None:
    want = json.loads(GOLDEN_WITHOUT_STACK.read_text())["cases"][case]
    got = CASES[case](clf_without_stack)
    assert got == want, f"{case}: changed parts {[k for k in want if got.get(k) != want[k]]}"


def test_the_digests_see_a_change_in_the_last_bit() -> None:
    p = {"atrial fibrillation": 0.25}
    assert digest(p) != digest({"atrial fibrillation": float(np.nextafter(0.25, 1.0))})


if __name__ == "__main__" and "--write" in sys.argv:
    c = _classifier()
    GOLDEN.write_text(json.dumps({"backend": BACKEND, "cases": {k: f(c) for k, f in sorted(CASES.items())}},
                                 indent=1) + "\n")
    print(f"wrote {GOLDEN}")
