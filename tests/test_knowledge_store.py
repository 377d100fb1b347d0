"""Writing / loading the knowledge directory, the SCP composer and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from trainer.knowledge import (
    KnowledgeFormatError,
    compose_english_report,
    extract_knowledge,
    load_knowledge,
    load_scp_statements,
    parse_scp_codes,
)
from trainer.knowledge.cli import main

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "knowledge"
PTBXL = REPO.parent / "shared" / "data" / "ptbxl"


def test_parse_scp_codes_is_literal_only() -> None:
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0.0}") == {"NORM": 100.0, "SR": 0.0}
    with pytest.raises(KnowledgeFormatError):
        parse_scp_codes("__import__('os').getcwd()")
    with pytest.raises(KnowledgeFormatError):
        parse_scp_codes("['NORM']")


@pytest.mark.skipif(not PTBXL.exists(), reason="shared PTB-XL data absent")
def test_compose_english_report_from_scp_codes() -> None:
    st = load_scp_statements(PTBXL / "scp_statements.csv")
    assert compose_english_report("{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}", st) == (
        "Sinus rhythm. Normal ECG. Low QRS voltages in the frontal and horizontal leads.")
    assert compose_english_report({"IMI": 15.0, "SR": 0.0}, st, hedge=True) == (
        "Sinus rhythm. Possible inferior myocardial infarction.")
    with pytest.raises(KnowledgeFormatError):
        compose_english_report({"XYZ": 1.0}, st)


def test_roundtrip_rows_follow_record_ids(tmp_path: Path) -> None:
    reports = ["sinus rhythm. left bundle branch block.", "", "possible atrial fibrillation", "sinus rhythm"]
    ids = ["b", "a", 7, "z"]
    extract_knowledge(reports, ids, out_dir=tmp_path)
    k = load_knowledge(tmp_path)
    assert k.record_ids == ("b", "a", 7, "z")
    assert isinstance(k.label_matrix, sp.csr_matrix) and k.label_matrix.dtype == np.uint8
    assert k.vocabulary[0] == "sinus rhythm" and k.counts["sinus rhythm"] == 2
    assert k.row(7)[k.vocabulary.index("atrial fibrillation")] == 1
    assert k.uncertain_matrix[2, k.vocabulary.index("atrial fibrillation")] == 1
    assert k.row("a").sum() == 0 and k.stats["reports_with_none"] == 1 and k.stats["coverage"] == 0.75
    assert "complete left bundle branch block" in k.superclasses["CD"]
    assert k.scp_codes["complete left bundle branch block"] == ("CLBBB",)
    assert (tmp_path / "entity_names.txt").read_text().splitlines() == k.entity_texts()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    with np.load(tmp_path / "labels.npz", allow_pickle=False) as z:
        assert z["format"].item() in (b"csr", "csr")


def test_load_refuses_mixed_or_tampered_files(tmp_path: Path) -> None:
    extract_knowledge(["sinus rhythm"], [1], out_dir=tmp_path / "a")
    extract_knowledge(["atrial flutter", "sinus rhythm"], [1, 2], out_dir=tmp_path / "b")
    (tmp_path / "a" / "labels.npz").write_bytes((tmp_path / "b" / "labels.npz").read_bytes())
    with pytest.raises(KnowledgeFormatError, match="hash"):
        load_knowledge(tmp_path / "a")
    doc = json.loads((tmp_path / "b" / "entities.json").read_text())
    doc["schema_version"] = 99
    (tmp_path / "b" / "entities.json").write_text(json.dumps(doc))
    with pytest.raises(KnowledgeFormatError, match="schema"):
        load_knowledge(tmp_path / "b")
    with pytest.raises(ValueError, match="unique"):
        extract_knowledge(["a", "b"], [1, 1], out_dir=tmp_path / "c")
    with pytest.raises(ValueError):
        extract_knowledge(["a", "b"], [1], out_dir=tmp_path / "c")


def test_min_count_drops_rare_entities(tmp_path: Path) -> None:
    extract_knowledge(["sinus rhythm", "sinus rhythm. atrial flutter"], [1, 2], out_dir=tmp_path, min_count=2)
    k = load_knowledge(tmp_path)
    assert k.vocabulary == ("sinus rhythm",) and k.stats["dropped_below_min_count"] == ["atrial flutter"]


def test_cli_extract_stats_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k"
    assert main(["extract", "--reports", str(FIX / "reports.csv"), "--out", str(out), "--no-progress"]) == 0
    k = load_knowledge(out)
    assert k.record_ids == ("1", "2", "3", "4", "5", "6") and k.stats["reports_with_none"] == 1
    assert "atrial fibrillation" not in k.vocabulary  # negated in report 5
    capsys.readouterr()
    assert main(["stats", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["n_reports"] == 6
    assert main(["dry-run", "--reports", str(FIX / "reports.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["n_empty_reports"] == 1
    assert main(["stats", str(tmp_path / "missing")]) == 1


def test_python_m_entry_point(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "trainer.knowledge", "dry-run", "--reports",
                        str(FIX / "reports.csv")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_reports"] == 6


@pytest.mark.parametrize("argv", [
    ["-q", "knowledge", "extract"],  # the global option before the command, as every kmerl-train command takes it
    ["knowledge", "-q", "extract"],
    ["knowledge", "extract", "-q"],
])
def test_kmerl_train_knowledge_takes_quiet_anywhere(argv: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``kmerl-train -q knowledge extract ...`` (reported: "unrecognized arguments") runs quietly: no
    progress bar on stderr, the result line on stdout."""
    from trainer.cli import main as train_main

    out = tmp_path / "k"
    assert train_main(argv + ["--reports", str(FIX / "reports.csv"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert load_knowledge(out).record_ids == ("1", "2", "3", "4", "5", "6")
    assert captured.out.startswith(f"wrote {out}") and "it/s" not in captured.err and "%|" not in captured.err
