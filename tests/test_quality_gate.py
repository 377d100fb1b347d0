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


def test_af_event_counting_on_a_scripted_record():
    """One AF episode 100-200 s; a false start at 30 s and a true one inside the episode."""
    from benchmarks.af_events import RuleCandidate, _Scored, count_events

    t = np.arange(0, 290, 5.0)
    p = np.where((t >= 100) & (t < 200), 0.9, 0.1)
    p[(t >= 30) & (t < 40)] = 0.95  # two windows of a false alarm
    s = _Scored("data_1_1", "1", t, t + 10, p, np.ones(len(t), bool), [(100.0, 200.0)], 300.0, 5.0)
    loose = count_events(s, RuleCandidate(0.6, 0.4, 1, 1, 1, False))
    assert loose["false_events"] == 1 and loose["detected"] == 1 and loose["non_af_s"] == 200.0
    strict = count_events(s, RuleCandidate(0.6, 0.4, 3, 1, 1, False))
    assert strict["false_events"] == 0 and strict["detected"] == 1
    gated = np.ones(len(t), bool)
    gated[(t >= 30) & (t < 40)] = False  # beats not found in the noisy stretch: skipped, no alarm
    assert count_events(_Scored("d", "1", t, t + 10, p, gated, [(100.0, 200.0)], 300.0, 5.0),
                        RuleCandidate(0.6, 0.4, 1, 1, 1, True))["false_events"] == 0



def test_the_event_rule_is_chosen_on_training_records_for_few_false_alarms():
    """A scripted training record: one 300-s AF episode and a 20-s burst of false AF; the chosen rule
    (seconds, as a bundle stores it) ignores the burst, still finds the episode, and means the same at
    any hop."""
    from export._events import Scored, choose_event_rule, count_events

    def record(hop: float) -> Scored:
        t = np.arange(0, 1200, hop)
        p = np.where((t >= 600) & (t < 900), 1.0, 0.0)
        p[(t >= 100) & (t < 120)] = 1.0
        return Scored("data_1_1", "1", t, t + 10, p, np.ones(len(t), bool), [(600.0, 900.0)], 1210.0, hop)

    rule, on_train = choose_event_rule([record(2.0)])
    assert on_train["false_events"] == 0 and on_train["detected"] == 1
    assert rule["min_on_s"] >= 30.0 or rule["smooth_s"] >= 20.0  # the 20-s burst cannot confirm
    for hop in (1.0, 5.0):
        got = count_events(record(hop), rule)
        assert got["false_events"] == 0 and got["detected"] == 1
