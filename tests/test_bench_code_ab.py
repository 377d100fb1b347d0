"""benchmarks.superclass_stack_latency --code-ab: the measurement code of a git revision against the working
tree's, outputs compared bit for bit before anything is timed (a smoke run: one record, one round)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.superclass_stack_latency import code_ab

ROOT = Path(__file__).resolve().parents[1]


def test_code_ab_against_head_runs_and_finds_the_outputs_identical() -> None:
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                                     capture_output=True).returncode != 0:
        pytest.skip("needs a git checkout")
    res = code_ab("HEAD", n_records=1, rounds=1, iters=1)
    assert res["identical"] is True and res["predict_identical"] is True
    assert res["windows"] == {"1": 1, "3": 1, "12": 1}
    for stage in ("measure_window_us", "stack_measurements_us", "window_rhythm_features_us"):
        assert set(res[stage]) == {"old", "new", "saved"} and res[stage]["new"]["1"] > 0
    assert set(res["predict_ms"]["old"]) == {"1", "3", "12"}
