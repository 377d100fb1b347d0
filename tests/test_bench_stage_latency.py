"""The per-stage latency benchmark runs on the shipped default bundle and times every stage it carries."""

from __future__ import annotations

import json

from benchmarks.stage_latency import main


def test_stage_latency_times_each_stage_of_the_default_bundle(tmp_path, capsys):
    out = tmp_path / "stages.json"
    assert main(["--leads", "1", "--iters", "2", "--warmup", "0", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["leads"] == ["I"] and row["rhythm_lead"] == "I"
    # the default bundle carries an AF fusion and a superclass stack: both are timed, beside the rest
    assert list(row["stages"]) == ["preprocess", "model", "rhythm", "fusion", "superclass_stack", "run_windows",
                                   "end_to_end"]
    assert all(v["median_ms"] > 0 and v["p99_ms"] >= v["median_ms"] for v in row["stages"].values())
    assert "1 lead(s): preprocess" in capsys.readouterr().out
