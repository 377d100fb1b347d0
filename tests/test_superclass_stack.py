"""The bundle's superclass stack (superclass logits + classical ECG measurements): hashed JSON, applied to
the superclass rows only, the same way by predict, stream and run_windows; refused when malformed, tampered
with or naming classes the bundle lacks; fitted on training records only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge import BundleError, TamperedArtifactError, preprocess
from kmerl_edge._bundle import add_artifacts
from kmerl_edge._errors import ExportError
from kmerl_edge._measure import GLOBAL, PER_LEAD
from kmerl_edge._superclass_stack import STACK_FILE, SuperclassStack, stack_measurements
from kmerl_edge.stream import demo_record_path

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
SC = "ptbxl_superclass"


def _stack(classes: tuple[str, ...], **kw) -> SuperclassStack:
    c, p, g = len(classes), len(PER_LEAD), len(GLOBAL)
    n = c + 12 * p + 12 + g
    rng = np.random.default_rng(0)
    d = dict(label_set=SC, classes=classes, logit_mean=np.zeros(c), logit_std=np.ones(c),
             lead_mean=np.zeros((12, p)), lead_std=np.ones((12, p)), global_mean=np.zeros(g),
             global_std=np.array([1.0, 30.0, 20.0, 1.0, 1.0, 1.0]), coef=rng.normal(scale=0.3, size=(c, n)),
             intercept=np.zeros(c))
    d.update(kw)
    return SuperclassStack(**d)  # type: ignore[arg-type]


def _classes() -> tuple[str, ...]:
    m = json.loads((BUNDLE / "manifest.json").read_text())
    return tuple(m["label_sets"][SC])


@pytest.fixture(scope="module")
def stacked(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stacked") / "bundle"
    shutil.copytree(BUNDLE, out)
    src = _stack(_classes()).save(out.parent / STACK_FILE)
    add_artifacts(out, {STACK_FILE: (src, {"kind": "stack", "backend": "none", "precision": "fp64"})})
    return out


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    rec = kmerl_edge.read_record(demo_record_path())  # real Holter excerpt, 200 Hz, I + II
    return rec.signal.astype(np.float32)


def test_json_round_trip_and_refusals(tmp_path):
    s = _stack(_classes())
    back = SuperclassStack.from_bytes(s.save(tmp_path / STACK_FILE).read_bytes())
    assert back.classes == s.classes and np.array_equal(back.coef, s.coef) and back.clip == s.clip
    for bad in ({"format": "pickle"}, {"per_lead": ["r_amp"]}, {"leads": ["I"]}, {"coef": [[0.0]]},
                {"lead_std": np.zeros((12, len(PER_LEAD))).tolist()}):
        d = {**s.to_dict(), **bad}
        with pytest.raises(BundleError):
            SuperclassStack.from_dict(d)
    d = s.to_dict()
    d["intercept"][0] = float("nan")
    with pytest.raises(BundleError, match="non-finite"):
        SuperclassStack.from_bytes(json.dumps(d).encode())
    with pytest.raises(BundleError, match="JSON"):
        SuperclassStack.from_bytes(b"\x80not json")


def test_predict_changes_the_superclass_rows_only(stacked, ecg):
    clf = kmerl_edge.load(stacked, backend="torch")
    plain = kmerl_edge.load(BUNDLE, backend="torch")
    assert clf.superclass_stack is not None and plain.superclass_stack is None and clf.needs_rhythm
    x = ecg[:, :4000]
    p = clf.predict(x, fs=200.0, leads=["I", "II"])
    q = plain.predict(x, fs=200.0, leads=["I", "II"])
    for ls, scores in q.by_label_set.items():
        if ls != SC:
            assert p.by_label_set[ls] == scores  # bit for bit
    assert p.by_label_set[SC] != q.by_label_set[SC]
    # the stack: the model's superclass logits + the measurements on the beats predict reports per window
    pre = preprocess(x, fs=200.0, leads=["I", "II"], config=clf.bundle.preprocess_config)
    logits = clf.backend.run(pre.windows, pre.lead_ids).astype(np.float64)
    idx = clf.bundle.all_queries()[1]
    cols = [idx.index((SC, c)) for c in clf.superclass_stack.classes]
    per, glob = stack_measurements(pre.windows, pre.lead_ids, fs=500.0, rhythm=list(p.window_rhythm))
    ok = glob[:, GLOBAL.index("measured")] == 1.0
    assert ok.any()  # beats found on the real record
    assert np.isnan(per[:, 2:]).all() and np.isfinite(per[ok][:, :2]).all()  # only the leads given
    want = clf.superclass_stack.probability(logits[:, cols], per, glob, pre.lead_ids).mean(axis=0)
    got = [p.by_label_set[SC][c] for c in clf.superclass_stack.classes]
    assert np.allclose(got, want, atol=1e-9)
    unstacked = clf.run_windows(pre.windows, pre.lead_ids, fuse=False)
    assert np.allclose(unstacked, plain.run_windows(pre.windows, pre.lead_ids, fuse=False))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_stream_reports_the_same_superclass_scores_as_predict(stacked, ecg, backend):
    pytest.importorskip("onnxruntime")
    clf = kmerl_edge.load(stacked, backend=backend)
    x = ecg[:, : 20 * 200]
    s = clf.stream(fs=200.0, leads=["I", "II"], hop_s=5.0, synchronous=True)
    res = s.push(x, 0.0) + s.close()
    assert res
    for r in res:
        a = int(round(r.t_start * 200))
        want = clf.predict(x[:, a : a + 2000], fs=200.0, leads=["I", "II"]).by_label_set[SC]
        for c, v in want.items():
            assert r.scores[c] == pytest.approx(v, abs=1e-5)


def test_a_flat_window_falls_back_on_the_logits():
    pre = SimpleNamespace(windows=np.zeros((1, 1, 5000), np.float32), lead_ids=np.array([0]))
    per, glob = stack_measurements(pre.windows, pre.lead_ids, fs=500.0)
    assert glob[0, GLOBAL.index("measured")] == 0.0 and np.isnan(per).all()
    s = _stack(_classes())
    p = s.probability(np.zeros((1, len(s.classes))), per, glob, pre.lead_ids)
    assert np.isfinite(p).all()


def test_tampered_or_mismatched_stack_is_refused(stacked, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(stacked, out)
    d = json.loads((out / STACK_FILE).read_text())
    d["intercept"][0] = 5.0
    (out / STACK_FILE).write_text(json.dumps(d))
    with pytest.raises(TamperedArtifactError):
        kmerl_edge.load(out, backend="torch")
    other = tmp_path / "c"
    shutil.copytree(BUNDLE, other)
    src = _stack(("normal ECG", "not a class of this bundle")).save(tmp_path / STACK_FILE)
    add_artifacts(other, {STACK_FILE: (src, {"kind": "stack", "backend": "none", "precision": "fp64"})})
    with pytest.raises(BundleError, match="not a class"):
        kmerl_edge.load(other, backend="torch")


def test_only_training_records_are_fitted_on():
    from export._stack import check_training_records

    def rec(rid: str, split: str, patient: str) -> SimpleNamespace:
        return SimpleNamespace(record_id=rid, split=split, patient=patient)

    check_training_records([rec("ptbxl:1", "train", "p1"), rec("ptbxl:2", "val", "p2")], {"p1", "p2"})
    with pytest.raises(ExportError, match="ptbxl:3"):  # PTB-XL fold 10
        check_training_records([rec("ptbxl:1", "train", "p1"), rec("ptbxl:3", "test", "p1")], {"p1"})
    with pytest.raises(ExportError, match="ptbxl:2"):  # a held-out patient's record
        check_training_records([rec("ptbxl:2", "val", "p2")], {"p1"})
    with pytest.raises(ExportError, match="ptbxl:2"):  # without the bundle's patient lists: train split only
        check_training_records([rec("ptbxl:2", "val", "p2")], None)


@pytest.mark.filterwarnings("ignore::Warning")  # sklearn: eight windows leave CV folds without a positive
def test_the_exporter_fits_a_valid_stack_on_real_windows_and_needs_the_head(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from export._probe import ProbeConfig
    from export._stack import add_superclass_stack, fit_superclass_stack
    from kmerl_edge._model import create_model

    with np.load(Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz") as z:
        x, y, classes = z["windows"].astype(np.float32), z["labels"].astype(np.float32), tuple(z["classes"])
    y, classes = y[:, :3], classes[:3]  # the classes with two positive windows among the eight
    monkeypatch.setattr("export._stack.STACK_CS", (0.1,))  # one C: the recipe's grid is what the bundles use
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stack = fit_superclass_stack(create_model("kmerl-test-micro").eval(), [1.0] * len(classes), x, y, classes,
                                     label_set=SC, fs=500.0, probe_config=ProbeConfig(random_subsets=0))
    finally:
        torch.set_num_threads(n)
    back = SuperclassStack.from_bytes(stack.save(tmp_path / STACK_FILE).read_bytes())
    assert back.classes == classes and back.meta["rows"] == 8 * 6 and back.meta["measured_share"] > 0.5
    per, glob = stack_measurements(x[:2, :3], [0, 1, 2], fs=500.0)
    assert np.isfinite(back.probability(np.zeros((2, len(classes))), per, glob, [0, 1, 2])).all()
    with pytest.raises(ExportError, match="no superclass head"):  # the fixture bundle has none
        add_superclass_stack(BUNDLE, tmp_path)


def _head(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(logits, -60.0), 60.0)))


def test_an_inverted_lead_i_falls_back_on_the_logits(ecg):
    # A device that records lead I the other way round (benchmarks.superclass_shift, fold 9: at one lead the
    # stack scored macro AUC 0.42 against the head's 0.57) flips lead I's QRS area and T: the head is reported.
    s = _stack(_classes())
    rng = np.random.default_rng(1)
    for sign, guarded in ((1.0, False), (-1.0, True)):
        for leads, rows in ((["I"], [0]), (["I", "II"], [0, 1])):
            x = ecg[rows, :4000].copy()
            x[0] *= sign
            pre = preprocess(x, fs=200.0, leads=leads)
            per, glob = stack_measurements(pre.windows, pre.lead_ids, fs=500.0)
            logits = rng.normal(size=(len(pre.windows), len(s.classes)))
            p = s.probability(logits, per, glob, pre.lead_ids)
            assert np.array_equal(p, _head(logits)) == guarded, (sign, leads)
    # lead II inverted alone is not lead I: the stack stays on
    x = ecg[:, :4000].copy()
    x[1] *= -1.0
    pre = preprocess(x, fs=200.0, leads=["I", "II"])
    per, glob = stack_measurements(pre.windows, pre.lead_ids, fs=500.0)
    logits = rng.normal(size=(len(pre.windows), len(s.classes)))
    assert not np.allclose(s.probability(logits, per, glob, pre.lead_ids), _head(logits))


def test_the_shipped_bundle_reports_the_head_on_an_inverted_lead_i(ecg):
    pytest.importorskip("onnxruntime")
    clf = kmerl_edge.load(backend="onnxruntime", companion=False)
    head = kmerl_edge.load(backend="onnxruntime", companion=False)
    assert clf.superclass_stack is not None
    head.use_superclass_stack(None)
    x = ecg[:1, :4000]
    assert clf.predict(x, fs=200.0, leads=["I"]).by_label_set[SC] != head.predict(x, fs=200.0, leads=["I"]).by_label_set[SC]
    p = clf.predict(-x, fs=200.0, leads=["I"]).by_label_set[SC]
    assert p == head.predict(-x, fs=200.0, leads=["I"]).by_label_set[SC]
