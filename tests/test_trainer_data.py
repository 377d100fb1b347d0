"""Dataset readers against real records (../shared/data and tests/fixtures/trainer)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from trainer._errors import DatasetFormatError
from trainer.data import (
    MIMIC_MEASUREMENT_COLUMNS,
    MIMIC_RECORD_LIST_COLUMNS,
    clean_mimic_report,
    load_item,
    read_cinc,
    read_cpsc2018,
    read_cpsc2021_af,
    read_merl_split,
    read_mimic_iv_ecg,
    read_ptbxl,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIX = Path(__file__).resolve().parent / "fixtures" / "trainer"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not available")


def _header_first_values(hea: Path) -> tuple[list[str], np.ndarray]:
    """Lead names and first samples in mV from a WFDB header's 'initial value' column."""
    h = wfdb.rdheader(str(hea.with_suffix("")))
    return list(h.sig_name), np.asarray(h.init_value, dtype=np.float64) / np.asarray(h.adc_gain)


def test_mimic_schema_matches_shared_schema() -> None:
    if SHARED.is_dir():
        for name, cols in (("record_list.csv", MIMIC_RECORD_LIST_COLUMNS),
                           ("machine_measurements.csv", MIMIC_MEASUREMENT_COLUMNS)):
            assert tuple(next(csv.reader((SHARED / "mimic_iv_ecg_schema" / name).open()))) == cols
    for name, cols in (("record_list.csv", MIMIC_RECORD_LIST_COLUMNS),
                       ("machine_measurements.csv", MIMIC_MEASUREMENT_COLUMNS)):
        assert tuple(next(csv.reader((FIX / "mimic_iv_ecg" / name).open()))) == cols


def test_mimic_reader_joins_by_study_id_and_fills_nan() -> None:
    ds = read_mimic_iv_ecg(FIX / "mimic_iv_ecg")
    # ecg 4's report ("normal ecg", 2 words) is dropped, study 40000005 has no measurements
    assert ds.skipped == {"short_report": 1, "no_measurements": 1}
    by_id = {it.record_id: it for it in ds.items}
    assert set(by_id) == {"40689238", "45090959", "42706358"}
    # measurements rows are in reverse order in the CSV: the report must follow the study, not the row
    assert by_id["45090959"].report == "sinus bradycardia. normal ecg"
    assert by_id["40689238"].report.startswith("sinus rhythm. normal ecg. low qrs voltages")
    rec = load_item(by_id["40689238"])
    assert rec.leads == ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
    assert np.isfinite(rec.signal).all()
    raw = wfdb.rdrecord(str(Path(by_id["40689238"].path)))
    assert np.isnan(raw.p_signal[10, 0]) and np.isnan(raw.p_signal[500, 7])
    # the NaN sample is filled along time (linear between its neighbours)
    assert rec.signal[0, 10] == pytest.approx(0.5 * (raw.p_signal[9, 0] + raw.p_signal[11, 0]), abs=1e-6)
    names, first = _header_first_values(Path(by_id["42706358"].path).with_suffix(".hea"))
    np.testing.assert_allclose(load_item(by_id["42706358"]).signal[:, 0], first, atol=1e-6)


@needs_shared
def test_mimic_fixture_holds_the_real_ptbxl_values() -> None:
    ds = read_mimic_iv_ecg(FIX / "mimic_iv_ecg")
    mimic = load_item(next(it for it in ds.items if it.record_id == "42706358"))  # PTB-XL ecg_id 3
    ptb = wfdb.rdrecord(str(SHARED / "ptbxl" / "records100" / "00000" / "00003_lr"))
    upper = [n.upper() for n in ptb.sig_name]
    for row, lead in enumerate(mimic.leads):
        np.testing.assert_allclose(mimic.signal[row], ptb.p_signal[:, upper.index(lead.upper())], atol=1e-6)


def test_mimic_reader_named_errors(tmp_path: Path) -> None:
    shutil.copytree(FIX / "mimic_iv_ecg", tmp_path / "m")
    with pytest.raises(DatasetFormatError):
        read_mimic_iv_ecg(tmp_path / "nope")
    p = tmp_path / "m" / "machine_measurements.csv"
    rows = list(csv.reader(p.open()))
    with p.open("w", newline="") as fh:
        csv.writer(fh).writerows([r[:4] + r[5:] for r in rows])  # drop report_0
    with pytest.raises(DatasetFormatError, match="report_0"):
        read_mimic_iv_ecg(tmp_path / "m")


def test_clean_mimic_report() -> None:
    assert clean_mimic_report(["Sinus rhythm.", "", "nan", "*** Abnormal EKG ***"]) == "sinus rhythm. abnormal ecg"


@needs_shared
def test_ptbxl_reader_values_and_reports() -> None:
    ds = read_ptbxl(SHARED / "ptbxl", rate=500)
    assert len(ds) == 500 and ds.skipped == {}
    it = ds.items[0]
    assert it.record_id == "1" and it.labels == ("LVOLT", "NORM", "SR")
    assert it.report.startswith("Sinus rhythm. Normal ECG.")
    assert it.meta["report_de"] == "sinusrhythmus periphere niederspannung"
    rec = load_item(it)
    assert rec.fs == 500 and rec.signal.shape == (12, 5000)
    names, first = _header_first_values(SHARED / "ptbxl" / "records500" / "00000" / "00001_hr.hea")
    np.testing.assert_allclose(rec.signal[:, 0], first, atol=1e-6)
    lr = load_item(read_ptbxl(SHARED / "ptbxl", rate=100).items[0])
    assert lr.fs == 100 and lr.signal.shape == (12, 1000)


