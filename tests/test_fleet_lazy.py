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
