"""User mistakes with files and options: one clear line on stderr, a non-zero exit, never a traceback or hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge.cli import main

wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def sig(records_dir):
    r = ke.read_record(records_dir / "00001_hr", leads=["I", "II"])
    return r.signal.astype(np.float64)


def _wfdb(tmp: Path, sig: np.ndarray, names=("I", "II"), fs=500) -> Path:
    wfdb.wrsamp("r", fs=fs, units=["mV"] * len(names), sig_name=list(names), p_signal=sig[: len(names)].T,
                fmt=["16"] * len(names), write_dir=str(tmp))
    return tmp / "r"


def _npy(tmp: Path, arr, allow_pickle: bool = False) -> str:
    np.save(tmp / "x.npy", arr, allow_pickle=allow_pickle)
    return str(tmp / "x.npy")


def _file(tmp: Path, name: str, data: bytes) -> str:
    (tmp / name).write_bytes(data)
    return str(tmp / name)


NPY = ["--fs", "500", "--leads", "I,II"]


def case_binary_csv(tmp, sig):
    return [_file(tmp, "x.csv", bytes(range(256)) * 40), *NPY], "binary"


def case_latin1_csv_header_is_read(tmp, sig):  # not a mistake: Latin-1 header row, numeric body
    body = "\n".join(f"{a},{b}" for a, b in sig.T)
    return [_file(tmp, "x.csv", ("Ableitung I (µV),II\n" + body).encode("latin-1")), *NPY], None


def case_latin1_csv_text(tmp, sig):
    return [_file(tmp, "x.csv", "é,ü\nà,ö\n".encode("latin-1")), *NPY], "not a numeric CSV"


def case_empty_csv(tmp, sig):
    return [_file(tmp, "x.csv", b""), *NPY], "empty CSV"


def case_ragged_csv(tmp, sig):
    return [_file(tmp, "x.csv", b"1,2\n3\n4,5\n"), *NPY], "not a numeric CSV"


def case_object_npy(tmp, sig):
    return [_npy(tmp, np.array([{"a": 1}, None], dtype=object), allow_pickle=True), *NPY], "Python objects"


def case_truncated_npy(tmp, sig):
    p = _npy(tmp, sig)
    Path(p).write_bytes(Path(p).read_bytes()[:2000])
    return [p, *NPY], ".npy"


def case_not_an_npy(tmp, sig):
    return [_file(tmp, "x.npy", b"hello world, not numpy"), *NPY], ".npy"


def case_complex_npy(tmp, sig):
    return [_npy(tmp, sig + 1j * sig), *NPY], "complex"


def case_string_npy(tmp, sig):
    return [_npy(tmp, np.array([["a", "b"], ["c", "d"]])), *NPY], "not numeric"


def case_3d_npy(tmp, sig):
    return [_npy(tmp, sig[None]), *NPY], "2-D"


def case_empty_npy(tmp, sig):
    return [_npy(tmp, np.zeros((2, 0))), *NPY], "no samples"


def case_wrong_channel_count(tmp, sig):
    return [_npy(tmp, np.vstack([sig, sig])[:3]), *NPY], "(3, 5000)"


def case_inf_npy(tmp, sig):
    s = sig.copy()
    s[0, 3] = np.inf
    return [_npy(tmp, s), *NPY], "infinite"


def case_bad_mat(tmp, sig):
    return [_file(tmp, "x.mat", b"MATLAB 5.0 MAT-file garbage" + bytes(200))], "MATLAB"


def case_mat_without_ecg(tmp, sig):
    import scipy.io

    scipy.io.savemat(tmp / "x.mat", {"foo": np.ones(3)})
    return [str(tmp / "x.mat")], "no 'val' or 'ECG'"


def case_directory(tmp, sig):
    return [str(tmp)], "directory"


def case_missing_dat(tmp, sig):
    base = _wfdb(tmp, sig)
    (tmp / "r.dat").unlink()
    return [str(base)], "r.dat"


def case_garbage_header(tmp, sig):
    return [_file(tmp, "r.hea", b"\x00\x01\x02garbage")], "header"


def case_header_fs_negative(tmp, sig):
    base = _wfdb(tmp, sig)
    hea = tmp / "r.hea"
    hea.write_text(hea.read_text().replace(" 500 ", " -500 ", 1))
    return [str(base)], "sampling rate"


def case_npy_fs_zero(tmp, sig):
    return [_npy(tmp, sig), "--fs", "0", "--leads", "I,II"], "sampling rate"


def case_npy_fs_nan(tmp, sig):
    return [_npy(tmp, sig), "--fs", "nan", "--leads", "I,II"], "sampling rate"


def case_unknown_lead(tmp, sig):
    return [_npy(tmp, sig), "--fs", "500", "--leads", "I,XYZ"], "unknown lead"


def case_duplicate_lead(tmp, sig):
    return [_npy(tmp, sig), "--fs", "500", "--leads", "aVR,AVR"], "more than once"


def case_bad_lead_map(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--lead-map", "I"], "CHANNEL=LEAD"


def case_lead_map_unknown_channel(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--lead-map", "ECG 9=I"], "does not have"


def case_threads_huge(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--threads", "100000"], "threads"


def case_threads_zero(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--threads", "0"], "threads"


def case_too_short(tmp, sig):
    return [_npy(tmp, sig[:, :1000]), *NPY], "at least 5 s"


def case_unknown_label_set(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--label-set", "nope"], "label set"


def case_unknown_backend(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--backend", "nope"], "nope"


def case_all_flat(tmp, sig):
    return [_npy(tmp, np.zeros_like(sig)), *NPY], "no usable lead"


def case_fs_mismatch(tmp, sig):
    return [str(_wfdb(tmp, sig)), "--fs", "250"], "header says"


def case_permission_denied(tmp, sig):
    p = _npy(tmp, sig)
    os.chmod(p, 0)
    if os.access(p, os.R_OK):  # running as root: permissions do not apply
        pytest.skip("root reads every file")
    return [p, *NPY], "permission"


CASES = {k[5:]: v for k, v in sorted(globals().items()) if k.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_mistake_is_one_line(name, sig, tmp_path, test_bundle_path, capsys):
    args, needle = CASES[name](tmp_path, sig)
    code = main(["classify", *args, "--bundle", str(test_bundle_path), "--backend", "onnxruntime"]
                if "--backend" not in args else ["classify", *args, "--bundle", str(test_bundle_path)])
    out, err = capsys.readouterr()
    if needle is None:
        assert code == 0, err
        return
    assert code == 1, out
    err = err.strip()
    assert err.startswith("kmerl-edge: error:") and "\n" not in err and "Traceback" not in err, err
    assert needle.lower() in err.lower(), err


def test_e_notation_csv_keeps_its_first_row(sig, tmp_path):
    np.savetxt(tmp_path / "x.csv", sig.T, delimiter=",", fmt="%.6e")
    r = ke.read_record(tmp_path / "x.csv", fs=500, leads=["I", "II"])
    assert r.signal.shape == sig.shape
    np.testing.assert_allclose(r.signal[:, 0], sig[:, 0], rtol=1e-5, atol=1e-6)


def test_empty_stream_source(test_bundle_path, capsys):
    assert main(["stream", "--source", "", "--bundle", str(test_bundle_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "--source is empty" in err and "\n" not in err


def test_api_refuses_complex_and_threads(sig, test_bundle_path):
    with pytest.raises(ke.InvalidArgumentError):
        ke.load(test_bundle_path, backend="onnxruntime", threads=100000)
    clf = ke.load(test_bundle_path, backend="onnxruntime")
    with pytest.raises(ke.SignalShapeError, match="complex"):
        clf.predict(sig + 1j, fs=500, leads=["I", "II"])


def test_fifo_does_not_hang(tmp_path, test_bundle_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "kmerl_edge.cli", "classify", str(fifo), "--fs", "500", "--leads", "I",
           "--bundle", str(test_bundle_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "not a regular file" in p.stderr and "Traceback" not in p.stderr


def test_json_still_parses_with_notes(tmp_path, sig, test_bundle_path, capsys):
    wfdb.wrsamp("m", fs=500, units=["mV", "mmHg"], sig_name=["II", "ABP"], p_signal=sig.T, fmt=["16", "16"],
                write_dir=str(tmp_path))
    assert main(["classify", str(tmp_path / "m"), "--bundle", str(test_bundle_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["leads"] == ["II"] and any("ABP" in n for n in out["notes"]) and out["coverage"]["n_gaps"] == 0


def test_rate_that_cannot_be_resampled_is_refused_not_shifted():
    from kmerl_edge._preprocess import resample_signal

    with pytest.raises(ke.SamplingRateError, match="shifting the clock"):
        resample_signal(np.zeros((1, 10)), fs_in=1e6, fs_out=500.0)
    assert resample_signal(np.zeros((1, 360)), fs_in=360.0, fs_out=500.0).shape == (1, 500)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_signal_file_is_refused(keep, sig, tmp_path, test_bundle_path, capsys):
    base = _wfdb(tmp_path, sig)
    dat = tmp_path / "r.dat"
    raw = dat.read_bytes()
    dat.write_bytes(raw[: int(len(raw) * keep)])
    assert main(["classify", str(base), "--bundle", str(test_bundle_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kmerl-edge: error:") and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("fs", [0.001, 0.01, 10])
def test_a_record_at_a_rate_too_low_for_ecg_is_a_named_error(tmp_path, sig, fs):
    """A header with a tiny sampling rate (seen in the surface fuzz: a traceback from the scorer's chunk
    loop once the beat detector was made lazily) is refused by name, by the API and the CLI alike."""
    path = _wfdb(tmp_path, sig[:, :400], fs=fs)
    clf = ke.load(companion=False)
    with pytest.raises(ke.SamplingRateError, match="too low for ECG"):
        clf.predict_record(path)
    assert main(["classify", str(path)]) != 0
