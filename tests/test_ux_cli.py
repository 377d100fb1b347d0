"""What a user sees: per-window tables, pictures, the bundle list, --version, -q and progress bars."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kmerl_edge import _cli_common
from kmerl_edge.cli import main

FORMATS = Path(__file__).resolve().parent / "fixtures" / "formats"
APPLE = FORMATS / "apple_watch_ecg_cpsc2021_101_9.csv"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_long_recording_gets_a_per_window_table_and_json(test_bundle_path, capsys):
    assert main(["classify", str(APPLE), "--bundle", str(test_bundle_path)]) == 0
    out = capsys.readouterr().out
    assert "per window (5 windows" in out
    rows = [ln for ln in out.splitlines() if "–" in ln and ln.strip()[:1].isdigit()]
    assert [r.split()[0] for r in rows] == ["0.0–", "5.0–", "10.0–", "15.0–", "20.0–"]
    assert main(["classify", str(APPLE), "--bundle", str(test_bundle_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(w["start_s"], w["end_s"]) for w in doc["windows"]] == [(0, 10), (5, 15), (10, 20), (15, 25), (20, 30)]
    assert set(doc["windows"][0]["scores"]) == {"ptbxl_superclass", "rhythm"}


def test_short_recording_has_no_window_table(test_bundle_path, records_dir, capsys):
    assert main(["classify", str(records_dir / "00001_hr"), "--leads", "I,II", "--bundle", str(test_bundle_path)]) == 0
    assert "per window" not in capsys.readouterr().out


def test_classify_plot_is_a_true_scale_png(test_bundle_path, tmp_path, capsys):
    out = tmp_path / "strip.png"
    assert main(["classify", str(APPLE), "--bundle", str(test_bundle_path), "--plot", str(out)]) == 0
    assert f"plot     {out}" in capsys.readouterr().out
    w, h = _png_size(out)
    # 10 s at 25 mm/s = 250 mm of strip plus 30 mm of margins, at 150 dpi
    assert abs(w - (250 + 30) / 25.4 * 150) <= 1
    assert h > w / 2  # three 10-s rows and two score panels
    assert not list(tmp_path.glob("*.part"))


def test_stream_plot_on_close(test_bundle_path, records_dir, tmp_path, capsys):
    out = tmp_path / "timeline.png"
    args = ["stream", "--source", str(records_dir / "data_101_6"), "--speed", "1000", "--leads", "I",
            "--max-seconds", "30", "--bundle", str(test_bundle_path), "--backend", "onnxruntime", "--plot", str(out)]
    assert main(args) == 0
    assert f"plot: {out}" in capsys.readouterr().out
    assert _png_size(out) == (1300, 832)


def test_plot_without_matplotlib_names_the_extra(test_bundle_path, tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from kmerl_edge.cli import main\n"
        f"sys.exit(main(['classify', {str(APPLE)!r}, '--bundle', {str(test_bundle_path)!r}, "
        f"'--plot', {str(tmp_path / 'x.png')!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "kmerl-edge[plot]" in r.stderr and "Traceback" not in r.stderr


def test_models_lists_the_default_and_user_bundles(test_bundle_path, tmp_path, monkeypatch, capsys):
    shutil.copytree(test_bundle_path, tmp_path / "my-patch-model")
    monkeypatch.setenv("KMERL_EDGE_BUNDLES", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default_bundle  [default]" in out and "my-patch-model  [user]" in out
    assert "label set   rhythm: atrial fibrillation" in out
    assert "AUC         ptbxl_fold10_superclass (n=66" in out  # measured, from the default bundle's manifest
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["source"] for d in doc] == ["default", "companion", "user"]
    assert doc[0]["max_leads"] == 3 and doc[1]["max_leads"] == 12 and doc[2]["auc"] == {}


@pytest.mark.parametrize(
    "module,prog",
    [("kmerl_edge.cli", "kmerl-edge"), ("trainer.cli", "kmerl-train"), ("export.cli", "kmerl-export"),
     ("firmware_bridge.cli", "kmerl-bridge"), ("benchmarks.cli", "kmerl-bench")],
)
def test_every_command_has_version_and_verbosity(module, prog, capsys):
    import importlib

    from kmerl_edge import __version__

    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {__version__}"
    with pytest.raises(SystemExit):
        mod.main(["-h"])
    usage = capsys.readouterr().out
    assert "-v, --verbose" in usage and "-q, --quiet" in usage


def test_quiet_hides_progress_and_verbose_lets_third_party_notices_through():
    import logging

    assert _cli_common.configure(verbose=0, quiet=True) == -1
    items = [1, 2, 3]
    assert _cli_common.progress(items, desc="x") is items  # no bar object at all
    _cli_common.configure(verbose=0, quiet=False)
    assert logging.getLogger("torchao").getEffectiveLevel() == logging.ERROR
    bar = _cli_common.progress(items, desc="x")
    assert bar is not items and list(bar) == items
    _cli_common.configure(verbose=1, quiet=False)
    assert logging.getLogger("torchao").getEffectiveLevel() <= logging.INFO
    _cli_common.configure(verbose=0, quiet=False)


@pytest.mark.slow  # imports torch and torchao twice (~25 s)
def test_torchao_import_notices_are_silenced_unless_verbose():
    pytest.importorskip("torchao")
    code = (
        "import sys\nfrom kmerl_edge._cli_common import configure\n"
        "configure(verbose=int(sys.argv[1]))\nimport torchao\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True, timeout=300)
    loud = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "torchao" not in quiet.stderr
    if "torchao" not in loud.stderr:
        pytest.skip("this torchao build prints nothing on import")
