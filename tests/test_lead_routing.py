"""Routing by the leads that survive quality checks, not the leads given (issue 15).

A 12-lead file whose other leads are flat is scored by the ≤3-lead student on the leads that are left;
the prediction says which leads were scored, which were dropped and why, and which bundle scored.
Real PTB-XL records (``tests/fixtures/records``) with leads zeroed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._bundle import seal_bundle
from kmerl_edge._io import ArrayReader
from kmerl_edge._scoring import score_reader
from kmerl_edge.cli import main

PKG = Path(ke.__file__).resolve().parent
STUDENT, COMPANION = PKG / "default_bundle", PKG / "default_bundle_12"
KEEP = ("I", "II", "V2")


def _zeroed(rec: ke.Record, keep: tuple[str, ...] = KEEP, from_s: float = 0.0) -> np.ndarray:
    """The record with every lead but ``keep`` set to 0 mV (a lead off) from ``from_s`` on."""
    x = np.array(rec.signal, dtype=np.float64)
    a = int(round(from_s * rec.fs))
    for i, lead in enumerate(rec.leads):
        if lead not in keep:
            x[i, a:] = 0.0
    return x


def test_12_leads_with_9_flat_are_scored_by_the_student_on_the_3_left(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    p = default_clf.predict(_zeroed(rec12), fs=rec12.fs, leads=rec12.leads)
    assert Path(p.bundle) == STUDENT and p.leads == KEEP
    assert p.leads_given == tuple(rec12.leads)
    assert p.dropped == {lead: "flat" for lead in rec12.leads if lead not in KEEP}
    assert [(r.bundle, r.leads, r.n_windows) for r in p.routes] == [(str(STUDENT), KEEP, len(p.window_starts_s))]
    rows = [rec12.leads.index(x) for x in KEEP]
    alone = default_clf.predict(rec12.signal[rows], fs=rec12.fs, leads=list(KEEP))  # the same 3 leads given alone
    assert Path(alone.bundle) == STUDENT
    for k, v in alone.scores.items():
        assert p.scores[k] == pytest.approx(v, abs=1e-5)
    d = p.to_dict()
    assert d["bundle"] == str(STUDENT) and d["leads"] == list(KEEP) and d["leads_given"] == list(rec12.leads)
    assert d["dropped_leads"] == p.dropped and d["routes"][0]["bundle"] == str(STUDENT)
    assert not any("companion" in n for n in p.notes)


def test_all_12_good_leads_still_go_to_the_companion(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    p = default_clf.predict(rec12.signal, fs=rec12.fs, leads=rec12.leads)
    assert Path(p.bundle) == COMPANION and p.dropped == {} and p.leads == tuple(rec12.leads)
    assert any("companion bundle default_bundle_12" in n for n in p.notes)


def test_routing_is_per_piece_of_a_long_recording(default_clf: ke.Classifier, records_dir: Path) -> None:
    """Four real PTB-XL records end to end (40 s); nine leads go off at 15 s. With 20-s pieces (each with
    one 5-s hop of context before its core), the first piece still has every lead (companion), the
    second only I, II, V2 (student)."""
    recs = [ke.read_record(records_dir / n) for n in ("00001_hr", "00008_hr", "00017_hr", "00001_hr")]
    x = np.concatenate([r.signal for r in recs], axis=1).astype(np.float64)
    leads = recs[0].leads
    x[[i for i, lead in enumerate(leads) if lead not in KEEP], int(15 * 500):] = 0.0
    sw = score_reader(default_clf, ArrayReader(x, fs=500.0, leads=leads), piece_s=20.0)
    assert [(Path(r.bundle), r.leads) for r in sw.routes] == [(COMPANION, tuple(leads)), (STUDENT, KEEP)]
    assert sum(r.n_windows for r in sw.routes) == len(sw.starts_s)
    assert sw.routes[1].start_s == 20.0 and sw.dropped == {lead: "flat" for lead in leads if lead not in KEEP}


def test_a_file_with_flat_leads_is_classified_by_the_student_in_the_cli(
    rec12: ke.Record, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import wfdb

    x = _zeroed(rec12)
    wfdb.wrsamp("flat9", fs=rec12.fs, units=["mV"] * 12, sig_name=list(rec12.leads), p_signal=x.T,
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    rec = str(tmp_path / "flat9.hea")
    assert main(["classify", rec, "--json", "--backend", "torch"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bundle"] == str(STUDENT) and doc["leads"] == list(KEEP) and len(doc["leads_given"]) == 12
    assert doc["dropped_leads"] == {lead: "flat" for lead in rec12.leads if lead not in KEEP}
    assert main(["classify", rec, "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert f"bundle   {STUDENT}" in out
    assert "scored   I, II, V2 (3 of 12 given); dropped: III flat" in out


def _student_serving(tmp_path: Path, lead_sets: list[list[str]]) -> Path:
    out = tmp_path / "student"
    shutil.copytree(STUDENT, out)
    m = json.loads((out / "manifest.json").read_text())
    m["supported_lead_sets"] = lead_sets
    (out / "manifest.json").write_text(json.dumps(m, indent=2))
    seal_bundle(out)
    return out


def test_supported_lead_sets_are_enforced_on_the_leads_that_survive(tmp_path: Path, rec12: ke.Record) -> None:
    student = _student_serving(tmp_path, [["I", "II"]])
    rows = [rec12.leads.index("I"), rec12.leads.index("II")]
    x = np.array(rec12.signal[rows], dtype=np.float64)
    x[1] = 0.0  # lead II off: only I is left, a set the student does not serve
    alone = ke.load(student, backend="torch", companion=False)
    with pytest.raises(ke.LeadError, match=r"lead set I .*serves only the lead sets I\+II"):
        alone.predict(x, fs=rec12.fs, leads=["I", "II"])
    both = ke.load(student, backend="torch", companion=COMPANION)  # the companion serves any set: it scores
    p = both.predict(x, fs=rec12.fs, leads=["I", "II"])
    assert Path(p.bundle) == COMPANION and p.leads == ("I",) and p.dropped == {"II": "flat"}
    good = both.predict(rec12.signal[rows], fs=rec12.fs, leads=["I", "II"])
    assert Path(good.bundle) == student


def test_a_stream_keeps_its_bundle_when_leads_go_off(default_clf: ke.Classifier, rec12: ke.Record, records_dir: Path) -> None:
    """A 12-lead stream keeps scoring with the companion when nine leads go off (a session keeps its
    bundle: benchmarks/routing.py), on the three leads left, as the companion alone scores them."""
    recs = [rec12, ke.read_record(records_dir / "00008_hr"), ke.read_record(records_dir / "00017_hr")]
    x = np.concatenate([r.signal for r in recs], axis=1).astype(np.float64)
    x[[i for i, lead in enumerate(rec12.leads) if lead not in KEEP], 10000:] = 0.0  # off from 20 s
    s = default_clf.stream(fs=rec12.fs, leads=rec12.leads, hop_s=10.0, synchronous=True)
    res = [r for r in s.push(x, t0=0.0) + s.close() if not r.skipped]
    assert [Path(r.bundle) for r in res] == [COMPANION] * 3
    assert res[0].leads_used == tuple(rec12.leads) and res[2].leads_used == KEEP
    assert res[2].excluded_leads == {lead: "flat" for lead in rec12.leads if lead not in KEEP}
    assert res[2].to_dict()["bundle"] == str(COMPANION)
    rows = [rec12.leads.index(x) for x in KEEP]
    alone = ke.load(COMPANION, backend="torch", companion=False)
    p = alone.predict(x[rows, 10000:15000], fs=rec12.fs, leads=list(KEEP))
    for k, v in p.scores.items():
        assert res[2].scores[k] == pytest.approx(v, abs=1e-4)


def test_gateway_sessions_keep_the_bundle_their_lead_set_picks(default_clf: ke.Classifier, rec12: ke.Record) -> None:
    """One shared worker, two devices: a 12-lead patch (nine leads off in its second window) stays with
    the companion, a 2-lead one with the student."""
    from kmerl_edge.stream import Gateway

    gw = Gateway(default_clf)
    twelve = gw.open("twelve", fs=rec12.fs, leads=rec12.leads, hop_s=10.0)
    two = gw.open("two", fs=rec12.fs, leads=["I", "II"], hop_s=10.0)
    x = np.concatenate([rec12.signal] * 2, axis=1).astype(np.float64)
    x[[i for i, lead in enumerate(rec12.leads) if lead not in KEEP], 5000:] = 0.0
    twelve.push(x, t0=0.0)
    two.push(rec12.signal[:2], t0=0.0)
    a, b = gw.close_session("twelve"), gw.close_session("two")
    gw.close()
    assert [(Path(r.bundle), len(r.leads_used)) for r in a] == [(COMPANION, 12), (COMPANION, 3)]
    assert [Path(r.bundle) for r in b] == [STUDENT]


def test_a_stream_goes_to_the_other_bundle_only_when_its_own_cannot_serve(tmp_path: Path, rec12: ke.Record) -> None:
    from kmerl_edge.stream import SKIP_UNSERVED_LEADS

    student = _student_serving(tmp_path, [["I", "II"]])
    rows = [rec12.leads.index("I"), rec12.leads.index("II")]
    x = np.concatenate([rec12.signal[rows]] * 2, axis=1).astype(np.float64)
    x[1, 5000:] = 0.0  # lead II off for the second window
    both = ke.load(student, backend="torch", companion=COMPANION)
    s = both.stream(fs=rec12.fs, leads=["I", "II"], hop_s=10.0, synchronous=True)
    assert s.classifier is both
    res = s.push(x, t0=0.0) + s.close()
    assert [(Path(r.bundle), r.leads_used) for r in res] == [(student, ("I", "II")), (COMPANION, ("I",))]
    alone = ke.load(student, backend="torch", companion=False)
    s = alone.stream(fs=rec12.fs, leads=["I", "II"], hop_s=10.0, synchronous=True)
    res = s.push(x, t0=0.0) + s.close()
    assert not res[0].skipped and res[1].skipped and res[1].reason == SKIP_UNSERVED_LEADS
    assert "serves only the lead sets I+II" in res[1].detail and res[1].bundle == ""


@pytest.mark.parametrize("n", range(1, 13))
def test_every_lead_count_scores_without_flags(default_clf: ke.Classifier, rec12: ke.Record, n: int) -> None:
    leads = list(rec12.leads[:n])
    p = default_clf.predict(rec12.signal[:n], fs=rec12.fs, leads=leads)
    assert p.leads == tuple(leads) and p.quality.overall == "good" and not p.quality.flags and not p.dropped
    assert Path(p.bundle) == (STUDENT if n <= 3 else COMPANION)
    assert all(0.0 <= v <= 1.0 for v in p.scores.values())


@pytest.mark.parametrize(
    ("name", "leads", "bundle"),
    [("data_101_6", ("I", "II"), STUDENT), ("limb6", ("I", "II", "III", "aVR", "aVL", "aVF"), COMPANION)],
)
def test_classify_shows_the_bundle_and_the_af_probability(
    records_dir: Path, rec12: ke.Record, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    name: str, leads: tuple[str, ...], bundle: Path,
) -> None:
    """The first 30 s of a 2-lead Holter (CPSC-2021 data_101_6, 200 Hz) and a 6-limb-lead file (PTB-XL
    00001, limb leads only), written as WFDB files."""
    import wfdb

    rec = ke.read_record(records_dir / name) if name == "data_101_6" else rec12
    rows = [rec.leads.index(x) for x in leads]
    x = rec.signal[rows, : int(30 * rec.fs)]
    wfdb.wrsamp(name, fs=rec.fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=x.T,
                fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
                write_dir=str(tmp_path))
    path = tmp_path / f"{name}.hea"
    assert main(["classify", str(path), "--json", "--backend", "torch"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bundle"] == str(bundle) and tuple(doc["leads"]) == leads and doc["quality"]["overall"] == "good"
    af = doc["scores"]["rhythm"]["atrial fibrillation"]
    assert main(["classify", str(path), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert f"bundle   {bundle}" in out
    (line,) = [x for x in out.splitlines() if x.startswith("AF       ")]
    assert line.startswith(f"AF       {af:.3f} mean of {len(doc['window_starts_s'])} window(s)")
