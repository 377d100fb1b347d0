"""`kmerl-edge classify` / `info` as a user runs them: real files, one-line errors, exit codes."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import kmerl_edge as ke
from kmerl_edge.cli import main


def test_classify_a_wfdb_record_prints_every_label_set(test_bundle_path, records_dir, capsys):
    assert main(["classify", str(records_dir / "00001_hr"), "--bundle", str(test_bundle_path)]) == 0
    out = capsys.readouterr().out
    assert "ptbxl_superclass:" in out and "rhythm:" in out and "normal ECG" in out
    assert "randomly initialised" in out


def test_classify_json_for_a_cinc_mat_record(test_bundle_path, records_dir, capsys):
    args = ["classify", str(records_dir / "E07500.mat"), "--bundle", str(test_bundle_path), "--json"]
    assert main(args + ["--leads", "I,II"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["leads"] == ["I", "II"] and out["fs"] == 500.0
    assert set(out["scores"]) == {"ptbxl_superclass", "rhythm"}


def test_classify_npy_needs_fs_and_leads(test_bundle_path, records_dir, tmp_path, capsys):
    r = ke.read_record(records_dir / "00001_hr")
    np.save(tmp_path / "x.npy", r.signal[:1])
    assert main(["classify", str(tmp_path / "x.npy"), "--bundle", str(test_bundle_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kmerl-edge: error:") and "sampling rate" in err
    assert main(["classify", str(tmp_path / "x.npy"), "--fs", "500", "--leads", "I", "--bundle", str(test_bundle_path)]) == 0


def test_classify_csv(test_bundle_path, records_dir, tmp_path, capsys):
    r = ke.read_record(records_dir / "00001_hr")
    np.savetxt(tmp_path / "x.csv", r.signal[:2].T, delimiter=",", header="I,II", comments="")
    args = ["classify", str(tmp_path / "x.csv"), "--fs", "500", "--leads", "I,II", "--bundle", str(test_bundle_path)]
    assert main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leads"] == ["I", "II"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["classify", "nope/none"], "no such record"),
        (["classify", "{rec}", "--leads", "V9"], "unknown lead"),
        (["info", "{tmp}"], "manifest.json"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, needle, test_bundle_path, records_dir, tmp_path, capsys):
    args = [a.format(rec=records_dir / "00001_hr", tmp=tmp_path) for a in args]
    if args[0] == "classify":
        args += ["--bundle", str(test_bundle_path)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_tampered_bundle_is_refused_by_the_cli(test_bundle_path, records_dir, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(test_bundle_path, b)
    (b / "queries.safetensors").write_bytes((b / "queries.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    assert main(["classify", str(records_dir / "00001_hr"), "--bundle", str(b)]) == 1
    assert "queries.safetensors" in capsys.readouterr().err


def test_info_prints_manifest_and_card(test_bundle_path, capsys):
    assert main(["info", str(test_bundle_path)]) == 0
    out = capsys.readouterr().out
    assert '"schema_version": 2' in out and "Model card" in out and "verified" in out


def test_console_script_runs_as_a_subprocess(test_bundle_path, records_dir):
    p = subprocess.run(
        [sys.executable, "-m", "kmerl_edge.cli", "classify", str(records_dir / "00017_hr"), "--bundle",
         str(test_bundle_path), "--leads", "I,II,V2", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["leads"] == ["I", "II", "V2"]
