"""The CLI surface and the random-weights test bundle builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.cli import main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("bundle", "queries", "tensorrt"):
        assert cmd in out


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["queries", "--bundle", str(tmp_path / "missing"), "--label-set", "x", "--classes", "a"])
    assert rc == 2
    assert "kmerl-export: error:" in capsys.readouterr().err


def test_tensorrt_subcommand_without_tensorrt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt installed")
    from export.test_bundle import build_random_bundle

    b = build_random_bundle(tmp_path / "b", onnx=False)
    rc = main(["tensorrt", "--bundle", str(b), "--data",
               str(Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz")])
    assert rc == 2
    assert "model.onnx" in capsys.readouterr().err  # no ONNX to build from, said clearly


def test_random_test_bundle_still_builds(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import kmerl_edge
    from export.test_bundle import build_random_bundle

    b = build_random_bundle(tmp_path / "tb", onnx=False)  # the ONNX path is covered by test_export_pipeline
    x = np.random.default_rng(0).standard_normal((1, 2, 5000)).astype(np.float32)
    out = kmerl_edge.load(b, backend="torch").backend.run(x, np.array([0, 1]))
    assert out.shape == (1, 11) and np.all(np.isfinite(out))
