"""The default bundle shipped in the package: verified, trained, the exact label sets, every artifact runs."""

from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._labels import DEFAULT_LABEL_SETS

BUNDLE = Path(ke.__file__).resolve().parent / "default_bundle"


def test_default_bundle_is_verified_trained_and_small():
    b = ke.load_bundle(ke.default_bundle_path())
    assert b.trained and b.manifest["max_leads"] == 3
    assert {k: tuple(v) for k, v in b.label_sets.items()} == DEFAULT_LABEL_SETS
    names = {a.file for a in b.artifacts.values()}
    assert {"model.onnx", "model.int8.onnx", "model.pte", "model.int8.pte"} <= names
    assert sum(f.stat().st_size for f in BUNDLE.iterdir()) <= 15 * 2**20
    card = (BUNDLE / "MODEL_CARD.md").read_text()
    assert "Not a medical device" in card and "RANDOMLY INITIALISED" not in card
    dm = b.manifest["metrics"]["default_model"]
    assert dm["student"]["ptbxl_fold10_superclass"]["I"]["n"] == 66


def test_load_without_argument_uses_the_default_bundle():
    clf = ke.load(backend="torch")
    assert clf.bundle_path == BUNDLE.resolve()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8"])
def test_every_artifact_scores_a_real_record_for_1_to_3_leads(backend, records_dir):
    if backend.startswith("executorch"):
        pytest.importorskip("executorch")
    pytest.importorskip("onnxruntime")
    clf = ke.load(backend=backend)
    ref = ke.load(backend="torch")
    r = ke.read_record(records_dir / "00001_hr")
    for leads in (["I"], ["II", "V2"], ["I", "II", "V2"]):
        rows = [r.leads.index(x) for x in leads]
        p = clf.predict(r.signal[rows], fs=r.fs, leads=leads)
        q = ref.predict(r.signal[rows], fs=r.fs, leads=leads)
        assert p.trained_model and set(p.by_label_set) == set(DEFAULT_LABEL_SETS)
        got = np.array([p.scores[c] for c in q.scores])
        want = np.array(list(q.scores.values()))
        assert np.abs(got - want).max() < (1e-4 if "int8" not in backend else 0.05)


def test_more_leads_than_the_student_serves_is_a_clear_error_without_its_companion(records_dir):
    """The student alone (``companion=False``) still refuses 12 leads; the default load scores them with the
    companion bundle (tests/test_default_companion.py)."""
    clf = ke.load(backend="torch", companion=False)
    assert clf.max_leads == 3
    r = ke.read_record(records_dir / "00001_hr")
    with pytest.raises(ke.LeadError, match="at most 3 leads"):
        clf.predict(r.signal, fs=r.fs, leads=r.leads)


def test_the_default_model_flags_the_normal_record_normal(records_dir):
    """PTB-XL ecg_id 1 (fold 3, training data) is labelled NORM; a trained model should rank it first."""
    r = ke.read_record(records_dir / "00001_hr")
    p = ke.load(backend="torch").predict(r.signal[[0, 1, 7]], fs=r.fs, leads=["I", "II", "V2"])
    assert p.top(1, "ptbxl_superclass")[0][0] == "normal ECG"


def test_demo_on_the_default_bundle_detects_the_reference_af_episode(capsys):
    """The main job: the shipped model on the shipped paroxysmal-AF recording raises an AF event inside the
    first annotated episode (18.2–71.1 s) and ends it, over the real pty → pyserial → decoder path."""
    pytest.importorskip("serial")
    pytest.importorskip("firmware_bridge")  # registers the virtual-patch source (as its entry point does)
    import json

    from kmerl_edge.cli import main

    assert main(["demo", "--speed", "30", "--json-lines", "--backend", "onnxruntime"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    events = [d for d in lines if d.get("type") == "event"]
    started = [e["t"] for e in events if e["kind"] == "started" and e["label"] == "atrial fibrillation"]
    assert any(18.0 <= t <= 71.2 for t in started), events
    assert any(e["kind"] == "ended" for e in events)
