"""The bundle's AF fusion (model AF logit + rhythm evidence): stored as hashed JSON, applied the same way
by predict, stream and run_windows, refused when malformed or tampered with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge import BundleError, TamperedArtifactError, preprocess
from kmerl_edge._af_fusion import AF_FUSION_FILE, RHYTHM_FEATURES, AfFusion, window_rhythm_features
from kmerl_edge._bundle import add_artifacts
from kmerl_edge.stream import demo_record_path

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
FEATURES = ("model_logit",) + RHYTHM_FEATURES


def _fusion(**kw) -> AfFusion:
    n = len(FEATURES)
    d = dict(label_set="rhythm", class_name="atrial fibrillation", features=FEATURES, mean=np.zeros(n),
             std=np.ones(n), coef=np.array([0.5, 4.0, 1.0, 1.0, 1.0, -0.5, 0.2, -1.0]), intercept=-2.0)
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
    with pytest.raises(BundleError, match="features"):
        _fusion(features=("model_logit", "rr_irregularity"))
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
    feats = window_rhythm_features(pre.windows, pre.lead_ids, fs=500.0)
    assert feats[:, -1].max() == 1.0  # beats found on the real record
    want = clf.af_fusion.probability(logits[:, col].astype(np.float64), feats).mean()
    assert p.scores["atrial fibrillation"] == pytest.approx(want, abs=1e-9)
    assert p.scores["atrial fibrillation"] != pytest.approx(q.scores["atrial fibrillation"], abs=1e-3)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_stream_reports_the_same_fused_probability_as_offline(fused_bundle, ecg, backend):
    pytest.importorskip("onnxruntime")
    clf = kmerl_edge.load(fused_bundle, backend=backend)
    x = ecg[:1, : int(20 * 200)]
    s = clf.stream(fs=200.0, leads=["I"], hop_s=5.0, synchronous=True)
    res = s.push(x, 0.0) + s.close()
    assert res
    for r in res:
        a = int(round(r.t_start * 200.0))
        pre = preprocess(x[:, a : a + 2000], fs=200.0, leads=["I"], config=clf.bundle.preprocess_config)
        want = clf.scores_from_probs(clf.run_windows(pre.windows, pre.lead_ids)[0])[0]
        assert r.scores["atrial fibrillation"] == pytest.approx(want["atrial fibrillation"], abs=1e-5)
        unfused = clf.scores_from_probs(clf.run_windows(pre.windows, pre.lead_ids, fuse=False)[0])[0]
        assert unfused["atrial fibrillation"] != pytest.approx(want["atrial fibrillation"], abs=1e-4)


def test_tampered_fusion_is_refused(fused_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(fused_bundle, out)
    d = json.loads((out / AF_FUSION_FILE).read_text())
    d["intercept"] = 5.0
    (out / AF_FUSION_FILE).write_text(json.dumps(d))
    with pytest.raises(TamperedArtifactError):
        kmerl_edge.load(out, backend="torch")
