"""The fleet extra stays optional: importing the bridge and the fleet package loads neither paho nor Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fleet_imports_are_lazy() -> None:
    code = ("import sys, firmware_bridge, kmerl_fleet, kmerl_fleet.cli, kmerl_fleet._ray, kmerl_fleet._source, "
            "benchmarks.fleet; print(sorted(m for m in sys.modules if m.split('.')[0] in ('paho', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_kmerl_edge_fleet_is_found_through_its_entry_point(tmp_path: Path) -> None:
    """``kmerl-edge fleet`` runs the fleet package's CLI via the ``kmerl_edge.commands`` entry point (a real
    distribution's metadata on the path, as pip writes it), never by importing it by name."""
    dist = tmp_path / "kmerl_fleet_cmd-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kmerl-fleet-cmd\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kmerl_edge.commands]\nfleet = kmerl_fleet.cli:main\n")
    out = subprocess.run([sys.executable, "-m", "kmerl_edge.cli", "fleet", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: kmerl-edge fleet" in out.stdout and "--ray-address" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "kmerl_edge.cli", "fleet", "--mqtt", "http://x"],
                         capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert bad.returncode == 2 and "mqtt://HOST" in bad.stderr and "Traceback" not in bad.stderr
