"""The default load scores every lead count 1–12: the ≤3-lead student scores 1–3 leads, the companion
bundle ``default_bundle_12`` scores 4–12 (loaded on first use). Real PTB-XL / CPSC-2021 records."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._bundle import seal_bundle
from kmerl_edge.cli import main

PKG = Path(ke.__file__).resolve().parent
STUDENT, COMPANION = PKG / "default_bundle", PKG / "default_bundle_12"
LIMB = ["I", "II", "III", "aVR", "aVL", "aVF"]


def test_the_companion_is_shipped_sealed_and_the_bundles_stay_small() -> None:
    b = ke.load_bundle(ke.default_companion_path())
    assert b.path == COMPANION and b.trained and b.max_leads == 12 and b.spec is not None
    assert b.label_sets == ke.load_bundle(STUDENT).label_sets
    assert "default_bundle_12/*" in (PKG.parent / "pyproject.toml").read_text()
    size = sum(f.stat().st_size for d in (STUDENT, COMPANION) for f in d.iterdir())
    assert size <= 15 * 2**20


def test_a_12_lead_record_is_scored_by_the_companion(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    assert default_clf.max_leads == 12 and default_clf.bundle.max_leads == 3
    p = default_clf.predict(rec12.signal, fs=rec12.fs, leads=rec12.leads)
    assert p.leads == tuple(rec12.leads) and len(p.leads) == 12
    assert Path(p.bundle) == COMPANION and p.to_dict()["bundle"] == str(COMPANION)
    assert any("companion bundle default_bundle_12" in n for n in p.notes)
    assert p.trained_model and p.top(1, "ptbxl_superclass")
    assert default_clf.check_leads(rec12.leads) == tuple(rec12.leads)
    r = default_clf.predict_record(rec12)  # a Record routes the same way
    assert Path(r.bundle) == COMPANION and r.scores == p.scores


def test_the_companion_starts_only_when_more_leads_are_scored(rec12: ke.Record) -> None:
    default_clf = ke.load(backend="torch")
    p = default_clf.predict(rec12.signal[:3], fs=rec12.fs, leads=rec12.leads[:3])
    assert default_clf._companion is None and Path(p.bundle) == STUDENT and not any("companion" in n for n in p.notes)
    default_clf.predict(rec12.signal[:4], fs=rec12.fs, leads=rec12.leads[:4])
    assert default_clf._companion is not None and default_clf._companion.backend_name == "torch"


def test_1_to_3_leads_score_exactly_as_the_student_alone(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    alone = ke.load(ke.default_bundle_path(), backend="torch")
    assert alone.companion_bundle is None and alone.max_leads == 3
    for leads in (["I"], ["I", "II"], ["I", "II", "V2"]):
        rows = [rec12.leads.index(x) for x in leads]
        p = default_clf.predict(rec12.signal[rows], fs=rec12.fs, leads=leads)
        q = alone.predict(rec12.signal[rows], fs=rec12.fs, leads=leads)
        assert p.scores == q.scores and p.bundle == q.bundle == str(STUDENT)


def test_six_limb_leads_and_a_two_lead_holter_score(default_clf: ke.Classifier, rec12: ke.Record, records_dir: Path) -> None:
    rows = [rec12.leads.index(x) for x in LIMB]
    p = default_clf.predict(rec12.signal[rows], fs=rec12.fs, leads=LIMB)
    assert p.leads == tuple(LIMB) and Path(p.bundle) == COMPANION
    assert all(0.0 <= v <= 1.0 for v in p.scores.values())
    h = default_clf.predict_record(records_dir / "data_101_6")  # CPSC-2021 Holter, leads I and II at 200 Hz
    assert h.leads == ("I", "II") and Path(h.bundle) == STUDENT and len(h.window_starts_s) > 1


def test_a_12_lead_stream_is_scored_by_the_companion(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    s = default_clf.stream(fs=rec12.fs, leads=rec12.leads, hop_s=5.0, synchronous=True)
    assert s.classifier.bundle.path == COMPANION
    res = s.push(rec12.signal, t0=0.0) + s.close()
    scored = [r for r in res if not r.skipped]
    assert scored and all(r.leads_used == tuple(rec12.leads) for r in scored)
    two = default_clf.stream(fs=rec12.fs, leads=["I", "II"], synchronous=True)
    assert two.classifier is default_clf


def test_cli_streams_a_12_lead_file_with_the_companion(records_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = str(records_dir / "00001_hr.hea")
    assert main(["stream", "--source", src, "--speed", "50", "--json-lines", "--backend", "torch"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (start,) = [d for d in lines if d["type"] == "start"]
    assert start["bundle"] == str(COMPANION) and len(start["leads"]) == 12
    assert [d["skipped"] for d in lines if d["type"] == "window"] == [False]


def test_cli_classifies_a_12_lead_file_by_default(records_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(records_dir / "00001_hr.hea"), "--json", "--backend", "torch"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bundle"] == str(COMPANION) and len(doc["leads"]) == 12
    assert any("companion" in n for n in doc["notes"])
    assert main(["classify", str(records_dir / "00001_hr.hea"), "--backend", "torch"]) == 0
    assert f"bundle   {COMPANION}" in capsys.readouterr().out


def test_info_and_models_list_both_default_bundles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["companion"]["path"] == str(COMPANION) and doc["companion"]["serves_leads"] == [4, 12]
    assert main(["models", "--json"]) == 0
    sources = {d["source"]: d for d in json.loads(capsys.readouterr().out)}
    assert sources["default"]["max_leads"] == 3 and sources["companion"]["max_leads"] == 12
    # the built AF AUC is the network's alone; predict reports the fused AF probability, and says so
    for d in sources.values():
        af = [k for k in d["auc"] if k.startswith("cpsc2021_af")]
        assert af and all("network alone" in k and "AF fusion" in k for k in af), d["auc"].keys()
        # likewise the built superclass AUC is the head's alone; predict reports the stacked scores
        sc = [k for k in d["auc"] if k.startswith("ptbxl_fold10_superclass")]
        assert sc and all("head alone, before the bundle's superclass stack" in k for k in sc), d["auc"].keys()
    assert main(["models"]) == 0
    assert "network alone, before the bundle's AF fusion" in capsys.readouterr().out


def _companion_serving(tmp_path: Path, **manifest: object) -> Path:
    out = tmp_path / "companion"
    shutil.copytree(COMPANION, out)
    m = json.loads((out / "manifest.json").read_text())
    m.update(manifest)
    (out / "manifest.json").write_text(json.dumps(m, indent=2))
    seal_bundle(out)
    return out


def test_an_explicit_companion_that_does_not_cover_the_leads_is_a_named_error(
    tmp_path: Path, rec12: ke.Record
) -> None:
    six = ke.load(ke.default_bundle_path(), backend="torch", companion=_companion_serving(tmp_path, max_leads=6))
    assert six.max_leads == 6
    rows = [rec12.leads.index(x) for x in LIMB]
    assert six.predict(rec12.signal[rows], fs=rec12.fs, leads=LIMB).bundle == str(tmp_path / "companion")
    with pytest.raises(ke.LeadError, match=r"default_bundle serves at most 3 leads and its companion companion at most 6"):
        six.predict(rec12.signal, fs=rec12.fs, leads=rec12.leads)
    with pytest.raises(ke.LeadError, match="at most 6"):
        six.stream(fs=rec12.fs, leads=rec12.leads)
    with pytest.raises(ke.InvalidArgumentError, match="would never score"):
        ke.load(ke.default_bundle_path(), backend="torch", companion=ke.default_bundle_path())


def test_an_explicit_companion_with_fixed_lead_sets_refuses_others(tmp_path: Path, rec12: ke.Record) -> None:
    comp = _companion_serving(tmp_path, supported_lead_sets=[LIMB])
    default_clf = ke.load(ke.default_bundle_path(), backend="torch", companion=comp)
    with pytest.raises(ke.LeadError, match="serves only the lead sets"):
        default_clf.predict(rec12.signal, fs=rec12.fs, leads=rec12.leads)
    x = rec12.signal[[rec12.leads.index(x) for x in LIMB]]
    assert np.isfinite(list(default_clf.predict(x, fs=rec12.fs, leads=LIMB).scores.values())).all()


def test_each_default_bundle_ships_a_tuned_af_event_rule_its_sessions_use(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    for leads, path in ((rec12.leads, COMPANION), (["I"], STUDENT), (["I", "II"], STUDENT)):
        s = default_clf.stream(fs=rec12.fs, leads=leads, synchronous=True)
        fusion = s.bundle_classifier.af_fusion
        assert s.bundle_classifier.bundle.path == path and fusion is not None
        assert "atrial_coherence" in fusion.features and fusion.event_rule is not None
        assert s._detectors[0].rule == fusion.stream_rule(s.config.hop_s)
        assert s._detectors[0].rule.min_on_windows * s.config.hop_s >= 10.0  # not a 2-window hair trigger
