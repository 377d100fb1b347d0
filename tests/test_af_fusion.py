"""The bundle's AF fusion (model AF logit + rhythm evidence): stored as hashed JSON, applied the same way
by predict, stream and run_windows, refused when malformed or tampered with."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge import BundleError, InvalidArgumentError, TamperedArtifactError, preprocess
from kmerl_edge._af_fusion import (
    AF_FUSION_FILE,
    RHYTHM_FEATURES,
    AfFusion,
    atrial_coherence,
    window_rhythm_features,
)
from kmerl_edge._bundle import add_artifacts
from kmerl_edge.rhythm import analyse
from kmerl_edge.stream import demo_record_path

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
FEATURES = ("model_logit",) + RHYTHM_FEATURES


def _fusion(**kw) -> AfFusion:
    n = len(FEATURES)
    d = dict(label_set="rhythm", class_name="atrial fibrillation", features=FEATURES, mean=np.zeros(n),
             std=np.ones(n), coef=np.array([0.5, 4.0, 1.0, 1.0, 1.0, -0.5, 0.2, -1.0, -2.0]), intercept=-2.0)
    d.update(kw)
    return AfFusion(**d)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fused") / "bundle"
    shutil.copytree(BUNDLE, out)
    src = _fusion().save(out.parent / AF_FUSION_FILE)
    add_artifacts(out, {AF_FUSION_FILE: (src, {"kind": "fusion", "backend": "none", "precision": "fp64"})})
    return out


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    rec = kmerl_edge.read_record(demo_record_path())  # real paroxysmal-AF Holter excerpt, 200 Hz, I + II
    return rec.signal.astype(np.float32)


def test_json_round_trip_and_refusals(tmp_path):
    f = _fusion()
    back = AfFusion.load(f.save(tmp_path / "f.json"))
    assert back.features == f.features and np.allclose(back.coef, f.coef)
    for bad in (("model_logit", "bogus"), ("model_logit", "pnn50", "rr_irregularity"),
                ("rr_irregularity", "model_logit"), ("model_logit", "pnn50", "pnn50")):
        with pytest.raises(BundleError, match="features"):
            _fusion(features=bad, mean=np.zeros(len(bad)), std=np.ones(len(bad)), coef=np.ones(len(bad)))
    d = f.to_dict()
    d["format"] = "pickle"
    with pytest.raises(BundleError, match="format"):
        AfFusion.from_dict(d)


def test_predict_reports_the_fused_af_probability(fused_bundle, ecg):
    clf = kmerl_edge.load(fused_bundle, backend="torch")
    plain = kmerl_edge.load(BUNDLE, backend="torch")
    x = ecg[:, :4000]
    p = clf.predict(x, fs=200.0, leads=["I", "II"])
    q = plain.predict(x, fs=200.0, leads=["I", "II"])
    # every other class is the model's own; AF is the fusion of the model's logit and the rhythm features
    for c in q.scores:
        if c != "atrial fibrillation":
            assert p.scores[c] == pytest.approx(q.scores[c], abs=1e-9)
    pre = preprocess(x, fs=200.0, leads=["I", "II"], config=clf.bundle.preprocess_config)
    logits = clf.backend.run(pre.windows, pre.lead_ids)
    col = clf.bundle.all_queries()[1].index(("rhythm", "atrial fibrillation"))
    # the fusion's beats: each window of the rhythm lead (II) analysed at the device rate, as reported
    rhythm = [analyse(x[1, round(s * 200) : round(s * 200) + 2000], fs=200.0, lead="II") for s in pre.window_starts_s]
    assert list(p.window_rhythm) == [replace(r, beat_times_s=w.beat_times_s) for r, w in zip(rhythm, p.window_rhythm)]
    feats = window_rhythm_features(pre.windows, pre.lead_ids, fs=500.0, rhythm=rhythm)
    assert feats[:, RHYTHM_FEATURES.index("rhythm_ok")].max() == 1.0  # beats found on the real record
    want = clf.af_fusion.probability(logits[:, col].astype(np.float64), feats).mean()
    assert p.scores["atrial fibrillation"] == pytest.approx(want, abs=1e-9)
    assert p.scores["atrial fibrillation"] != pytest.approx(q.scores["atrial fibrillation"], abs=1e-3)


@pytest.mark.parametrize(("backend", "fs"), [("torch", 200.0), ("onnxruntime", 200.0), ("torch", 250.0)])
def test_stream_reports_the_same_fused_probability_as_offline(fused_bundle, ecg, backend, fs):
    pytest.importorskip("onnxruntime")
    from kmerl_edge._preprocess import resample_signal

    clf = kmerl_edge.load(fused_bundle, backend=backend)
    x = ecg[:1, : int(20 * 200)]
    if fs != 200.0:
        x = resample_signal(x.astype(np.float64), fs_in=200.0, fs_out=fs).astype(np.float32)
    n = int(10 * fs)
    s = clf.stream(fs=fs, leads=["I"], hop_s=5.0, synchronous=True)
    res = s.push(x, 0.0) + s.close()
    assert res
    for r in res:
        a = int(round(r.t_start * fs))
        want = clf.predict(x[:, a : a + n], fs=fs, leads=["I"]).scores
        assert r.scores["atrial fibrillation"] == pytest.approx(want["atrial fibrillation"], abs=1e-5)
        pre = preprocess(x[:, a : a + n], fs=fs, leads=["I"], config=clf.bundle.preprocess_config)
        unfused = clf.scores_from_probs(clf.run_windows(pre.windows, pre.lead_ids, fuse=False)[0])[0]
        assert unfused["atrial fibrillation"] != pytest.approx(want["atrial fibrillation"], abs=1e-4)


def test_predict_finds_each_windows_beats_once(fused_bundle, ecg, monkeypatch):
    # one rhythm analysis per window feeds both the reported window rhythm and the AF fusion
    import kmerl_edge._scoring as scoring
    import kmerl_edge.rhythm as rhythm

    calls: list[str] = []
    real = rhythm.analyse

    def counted(*a, **kw):
        calls.append(kw["lead"])
        return real(*a, **kw)

    monkeypatch.setattr(rhythm, "analyse", counted)
    monkeypatch.setattr(scoring, "analyse", counted)
    clf = kmerl_edge.load(fused_bundle, backend="torch")
    p = clf.predict(ecg[:, :2000], fs=200.0, leads=["I", "II"])
    assert calls == ["II"] and p.rhythm == p.window_rhythm[0]
    calls.clear()
    p = clf.predict(ecg[:, :4000], fs=200.0, leads=["I", "II"])
    assert len(calls) == len(p.window_scores) > 1


def test_window_rhythm_features_refuse_a_rhythm_of_another_lead_or_count(ecg):
    pre = preprocess(ecg[:, :2000], fs=200.0, leads=["I", "II"])
    r = analyse(ecg[0, :2000], fs=200.0, lead="I")
    with pytest.raises(InvalidArgumentError, match="lead I"):
        window_rhythm_features(pre.windows, pre.lead_ids, fs=500.0, rhythm=[r])
    with pytest.raises(InvalidArgumentError, match="2 rhythm analyses for 1 windows"):
        window_rhythm_features(pre.windows, pre.lead_ids, fs=500.0, rhythm=[None, None])


def test_tampered_fusion_is_refused(fused_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(fused_bundle, out)
    d = json.loads((out / AF_FUSION_FILE).read_text())
    d["intercept"] = 5.0
    (out / AF_FUSION_FILE).write_text(json.dumps(d))
    with pytest.raises(TamperedArtifactError):
        kmerl_edge.load(out, backend="torch")


def test_a_fusion_fitted_before_a_feature_was_added_uses_only_its_own_features():
    # the 7-feature fusion of earlier bundles (no atrial coherence) keeps loading and ignores the new column
    old = RHYTHM_FEATURES[:7]
    f = _fusion(features=("model_logit",) + old, mean=np.zeros(8), std=np.ones(8), coef=np.arange(8.0))
    rhythm = np.array([[0.1, 0.2, 0.3, 0.4, 0.0, 0.8, 1.0, 0.9]])
    z = -2.0 + np.dot(np.arange(8.0), [0.5, 0.1, 0.2, 0.3, 0.4, 0.0, 0.8, 1.0])
    assert f.probability(np.array([0.5]), rhythm)[0] == pytest.approx(1 / (1 + np.exp(-z)))
    changed = rhythm.copy()
    changed[0, RHYTHM_FEATURES.index("atrial_coherence")] = 0.0
    assert f.probability(np.array([0.5]), changed)[0] == f.probability(np.array([0.5]), rhythm)[0]


def test_atrial_coherence_separates_a_real_af_window_whose_rr_looks_regular():
    # data_101_6 (CPSC-2021, annotated): sinus rhythm 28-42 s, AF 55.6-80.3 s. In the AF window the RR
    # irregularity is as low as in the sinus window (fast, fairly even AF), the P-wave coherence is not.
    rec = kmerl_edge.read_record(Path(__file__).parent / "fixtures" / "records" / "data_101_6")
    assert rec.fs == 200.0 and rec.leads == ("I", "II")
    ecg = rec.signal
    feats = {}
    for name, (a, b) in {"sinus": (30, 40), "af": (60, 70)}.items():
        pre = preprocess(ecg[:, a * 200 : b * 200], fs=200.0, leads=["I", "II"])
        feats[name] = window_rhythm_features(pre.windows, pre.lead_ids, fs=500.0)[0]
    irr, coh = RHYTHM_FEATURES.index("rr_irregularity"), RHYTHM_FEATURES.index("atrial_coherence")
    assert abs(feats["af"][irr] - feats["sinus"][irr]) < 0.05
    assert feats["sinus"][coh] > 0.6 > 0.3 > feats["af"][coh]


def test_atrial_coherence_needs_three_beats_and_a_signal():
    x = np.zeros(5000)
    assert np.isnan(atrial_coherence(x, [1000, 2000], fs=500.0))  # two segments: not measured
    assert np.isnan(atrial_coherence(x, [1000, 2000, 3000], fs=500.0))  # flat: no power, not 0 or 1
    rng = np.random.default_rng(0)
    p_wave = np.hanning(60)
    y = rng.normal(0, 0.05, 5000)
    beats = [600, 1000, 1450, 1900, 2300, 2800, 3200]
    for r in beats:
        y[r - 100 : r - 40] += p_wave
    assert atrial_coherence(y, beats, fs=500.0) > 0.8
    assert atrial_coherence(rng.normal(0, 1, 5000), beats, fs=500.0) < 0.3


def test_a_serve_batch_keeps_each_requests_rhythm(fused_bundle, ecg):
    # a scorer replica joins requests of one lead set into one call: each keeps its own device-rate beats
    from kmerl_fleet._serve import _score_requests

    clf = kmerl_edge.load(fused_bundle, backend="torch")
    reqs = []
    for k, a in enumerate((0, 2000, 4000)):
        pre = preprocess(ecg[:1, a : a + 2000], fs=200.0, leads=["I"])
        kw = {} if k == 1 else {"rhythm": [analyse(ecg[0, a : a + 2000], fs=200.0, lead="I")]}
        reqs.append((pre.windows, pre.lead_ids, kw))
    got = _score_requests(clf, reqs)
    for (x, ids, kw), p in zip(reqs, got):
        np.testing.assert_allclose(p, clf.run_windows(x, ids, **kw), rtol=0, atol=1e-6)
    af = clf._fusion_col  # the beats were used: the model-window analysis gives another probability
    assert abs(got[0][0, af] - clf.run_windows(reqs[0][0], reqs[0][1])[0, af]) > 1e-6
