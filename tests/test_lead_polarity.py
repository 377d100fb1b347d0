"""Lead I polarity check: a window whose lead I looks inverted (LA/RA electrodes swapped, a patch or handheld
device worn the other way round) is flagged ``lead_I_inverted`` and explained in a note, on a real PTB-XL
record (tests/fixtures/records/00001_hr), without changing any score."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._measure import GLOBAL, PER_LEAD
from kmerl_edge._polarity import INVERTED_FLAG, lead_i_polarity, record_inverted
from kmerl_edge.cli import main

LEADS12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _la_ra(x: np.ndarray) -> np.ndarray:
    """Left- and right-arm electrodes swapped: I → −I, II ↔ III, aVR ↔ aVL."""
    y = x.copy()
    i = {lead: k for k, lead in enumerate(LEADS12)}
    y[i["I"]] = -x[i["I"]]
    y[i["II"]], y[i["III"]] = x[i["III"]], x[i["II"]]
    y[i["aVR"]], y[i["aVL"]] = x[i["aVL"]], x[i["aVR"]]
    return y


@pytest.fixture(scope="module")
def clf() -> ke.Classifier:
    """The shipped bundles on ONNX Runtime (int8), one thread: the ≤3-lead student and its 12-lead companion."""
    return ke.load(backend="onnxruntime-int8", threads=1)


@pytest.fixture(scope="module")
def x12(rec12: ke.Record) -> np.ndarray:
    assert tuple(rec12.leads) == LEADS12 and rec12.fs == 500.0
    return np.asarray(rec12.signal, dtype=np.float64)


def _flagged(pred: ke.Prediction) -> bool:
    has_note = any("lead I looks inverted" in n for n in pred.notes)
    assert (INVERTED_FLAG in pred.quality.flags) == has_note
    return has_note


@pytest.mark.parametrize("leads", [("I",), ("I", "II", "V2"), LEADS12])
def test_real_record_is_not_flagged_as_recorded(clf, x12, leads):
    rows = [LEADS12.index(lead) for lead in leads]
    pred = clf.predict(x12[rows], fs=500.0, leads=leads)
    assert not _flagged(pred)
    assert INVERTED_FLAG not in pred.to_dict()["quality"]["flags"]


@pytest.mark.parametrize("leads", [("I",), ("I", "II", "V2"), LEADS12])
def test_lead_i_inverted_is_flagged_degraded_with_a_note(clf, x12, leads):
    x = x12.copy()
    x[0] *= -1.0
    rows = [LEADS12.index(lead) for lead in leads]
    pred = clf.predict(x[rows], fs=500.0, leads=leads)
    assert _flagged(pred)
    assert pred.quality.overall == "degraded"  # not unusable: the leads are scored
    note = next(n for n in pred.notes if "lead I looks inverted" in n)
    assert "electrodes swapped" in note and "reversed" in note and "dextrocardia" in note


@pytest.mark.parametrize("leads", [("I", "II", "V2"), LEADS12])
def test_la_ra_swap_is_flagged(clf, x12, leads):
    rows = [LEADS12.index(lead) for lead in leads]
    pred = clf.predict(_la_ra(x12)[rows], fs=500.0, leads=leads)
    assert _flagged(pred)


def test_bundle_without_a_stack_checks_too(test_bundle_path, x12):
    c = ke.load(test_bundle_path, backend="onnxruntime")
    assert c.superclass_stack is None
    assert not _flagged(c.predict(x12[:1], fs=500.0, leads=["I"]))
    assert _flagged(c.predict(-x12[:1], fs=500.0, leads=["I"]))


def test_too_few_beats_or_unmeasured_gives_no_flag(clf, x12):
    # lead I inverted, but only its first 1.2 s (one or two beats) holds an ECG: nothing can be measured
    x = -x12[:1].copy()
    x[:, 600:] = 0.02 * np.sin(2 * np.pi * 0.3 * np.arange(x.shape[1] - 600) / 500.0)
    pred = clf.predict(x, fs=500.0, leads=["I"])
    assert not _flagged(pred)
    # the per-window decision: NaN measurements are unknown (-1), never a guess
    per = np.full((3, 12, len(PER_LEAD)), np.nan)
    per[1, 0, PER_LEAD.index("qrs_area")] = -0.1
    per[1, 0, PER_LEAD.index("t_mean")] = -0.2
    per[2, 0, PER_LEAD.index("qrs_area")] = -0.1  # T not measured
    assert lead_i_polarity(per).tolist() == [-1, 1, -1]
    assert record_inverted(np.array([-1, -1])) is None
    assert record_inverted(np.array([-1, 1, 0])) is True
    assert record_inverted(np.array([0, 0, 1])) is False
    assert len(GLOBAL)  # measure_window's layout is the one the check reads


def test_scores_are_unchanged_by_the_check(clf, x12):
    comp = clf.for_leads(LEADS12)
    for c, rows in ((clf, [0]), (comp, list(range(12)))):
        x = x12[rows].copy()
        x[0] *= -1.0
        names = [LEADS12[r] for r in rows]
        pre = c.preprocess(x, fs=500.0, leads=names)
        rhythm = [ke.rhythm.analyse(x[0, :5000], fs=500.0, lead="I")] if len(rows) == 1 else None
        kw = {} if rhythm is None else {"rhythm": rhythm}
        plain = c.run_windows(pre.windows, pre.lead_ids, **kw)
        checked, polarity = c._run_windows(pre.windows, pre.lead_ids, polarity=True, **kw)
        assert np.array_equal(plain, checked)
        assert polarity.tolist() == [1]


def test_json_output_carries_the_flag_and_note(x12, tmp_path, capsys):
    p = tmp_path / "inverted.csv"
    np.savetxt(p, -x12[0], header="I (mV)", comments="", fmt="%.5f")
    assert main(["classify", str(p), "--fs", "500", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert INVERTED_FLAG in out["quality"]["flags"] and out["quality"]["overall"] == "degraded"
    assert any("lead I looks inverted" in n for n in out["notes"])
    assert main(["classify", str(p), "--fs", "500"]) == 0
    text = capsys.readouterr().out
    assert INVERTED_FLAG in text and "note     lead I looks inverted" in text


def test_stream_window_carries_the_flag_and_note(clf, x12):
    s = clf.stream(fs=500.0, leads=["I"], hop_s=5.0, synchronous=True)
    x = np.tile(-x12[:1], 2).astype(np.float32)  # 20 s of the inverted lead I
    results = s.push(x) + s.close()
    scored = [r for r in results if not r.skipped]
    assert scored
    for r in scored:
        assert INVERTED_FLAG in r.flags and INVERTED_FLAG in r.quality.flags
        assert any("lead I looks inverted" in n for n in r.notes)
        d = r.to_dict()
        assert INVERTED_FLAG in d["flags"] and d["notes"]
    ok = clf.stream(fs=500.0, leads=["I"], hop_s=5.0, synchronous=True)
    upright = [r for r in ok.push(np.tile(x12[:1], 2).astype(np.float32)) + ok.close() if not r.skipped]
    assert upright and all(INVERTED_FLAG not in r.flags and not r.notes for r in upright)


def test_stream_command_shows_the_flag_and_note(x12, tmp_path, capsys):
    p = tmp_path / "inverted.csv"
    np.savetxt(p, np.tile(-x12[0], 2), header="I (mV)", comments="", fmt="%.5f")
    args = ["stream", "--source", str(p), "--fs", "500", "--speed", "1000", "--hop", "5"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"[{INVERTED_FLAG}]" in text and text.count("note: lead I looks inverted") == 1
    assert main([*args, "--json-lines"]) == 0
    windows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"type": "window"' in line]
    scored = [w for w in windows if not w["skipped"]]
    assert scored and all(INVERTED_FLAG in w["flags"] and w["notes"] for w in scored)
