"""Reading records as the file states them: channels that are not standard leads, gaps, headers, long files.

Every record here is a real WFDB file: a committed fixture, or one written with ``wfdb.wrsamp`` from a
fixture's samples (renamed channels, NaN gaps, edited header fields).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge._errors import (
    ChecksumError,
    InvalidHeaderError,
    LeadMapRequiredError,
    MissingLeadError,
    NoEcgChannelError,
    RecordReadError,
)
from kmerl_edge.cli import main

wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def clf(test_bundle_path):
    return ke.load(test_bundle_path, backend="onnxruntime")


@pytest.fixture(scope="module")
def ecg(records_dir):
    """12 s of CPSC-2021 leads I and II at 200 Hz (mV)."""
    r = ke.read_record(records_dir / "data_101_6")
    return r.signal[:, :2400].astype(np.float64), r.fs


def write(dirpath: Path, name: str, sig: np.ndarray, fs: float, names, units=None, fmt="16") -> Path:
    units = units or ["mV"] * len(names)
    wfdb.wrsamp(name, fs=fs, units=list(units), sig_name=list(names), p_signal=np.asarray(sig).T,
                fmt=[fmt] * len(names), write_dir=str(dirpath))
    return dirpath / name


def edit_header(base: Path, fn) -> None:
    hea = base.parent / (base.name + ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(fn(lines)) + "\n")


# ------------------------------------------------------------------------------------------ channels (#18)
def test_monitor_record_ii_v_pleth_scores_ii_and_notes_the_rest(ecg, tmp_path, clf):
    x, fs = ecg
    pleth = 50 + 10 * np.sin(np.arange(x.shape[1]) / fs)
    base = write(tmp_path, "mon", np.vstack([x[1], x[0], pleth]), fs, ["II", "V", "PLETH"], ["mV", "mV", "NU"])
    rec = ke.read_record(base)
    assert rec.leads == ("II",)
    assert any("PLETH" in n for n in rec.notes) and any("'V=V5'" in n for n in rec.notes)
    p = clf.predict_record(base)
    assert p.leads == ("II",) and any("PLETH" in n for n in p.notes)


def test_non_ecg_recognised_by_units_even_with_an_odd_name(ecg, tmp_path):
    x, fs = ecg
    base = write(tmp_path, "bp", np.vstack([x[0], 80 + x[1]]), fs, ["I", "Art line"], ["mV", "mmHg"])
    rec = ke.read_record(base)
    assert rec.leads == ("I",) and "mmHg" in rec.notes[0]


@pytest.mark.parametrize("name", ["ECG 1", "ECG_1", "ch1", "col 0", "MCL1", "V", "ECG"])
def test_ecg_of_unknown_position_needs_a_map_and_the_error_shows_it(name, ecg, tmp_path, clf):
    x, fs = ecg
    base = write(tmp_path, "patch", x[:1], fs, [name])
    with pytest.raises(LeadMapRequiredError, match=r"--lead-map '") as ei:
        ke.read_record(base)
    assert repr(name) in str(ei.value)
    rec = ke.read_record(base, lead_map={name: "II"})
    assert rec.leads == ("II",)
    assert clf.predict_record(base, lead_map=f"{name}=II").leads == ("II",)


def test_cli_lead_map_option_and_error(ecg, tmp_path, test_bundle_path, capsys):
    x, fs = ecg
    base = write(tmp_path, "patch", x[:1], fs, ["ECG 1"])
    assert main(["classify", str(base), "--bundle", str(test_bundle_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "--lead-map 'ECG 1=" in err and "\n" not in err
    assert main(["classify", str(base), "--bundle", str(test_bundle_path), "--lead-map", "ECG 1=I", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leads"] == ["I"]


def test_only_non_ecg_channels_is_a_named_refusal(ecg, tmp_path):
    x, fs = ecg
    base = write(tmp_path, "resp", x, fs, ["RESP", "ABP"], ["Ohm", "mmHg"])
    with pytest.raises(NoEcgChannelError, match="no ECG channel"):
        ke.read_record(base)


def test_ptb_record_with_frank_leads_scores_standard_leads(records_dir, clf, test_bundle_path, capsys):
    base = records_dir / "s0010_re_10s"
    rec = ke.read_record(base, leads=["I", "II"])
    assert rec.leads == ("I", "II") and any("vx, vy, vz" in n for n in rec.notes)
    assert clf.predict_record(base, leads=["I", "II", "V2"]).leads == ("I", "II", "V2")
    assert main(["classify", str(base), "--leads", "I,II", "--bundle", str(test_bundle_path)]) == 0
    assert "vx, vy, vz" in capsys.readouterr().out


def test_asking_for_a_lead_the_record_lacks(records_dir):
    with pytest.raises(MissingLeadError):
        ke.read_record(records_dir / "data_101_6", leads=["V1"])


# ----------------------------------------------------------------------------------------------- gaps (#16)
def test_missing_samples_are_gaps_never_filled(ecg, tmp_path, clf):
    x, fs = ecg
    long = np.tile(x, 6)  # 72 s
    long[:, int(20 * fs) : int(50 * fs)] = np.nan  # 30 s gap
    base = write(tmp_path, "gappy", long, fs, ["I", "II"], fmt="212")
    rec = ke.read_record(base)
    assert rec.missing_samples == int(30 * fs)  # not interpolated
    p = clf.predict_record(base)
    cov = p.coverage
    assert cov is not None and cov.n_gaps == 1 and math.isclose(cov.missing_s, 30.0, abs_tol=0.01)
    assert cov.gaps[0] == pytest.approx((20.0, 50.0), abs=0.01)
    for s in p.window_starts_s:  # no window overlaps the gap
        assert s + 10.0 <= 20.0 + 1e-6 or s >= 50.0 - 1e-6
    assert p.quality.overall != "good" and "gap" in p.quality.flags
    assert any("missing" in n for n in p.notes)


def test_sixty_percent_missing_is_not_good_quality(ecg, tmp_path, clf):
    x, fs = ecg
    long = np.tile(x, 5)  # 60 s
    long[:, int(24 * fs) :] = np.nan
    p = clf.predict(long, fs=fs, leads=["I", "II"])
    assert p.quality.overall == "degraded" and p.coverage is not None
    assert p.coverage.missing_fraction == pytest.approx(0.6, abs=0.01)


def test_nothing_but_short_stretches_between_gaps_is_refused(ecg, clf):
    x, fs = ecg
    long = np.tile(x, 3).copy()
    for k in range(0, long.shape[1], int(4 * fs)):
        long[:, k : k + 20] = np.nan  # a gap every 4 s
    with pytest.raises(ke.SignalTooShortError, match="no gap-free stretch"):
        clf.predict(long, fs=fs, leads=["I", "II"])


# ------------------------------------------------------------------------------------------ headers (#16)
@pytest.mark.parametrize("bad", ["-500", "nan", "0", "inf", "abc"])
def test_header_sampling_rate_must_be_a_positive_number(bad, ecg, tmp_path):
    x, fs = ecg
    base = write(tmp_path, "r", x, fs, ["I", "II"])
    edit_header(base, lambda ls: [ls[0].replace(" 200 ", f" {bad} ", 1)] + ls[1:])
    with pytest.raises(InvalidHeaderError, match="sampling rate"):
        ke.read_record(base)


def test_header_without_rate_is_not_250_hz(ecg, tmp_path):
    x, fs = ecg
    base = write(tmp_path, "r", x, fs, ["I", "II"])
    edit_header(base, lambda ls: [" ".join(ls[0].split()[:2])] + ls[1:])
    with pytest.raises(InvalidHeaderError, match="no sampling rate"):
        ke.read_record(base)
    assert ke.read_record(base, fs=200).fs == 200.0  # the user states it


def test_negative_gain_is_refused(ecg, tmp_path):
    x, fs = ecg
    base = write(tmp_path, "r", x, fs, ["I", "II"])

    def neg(ls):
        parts = ls[1].split()
        parts[2] = "-" + parts[2]
        return [ls[0], " ".join(parts), *ls[2:]]

    edit_header(base, neg)
    with pytest.raises(InvalidHeaderError, match="gain"):
        ke.read_record(base)


def test_checksum_mismatch_is_refused(ecg, tmp_path, clf):
    x, fs = ecg
    base = write(tmp_path, "r", x, fs, ["I", "II"])
    dat = tmp_path / "r.dat"
    raw = bytearray(dat.read_bytes())
    raw[1000] ^= 0x10  # one flipped bit in a sample
    dat.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="checksum"):
        ke.read_record(base)
    with pytest.raises(ChecksumError):
        clf.predict_record(base)


# ----------------------------------------------------------------------------------- range, JSON (#16)
def test_values_near_float_max_are_out_of_range_not_nan(ecg, clf):
    x, fs = ecg
    y = x.copy()
    y[0, 500] = 1e308
    p = clf.predict(y, fs=fs, leads=["I", "II"])
    assert p.leads == ("II",) and "out_of_range" in p.quality["I"].flags
    assert all(math.isfinite(v) for v in p.scores.values())
    with pytest.raises(ke.SignalRangeError):
        ke.preprocess(y, fs=fs, leads=["I", "II"])


def test_json_output_is_strict(ecg, tmp_path, test_bundle_path, capsys):
    x, fs = ecg
    y = x.copy()
    y[0, 500] = 1e308
    np.save(tmp_path / "x.npy", y)
    args = ["classify", str(tmp_path / "x.npy"), "--fs", "200", "--leads", "I,II", "--bundle", str(test_bundle_path)]
    assert main(args + ["--json"]) == 0
    out = capsys.readouterr().out
    json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


# ------------------------------------------------------------------------------------------ long records
def test_long_record_scored_in_pieces_matches_one_piece(ecg, clf):
    x, fs = ecg
    long = np.tile(x, 40)  # 480 s: more than one 300-s piece
    p = clf.predict(long, fs=fs, leads=["I", "II"])
    pre = clf.preprocess(long, fs=fs, leads=["I", "II"])
    assert p.window_starts_s == pytest.approx(pre.window_starts_s)
    whole = clf.run_windows(pre.windows, pre.lead_ids).mean(axis=0)
    got = np.array([p.by_label_set[ls][c] for ls, c in clf._index])
    assert np.abs(got - whole).max() < 1e-4


def test_duplicate_class_names_do_not_collapse(clf):
    clf2 = ke.Classifier(clf.bundle, clf.backend)
    clf2._index = [("a", "normal ECG"), ("b", "normal ECG"), ("b", "other")]
    flat, by = clf2.scores_from_probs(np.array([0.1, 0.9, 0.5]))
    assert flat == {"a/normal ECG": 0.1, "b/normal ECG": 0.9, "other": 0.5}


def test_stream_plays_a_record_with_a_lead_map_and_gaps(ecg, tmp_path, test_bundle_path, capsys):
    x, fs = ecg
    long = np.tile(x, 3)
    long[:, int(12 * fs) : int(14 * fs)] = np.nan
    base = write(tmp_path, "patch", long[:1], fs, ["ECG 1"])
    args = ["stream", "--source", str(base), "--bundle", str(test_bundle_path), "--speed", "1000", "--json-lines"]
    assert main(args) == 1
    assert "--lead-map" in capsys.readouterr().err
    assert main(args + ["--lead-map", "ECG 1=II"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["gaps"] == 1 and summary["gap_samples"] == int(2 * fs)


def test_record_reader_is_not_confused_by_a_copy_without_dat(ecg, tmp_path):
    x, fs = ecg
    base = write(tmp_path, "r", x, fs, ["I", "II"])
    (tmp_path / "r.dat").unlink()
    with pytest.raises(RecordReadError, match="r.dat"):
        ke.read_record(base)
    shutil.rmtree(tmp_path)


def test_one_lead_missing_leaves_the_other_scored(ecg, tmp_path, clf):
    x, fs = ecg
    long = np.tile(x, 3)  # 36 s
    long[1, int(10 * fs) : int(12 * fs)] = np.nan  # lead II missing for 2 s, lead I recorded throughout
    base = write(tmp_path, "onelead", long, fs, ["I", "II"])
    p = clf.predict_record(base)
    assert p.coverage is not None and p.coverage.n_gaps == 0 and p.coverage.missing_s == 0.0
    assert p.coverage.lead_missing_s == pytest.approx({"II": 2.0})
    assert p.leads == ("I",) and "II" in p.quality.dropped_leads and "gap" in p.quality.flags
    assert p.window_starts_s[0] == 0.0 and p.window_starts_s[-1] == pytest.approx(26.0)  # lead I: all of it
    assert len(p.window_rhythm) == len(p.window_starts_s) and p.rhythm is not None


@pytest.mark.parametrize(
    "name,units,kind",
    [
        ("MLII", "mV", "II"), ("ECG Lead II", "mV", "II"), ("EKG aVR", "mV", "aVR"), ("D1", "mV", "I"),
        ("V5", "uV", "V5"), ("PLETH", "NU", "other"), ("ABP", "mmHg", "other"), ("SpO2", "%", "other"),
        ("RESP", "", "other"), ("EEG Fpz-Cz", "uV", "other"), ("EDF Annotations", "", "other"),
        ("II", "mmHg", "other"), ("HR", "bpm", "other"), ("MCL1", "mV", "unknown"), ("V", "mV", "unknown"),
        ("ECG", "mV", "unknown"), ("ECG 1", "mV", "unknown"), ("ch1", "", "unknown"), ("col 0", "", "unknown"),
        ("vx", "mV", "vector"),
    ],
)
def test_channel_kinds(name, units, kind):
    from kmerl_edge._channels import select_channels

    if kind in {"other", "unknown", "vector"}:
        c = select_channels(["I", name], ["mV", units])
        assert c.leads == ("I",)
        note = " ".join(c.notes)
        assert name in note
        assert {"other": "not ECG", "unknown": "unknown position", "vector": "vector leads"}[kind] in note
    else:
        assert select_channels([name], [units]).leads == (kind,)


def test_per_window_results_are_packed_but_read_back_identically(ecg, clf):
    from kmerl_edge.rhythm import analyse

    x, fs = ecg
    long = np.tile(x, 4)  # 48 s
    p = clf.predict(long, fs=fs, leads=["I", "II"])
    n = len(p.window_starts_s)
    assert len(p.window_scores) == len(p.window_rhythm) == n
    assert p.window_scores[-1] == p.window_scores[n - 1] and isinstance(p.window_scores[0], dict)
    lead = p.window_rhythm[0].lead
    row = ["I", "II"].index(lead)
    for k, start in enumerate(p.window_starts_s):  # the same result analyse gives on that window
        a = int(round(start * fs))
        assert p.window_rhythm[k] == analyse(long[row, a : a + int(10 * fs)], fs=fs, lead=lead, t0=start)
    assert list(p.window_rhythm[1:3]) == [p.window_rhythm[1], p.window_rhythm[2]]
    assert json.loads(json.dumps(p.to_dict()))["window_rhythm"][0]["n_beats"] == p.window_rhythm[0].n_beats


def test_multi_segment_checksums_are_verified(tmp_path, clf):
    from benchmarks.records_corpus import make_corpus

    items = {it.name: it for it in make_corpus(tmp_path, small=True)}
    base = Path(items["multiseg"].path)
    assert ke.read_record(base).leads == ("I", "II")  # intact: verified and read
    dat = tmp_path / "ms_1.dat"
    raw = bytearray(dat.read_bytes())
    raw[len(raw) // 2] ^= 0x08
    dat.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="segment ms_1"):
        ke.read_record(base)
    with pytest.raises(ChecksumError):
        clf.predict_record(base)
