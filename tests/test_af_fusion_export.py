"""`kmerl-export af-fusion` on the real corpus: fusion fitted on the training split only, event rule tuned
on the training patients' Holter records, both sealed into the bundle and used by a session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import kmerl_edge
from kmerl_edge._af_fusion import AF_FUSION_FILE, RHYTHM_FEATURES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cpsc2021").is_dir(), reason="needs ../shared/data")
def test_af_fusion_command_fits_tunes_and_seals(tmp_path, capsys):
    from export.cli import main

    out = tmp_path / "b"
    shutil.copytree(BUNDLE, out)
    assert main(["af-fusion", "--bundle", str(out), "--data", str(SHARED)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["features"] == ["model_logit", *RHYTHM_FEATURES]
    assert "cpsc2021" in summary["sources"] and summary["af_rows"] > 100
    # tuned on training patients only: none of the held-out CPSC-2021 patients (8, 35, 66, 101)
    assert not any(r.split("_")[1] in {"8", "35", "66", "101"} for r in summary["event_rule_tuning"]["records"])
    clf = kmerl_edge.load(out, backend="torch")
    assert clf.af_fusion is not None and clf.af_fusion.event_rule == summary["event_rule"]
    s = clf.stream(fs=200.0, leads=["I"], synchronous=True)
    assert s._detectors[0].rule == clf.af_fusion.stream_rule(s.config.hop_s)
    assert "af_fusion" in (out / "MODEL_CARD.md").read_text()
    (out / AF_FUSION_FILE).write_text((out / AF_FUSION_FILE).read_text() + " ")  # any byte changed
    with pytest.raises(kmerl_edge.TamperedArtifactError):
        kmerl_edge.load(out, backend="torch")