@needs_shared
def test_cinc_reader_snomed_and_values() -> None:
    ds = read_cinc(SHARED / "cinc2021")
    assert len(ds) == 50
    it = next(i for i in ds.items if i.record_id == "E07500")
    assert it.labels == ("67741000119109", "426177001")
    rec = load_item(it)
    names, first = _header_first_values(SHARED / "cinc2021" / "E07500.hea")
    np.testing.assert_allclose(rec.signal[:, 0], first, atol=1e-6)
    raw = scipy.io.loadmat(str(SHARED / "cinc2021" / "E07500.mat"))["val"]
    np.testing.assert_allclose(rec.signal, raw / 1000.0, atol=1e-6)


def test_cinc_report_uses_the_cleaned_snomed_text(tmp_path: Path) -> None:
    # the committed E07500 record, its Dx line extended with codes whose official names are misspelt
    records = Path(__file__).resolve().parent / "fixtures" / "records"
    shutil.copy(records / "E07500.mat", tmp_path / "E07500.mat")
    hea = (records / "E07500.hea").read_text().replace(
        "# Dx: 67741000119109,426177001", "# Dx: 67741000119109,426177001,164917005,251199005,270492004,55930002")
    (tmp_path / "E07500.hea").write_text(hea)
    (it,) = read_cinc(tmp_path).items
    assert it.labels == ("67741000119109", "426177001", "164917005", "251199005", "270492004", "55930002")
    assert it.report == ("left atrial enlargement. sinus bradycardia. q wave abnormal. counterclockwise rotation. "
                         "first degree av block. st changes.")
    assert "qwave" not in it.report and "countercolockwise" not in it.report


@needs_shared
def test_cpsc2018_reader_with_reference_csv(tmp_path: Path) -> None:
    ref = tmp_path / "REFERENCE.csv"
    ref.write_text("Recording,First_label,Second_label,Third_label\nA1980,6,,\nA1981,8,1,\nA9999,1,,\n")
    ds = read_cpsc2018(SHARED / "cpsc2018", reference=ref)
    assert [(i.record_id, i.labels) for i in ds.items] == [("A1980", ("PAC",)), ("A1981", ("STD", "NORM"))]
    assert ds.skipped == {"missing_file": 1}
    rec = load_item(ds.items[0])
    data = scipy.io.loadmat(str(SHARED / "cpsc2018" / "A1980.mat"))["ECG"][0, 0]["data"]
    np.testing.assert_allclose(rec.signal, data, atol=1e-6)
    ref.write_text("Recording,First_label\nA1980,12\n")
    with pytest.raises(DatasetFormatError):
        read_cpsc2018(SHARED / "cpsc2018", reference=ref)


@needs_shared
def test_cpsc2021_af_windows() -> None:
    ds = read_cpsc2021_af(SHARED / "cpsc2021")
    by_rec: dict[str, list] = {}
    for it in ds.items:
        by_rec.setdefault(it.meta["record"], []).append(it)
    assert all(i.labels == ("AF",) for i in by_rec["data_84_1"])  # persistent AF
    assert all(i.labels == ("non-AF",) for i in by_rec["data_21_7"])  # no AF
    # data_101_6: AF from sample 3132 to 5639 (200 Hz) → window 20-30 s (4000-6000) is 82 % AF
    w = next(i for i in by_rec["data_101_6"] if i.start_s == 20.0)
    assert w.meta["af_fraction"] == pytest.approx((5639 - 4000) / 2000)
    assert w.labels == ("AF",)
    rec = load_item(w)
    assert rec.signal.shape == (2, 2000) and rec.leads == ("I", "II")
    full = wfdb.rdrecord(str(SHARED / "cpsc2021" / "data_101_6"))
    np.testing.assert_allclose(rec.signal[:, 0], full.p_signal[4000], atol=1e-5)


@needs_shared
def test_merl_splits() -> None:
    splits = SHARED / "merl_splits"
    ds = read_merl_split(splits, "ptbxl_super", "test", data_root=SHARED / "ptbxl")
    assert ds.classes == ("HYP", "NORM", "MI", "CD", "STTC")
    assert len(ds) == 64 and ds.skipped["missing_file"] > 0  # only ecg_id 1-500 are in shared/
    y = ds.label_matrix()
    assert y.shape == (64, 5) and (y.sum(1) >= 1).all()
    icbeb = read_merl_split(splits, "icbeb", "train", data_root=SHARED / "cpsc2018")
    assert len(icbeb) == 7 and len(icbeb.classes) == 9
    ch = read_merl_split(splits, "chapman", "train", data_root=SHARED / "cinc2021")
    assert len(ch) >= 1 and load_item(ch.items[0]).signal.shape == (12, 5000)
    with pytest.raises(DatasetFormatError):
        read_merl_split(splits, "ptbxl_super", "test", data_root=SHARED / "ptbxl", missing="error")
    with pytest.raises(DatasetFormatError):
        read_merl_split(splits, "nope", "test", data_root=SHARED)
