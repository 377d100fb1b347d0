"""Wearable and app file formats, read by content with rate and units from the file (real fixtures).

The fixtures in tests/fixtures/formats are real records from ../shared/data converted by
tests/fixtures/formats/make_fixtures.py (EDF+ with pyedflib's writer; vendor layouts for the rest).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb
from scipy.signal import resample_poly

import kmerl_edge as ke
from kmerl_edge._formats import sniff_format

FORMATS = Path(__file__).resolve().parent / "fixtures" / "formats"
EDF = FORMATS / "ptbxl_00001_I_II_V2.edf"
APPLE = FORMATS / "apple_watch_ecg_cpsc2021_101_9.csv"
POLAR = FORMATS / "polar_h10_ecg_cpsc2021_84_2.txt"
KARDIA = FORMATS / "kardia6l_style_ptbxl_00008.csv"
ADC = FORMATS / "adc_counts_ptbxl_00017.csv"


@pytest.mark.parametrize(
    "path,kind", [(EDF, "edf"), (APPLE, "apple_watch"), (POLAR, "polar"), (KARDIA, "named_csv"), (ADC, "named_csv")]
)
def test_formats_are_recognised_by_content(path, kind, tmp_path):
    assert sniff_format(path) == kind
    renamed = tmp_path / "export.dat.txt"  # the extension says nothing; the content decides
    renamed.write_bytes(path.read_bytes())
    assert sniff_format(renamed) == kind


def test_edf_plus_reads_rate_units_and_lead_labels(records_dir):
    rec = ke.read_record(EDF)
    assert rec.fs == 500.0 and rec.leads == ("I", "II", "V2")
    src = wfdb.rdrecord(str(records_dir / "00001_hr"), channel_names=["I", "II", "V2"])
    # stored in µV with 16-bit resolution: equal to the source in mV within a quantisation step
    assert np.abs(rec.signal - src.p_signal.T).max() < 1e-3
    assert ke.read_record(EDF, leads=["V2"]).leads == ("V2",)


def test_edf_plus_discontinuous_is_refused(tmp_path):
    raw = bytearray(EDF.read_bytes())
    assert raw[192:197] == b"EDF+C"
    raw[192:197] = b"EDF+D"
    bad = tmp_path / "d.edf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ke.RecordReadError, match="discontinuous"):
        ke.read_record(bad)


def test_apple_watch_export_is_read_in_mv_at_its_stated_rate(shared_data):
    rec = ke.read_record(APPLE)
    assert rec.fs == 512.0 and rec.leads == ("I",) and rec.signal.shape == (1, 30 * 512)
    src = wfdb.rdrecord(str(shared_data / "cpsc2021/data_101_9"), channel_names=["I"], sampto=6000)
    want = resample_poly(src.p_signal[:, 0], 64, 25)  # what make_fixtures wrote, in mV
    assert np.abs(rec.signal[0] - want).max() < 1e-5  # µV with 3 decimals → mV
    assert any("Atrial Fibrillation" in c for c in rec.comments)


def test_apple_watch_decimal_comma_locale(tmp_path):
    lines = APPLE.read_text(encoding="utf-8").splitlines()
    out = [ln.replace(".", ",") if ln[:1] in "-0123456789" else ln for ln in lines]
    p = tmp_path / "ecg_pt.csv"
    p.write_text("\n".join(out) + "\n", encoding="utf-8")
    np.testing.assert_array_equal(ke.read_record(p).signal, ke.read_record(APPLE).signal)


def test_apple_watch_without_a_rate_is_a_named_error(tmp_path):
    p = tmp_path / "ecg.csv"
    p.write_text(APPLE.read_text(encoding="utf-8").replace("Sample Rate,512 hertz", "Sample Rate,"), encoding="utf-8")
    with pytest.raises(ke.SamplingRateError, match="Sample Rate"):
        ke.read_record(p)


def test_polar_rate_comes_from_the_sensor_clock_and_the_lead_must_be_named():
    with pytest.raises(ke.RecordReadError, match="--leads"):
        ke.read_record(POLAR)
    rec = ke.read_record(POLAR, leads=["I"])
    assert rec.fs == pytest.approx(130.0, abs=1e-3) and rec.leads == ("I",)
    first = int(POLAR.read_text().splitlines()[1].split(";")[3])
    assert rec.signal[0, 0] == pytest.approx(first / 1000.0)  # µV → mV


def test_polar_lost_packet_is_reported_not_filled(tmp_path):
    lines = POLAR.read_text().splitlines()
    p = tmp_path / "Polar_H10_gap_ECG.txt"
    p.write_text("\n".join(lines[:300] + lines[300 + 73:]) + "\n")  # one Bluetooth packet lost
    with pytest.raises(ke.RecordReadError, match=r"gap.*73 samples"):
        ke.read_record(p, leads=["I"])


def test_named_columns_with_time_give_rate_and_units(records_dir):
    rec = ke.read_record(KARDIA)
    assert rec.leads == ("I", "II", "III", "aVR", "aVL", "aVF") and rec.fs == 300.0
    src = wfdb.rdrecord(str(records_dir / "00008_hr"), channel_names=["I"])
    want = resample_poly(src.p_signal[:, 0], 3, 5)
    assert np.abs(rec.signal[0] - want).max() < 1e-4
    with pytest.raises(ke.SamplingRateError, match="time column says"):
        ke.read_record(KARDIA, fs=500.0)


def test_adc_counts_with_gain_equal_the_physical_record(records_dir):
    with pytest.raises(ke.SamplingRateError, match="--fs"):
        ke.read_record(ADC)
    with pytest.raises(ke.SamplingRateError, match="--gain"):
        ke.read_record(ADC, fs=500.0, units="adc")
    rec = ke.read_record(ADC, fs=500.0, units="adc", gain=1000.0)
    src = wfdb.rdrecord(str(records_dir / "00017_hr"), channel_names=["I", "II"])
    assert np.abs(rec.signal - src.p_signal.T).max() < 1e-6
    uv = ke.read_record(ADC, fs=500.0, units="uV")  # the same numbers read as µV
    np.testing.assert_allclose(uv.signal, rec.signal, rtol=1e-6)


def test_units_contradicting_the_file_are_refused(records_dir, tmp_path):
    with pytest.raises(ke.RecordReadError, match="states its own units"):
        ke.read_record(APPLE, units="mV")
    with pytest.raises(ke.RecordReadError, match="header says mv"):
        ke.read_record(KARDIA, units="uV")
    with pytest.raises(ke.RecordReadError, match="--units/--gain"):
        ke.read_record(records_dir / "00001_hr", units="uV")
    with pytest.raises(ke.SamplingRateError, match="--gain applies only"):
        ke.read_record(ADC, fs=500.0, units="mV", gain=2.0)


def test_headerless_csv_takes_units(records_dir, tmp_path):
    r = ke.read_record(records_dir / "00001_hr", leads=["I"])
    np.savetxt(tmp_path / "x.csv", r.signal.T * 1000.0, delimiter=",")
    rec = ke.read_record(tmp_path / "x.csv", fs=500.0, leads=["I"], units="uV")
    np.testing.assert_allclose(rec.signal, r.signal, atol=1e-5)


def test_errors_say_what_is_wrong(records_dir, tmp_path):
    # an existing file in an unknown format: not "looked for .hea"
    p = tmp_path / "notes.txt"
    p.write_text("hello\nworld\n")
    with pytest.raises(ke.RecordReadError, match="not a format kmerl-edge reads") as e:
        ke.read_record(p)
    assert ".hea" not in str(e.value).split("(")[0]
    with pytest.raises(ke.RecordReadError, match="no such record"):
        ke.read_record(tmp_path / "missing")
    # samples × columns CSV with the wrong number of leads: columns and samples, not "6000 channels"
    r = ke.read_record(records_dir / "00001_hr", leads=["I", "II", "V2"])
    np.savetxt(tmp_path / "three.csv", r.signal.T, delimiter=",")
    with pytest.raises(ke.RecordReadError) as e:
        ke.read_record(tmp_path / "three.csv", fs=500.0, leads=["I"])
    msg = str(e.value)
    assert "3 column(s) of 5000 samples" in msg and "5000 channels" not in msg


def _run_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, timeout=120)


def test_runtime_imports_without_file_readers_or_matplotlib(records_dir):
    heavy = ["wfdb", "pyedflib", "matplotlib", "pandas", "torch", "onnx"]
    r = _run_without(heavy, "import kmerl_edge, kmerl_edge.cli, kmerl_edge.stream; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = _run_without(heavy, f"import kmerl_edge as ke\nke.read_record({str(records_dir / '00001_hr')!r})")
    assert "MissingExtraError" in r.stderr and "kmerl-edge[io]" in r.stderr
    r = _run_without(heavy, f"import kmerl_edge as ke\nke.read_record({str(EDF)!r})")
    assert "MissingExtraError" in r.stderr and "kmerl-edge[io]" in r.stderr
    # formats that need no extra still read
    r = _run_without(heavy, f"import kmerl_edge as ke\nprint(ke.read_record({str(APPLE)!r}).fs)")
    assert r.returncode == 0 and r.stdout.strip() == "512.0", r.stderr


def test_demo_without_file_readers_names_the_extra():
    r = _run_without(["wfdb"], "from kmerl_edge.cli import main\nsys.exit(main(['demo', '--backend', 'onnxruntime']))")
    assert r.returncode == 1, r.stderr
    assert "kmerl-edge[io]" in r.stderr and "Traceback" not in r.stderr
