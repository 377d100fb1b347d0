"""The scripts in examples/ run as a user runs them (subprocesses, real files, real pty)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 240) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_classify_file_example():
    out = _run("classify_file.py")
    assert "apple_watch_ecg_cpsc2021_101_9: I at 512 Hz, 30.0 s" in out
    assert "rhythm:" in out and out.count("window ") == 5


def test_stream_patch_example():
    out = _run("stream_patch.py", "--seconds", "16", "--speed", "40")
    spans = [ln.split(" s")[0].split("–") for ln in out.splitlines() if "–" in ln and "rhythm" not in ln[:3]]
    starts = [float(a) for a, _ in spans]
    # one 10-s window every 2 s (the patch may start sending before the reader attached: start ≤ 0.5 s)
    assert len(spans) >= 3 and starts[0] <= 0.5
    assert all(abs(float(b) - float(a) - 10.0) < 1e-6 for a, b in spans)
    assert all(abs(y - x - 2.0) < 1e-6 for x, y in zip(starts, starts[1:]))
    assert "'scored': " in out


@pytest.mark.slow  # distillation + ONNX export + parity: ~40 s on 2 cores
def test_export_bundle_example(tmp_path):
    out = _run("export_bundle.py", "--teacher", "random:kmerl-test-micro", "--student", "kmerl-test-micro",
               "--out", str(tmp_path / "b"), "--steps", "3", "--backends", "onnxruntime", timeout=600)
    assert f"bundle: {tmp_path / 'b'}" in out and "top:" in out
    assert (tmp_path / "b" / "manifest.json").exists()
