"""The light device install: what the core and the `device` extra pull in, and the README that says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

REPO = Path(__file__).resolve().parents[1]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_core_and_device_extra_carry_no_file_readers_or_onnx():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _names(meta["dependencies"]) == {"numpy", "scipy", "safetensors"}
    extras = meta["optional-dependencies"]
    assert _names(extras["device"]) == {"onnxruntime", "pyserial"}
    assert "onnx" not in _names(extras["onnx"])  # the runtime never imports the onnx package
    assert {"wfdb", "pyedflib"} <= _names(extras["io"])
    assert "matplotlib" in _names(extras["plot"])
    for needs_wfdb in ("train", "export"):  # their readers use wfdb
        assert "wfdb" in _names(extras[needs_wfdb])


def test_readme_quick_start_extras_exist_and_pictures_are_committed():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start\n.*?```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    first = [ln for ln in block.splitlines() if ln.strip()][0]
    extras = set(re.search(r'\.\[([^\]]+)\]', first).group(1).split(","))
    defined = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert extras <= defined and "kmerl-edge demo" in first
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (REPO / img).is_file(), img
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
