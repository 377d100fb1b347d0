"""cpuinfo's C-level messages at torch / onnxruntime import are hidden unless -v (issue #19); every other
line the import writes to stderr still reaches the user."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for a native library that prints from C on import: writes straight to file descriptor 2.
FAKE = textwrap.dedent(
    """
    import os
    os.write(2, b"Error in cpuinfo: prctl(PR_SVE_GET_VL) failed\\n")
    os.write(2, b"a real warning from the library\\n")
    os.write(2, b"Warning in cpuinfo: unknown vendor\\n")
    """
)


def _run(tmp_path: Path, verbose: int) -> str:
    pkg = tmp_path / "torch"  # the hook wraps the import of top-level 'torch' (and 'onnxruntime')
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAKE)
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from kmerl_edge._cli_common import configure\n"
        f"configure(verbose={verbose})\n"
        "import torch\n"
        "print('imported', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_cpuinfo_lines_are_hidden_and_the_rest_kept(tmp_path: Path) -> None:
    err = _run(tmp_path, 0)
    assert "cpuinfo" not in err
    assert "a real warning from the library" in err and err.index("a real warning") < err.index("imported")


def test_verbose_shows_cpuinfo_lines(tmp_path: Path) -> None:
    err = _run(tmp_path, 1)
    assert "Error in cpuinfo" in err and "Warning in cpuinfo" in err
