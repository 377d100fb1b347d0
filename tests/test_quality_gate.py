"""The quality gate: a model whose held-out AUC is not clearly above chance is marked loudly in the
manifest, the model card and every predict result."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import kmerl_edge
from export._pipeline import quality_gate
from kmerl_edge._bundle import add_artifacts

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"


def _ev(scores: np.ndarray, labels: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(auc_slice=slice(0, labels.shape[1]), eval=SimpleNamespace(labels=labels),
                           logits={"torch": {1: scores, 3: scores}})


def test_gate_fails_at_chance_and_passes_a_separating_model():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 3)) < 0.3).astype(np.float32)
    chance = quality_gate(_ev(rng.normal(size=(120, 3)), y), {"meaningful": True})
    assert chance["passed"] is False and "not clearly above chance" in chance["reason"]
    good = quality_gate(_ev(y * 3 + rng.normal(size=(120, 3)), y), {"meaningful": True})
    assert good["passed"] is True and min(good["lower_bound_by_leads"].values()) > 0.55
    assert quality_gate(_ev(y, y), {"meaningful": False})["passed"] is None


def test_a_failed_gate_is_in_the_card_and_every_prediction(tmp_path, records_dir):
    out = tmp_path / "b"
    shutil.copytree(BUNDLE, out)
    add_artifacts(out, {}, metrics={"quality_gate": {"passed": False, "reason": "held-out AUC 0.48"}})
    clf = kmerl_edge.load(out, backend="torch")
    assert clf.bundle.quality_gate_failed == "held-out AUC 0.48"
    assert "FAILED THE QUALITY GATE" in (out / "MODEL_CARD.md").read_text()
    r = kmerl_edge.read_record(records_dir / "00001_hr")
    p = clf.predict(r.signal[:1], fs=r.fs, leads=["I"])
    assert any("QUALITY GATE FAILED" in n for n in p.notes)
    assert not any("QUALITY GATE" in n for n in kmerl_edge.load(BUNDLE, backend="torch").predict(
        r.signal[:1], fs=r.fs, leads=["I"]).notes)
