"""torch and ONNX Runtime backends, the classify API, on real PTB-XL windows."""

import numpy as np
import pytest

import kmerl_edge as ke

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def windows(records_dir):
    out = []
    for name in ("00001_hr", "00008_hr", "00017_hr", "E07500"):
        r = ke.read_record(records_dir / name)
        out.append(ke.preprocess(r.signal, fs=r.fs, leads=r.leads).windows[0])
    return np.stack(out)  # (4, 12, 5000) real windows


@pytest.mark.parametrize("leads", [["I"], ["II"], ["I", "II"], ["I", "II", "V2"], list(ke.LEADS)])
def test_onnxruntime_matches_torch_on_real_windows(test_bundle_path, windows, leads):
    t = ke.load(test_bundle_path, backend="torch")
    o = ke.load(test_bundle_path, backend="onnxruntime")
    ids = ke.lead_ids(leads)
    x = np.ascontiguousarray(windows[:, ids])
    a = t.backend.run(x, ids)
    b = o.backend.run(x, ids)
    assert a.shape == (4, 11)
    assert np.abs(a - b).max() <= 1e-4
    # batch 1 too (dynamic batch axis)
    assert np.abs(o.backend.run(x[:1], ids) - a[:1]).max() <= 1e-4


def test_auto_picks_an_available_backend(test_bundle_path):
    clf = ke.load(test_bundle_path)
    assert clf.backend_name in {"onnxruntime", "torch"}


def test_unknown_backend_and_missing_artifact_are_named_errors(test_bundle_path):
    with pytest.raises(ke.BackendUnavailableError, match="unknown backend"):
        ke.load(test_bundle_path, backend="tpu")
    with pytest.raises(ke.BackendUnavailableError, match="int8"):
        ke.load(test_bundle_path, backend="onnxruntime-int8")


def test_predict_returns_probabilities_for_every_label_set(test_bundle_path, records_dir):
    clf = ke.load(test_bundle_path, backend="onnxruntime")
    r = ke.read_record(records_dir / "00001_hr")
    pred = clf.predict(r.signal[:1], fs=r.fs, leads=["I"])
    assert set(pred.by_label_set) == set(clf.label_sets)
    assert set(pred.scores) == {c for cs in clf.label_sets.values() for c in cs}
    assert all(0.0 <= p <= 1.0 for p in pred.scores.values())
    assert pred.quality.overall == "good" and pred.leads == ("I",)
    assert not pred.trained_model and "meaningless" in pred.notes[0]
    only = clf.predict(r.signal[:1], fs=r.fs, leads=["I"], label_set="rhythm")
    assert set(only.by_label_set) == {"rhythm"}
    with pytest.raises(ke.UnknownLabelSetError):
        clf.predict(r.signal[:1], fs=r.fs, leads=["I"], label_set="nope")


def test_predict_drops_a_flat_lead_and_scores_the_rest(test_bundle_path, records_dir):
    clf = ke.load(test_bundle_path, backend="torch")
    r = ke.read_record(records_dir / "00001_hr")
    x = r.signal[:2].copy()
    x[1] = 0.0
    pred = clf.predict(x, fs=r.fs, leads=["I", "II"])
    ref = clf.predict(r.signal[:1], fs=r.fs, leads=["I"])
    assert pred.leads == ("I",) and pred.quality.dropped_leads == ("II",)
    assert pred.scores == pytest.approx(ref.scores, abs=1e-6)


def test_long_recording_scores_are_the_mean_of_windows(test_bundle_path, records_dir):
    clf = ke.load(test_bundle_path, backend="torch")
    r = ke.read_record(records_dir / "00001_hr")
    x = np.concatenate([r.signal[:1], ke.read_record(records_dir / "00008_hr").signal[:1]], axis=1)
    pred = clf.predict(x, fs=r.fs, leads=["I"])
    assert len(pred.window_scores) == 3
    c = "normal ECG"
    assert pred.scores[c] == pytest.approx(np.mean([w[c] for w in pred.window_scores]))


def test_device_gain_does_not_change_scores(test_bundle_path, records_dir):
    clf = ke.load(test_bundle_path, backend="torch")
    r = ke.read_record(records_dir / "00001_hr")
    a = clf.predict(r.signal[:1], fs=r.fs, leads=["I"]).scores
    for gain in (0.3, 3.0):  # patch electrode spacing / amplifier gain differences
        b = clf.predict(r.signal[:1] * gain, fs=r.fs, leads=["I"]).scores
        assert a == pytest.approx(b, abs=1e-4)


def test_signal_in_wrong_units_is_caught_not_scored(test_bundle_path, records_dir):
    clf = ke.load(test_bundle_path, backend="torch")
    r = ke.read_record(records_dir / "00001_hr")
    with pytest.raises(ke.NoUsableLeadsError, match="out_of_range"):
        clf.predict(r.signal[:1] * 1000.0, fs=r.fs, leads=["I"])  # µV passed as mV
