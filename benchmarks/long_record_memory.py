"""Peak memory of scoring a long Holter recording from a WFDB file, by recording length.

The recording is a real CPSC-2021 record (leads I and II, 200 Hz) tiled to the requested length, with lead
III = II − I (Einthoven), written as a WFDB format-16 record in pieces (so writing it needs little memory).
Each length is scored in a fresh subprocess with :meth:`kmerl_edge.Classifier.predict_record` (the file is
read in pieces, windows go to the backend in bounded batches); the subprocess reports its peak RSS
(``ru_maxrss``) after loading the bundle, after importing ``scipy.signal`` and ``wfdb`` (the runtime's fixed
share) and after scoring. Goal: < 300 MB for 24 h, and flat in length.

    python -m benchmarks.long_record_memory [--hours 1 24] [--backend onnxruntime] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "kmerl_edge" / "data" / "cpsc2021_data_101_8"  # shipped with the package (CPSC 2021, 200 Hz)

_CHILD = r"""
import json, resource, sys, time
import kmerl_edge as ke
path, backend, bundle = sys.argv[1], sys.argv[2], (sys.argv[3] or None)
clf = ke.load(bundle, backend=backend)
rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import scipy.signal, wfdb  # what scoring a WFDB file imports anyway
rss_imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
p = clf.predict_record(path)
wall = time.perf_counter() - t0
rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_loaded_mb": rss_loaded, "rss_imported_mb": rss_imported, "rss_peak_mb": rss_peak, "wall_s": wall,
                  "windows": len(p.window_starts_s), "leads": list(p.leads), "backend": p.backend,
                  "duration_s": p.coverage.duration_s}))
"""


def write_holter(out: Path, hours: float, source: Path = SOURCE) -> Path:
    """A ``hours``-long 3-lead (I, II, III) 200-Hz WFDB record tiled from ``source``; returns its base path."""
    import wfdb

    r = wfdb.rdrecord(str(source), channels=[0, 1])
    x = np.asarray(r.p_signal, dtype=np.float64)
    x = np.column_stack([x[:, 0], x[:, 1], x[:, 1] - x[:, 0]])
    x = x[~np.isnan(x).any(axis=1)]
    gain = 1000.0  # 1 µV per unit
    d = np.clip(np.round(x * gain), -32767, 32767).astype("<i2")
    n_total = int(round(hours * 3600 * r.fs))
    name = f"holter_{int(round(hours * 60))}min"
    checks = np.zeros(3, dtype=np.int64)
    with open(out / f"{name}.dat", "wb") as f:
        done = 0
        while done < n_total:
            part = d[: min(len(d), n_total - done)]
            f.write(part.tobytes())
            checks += part.sum(axis=0, dtype=np.int64)
            done += len(part)
    first = d[0]
    lines = [f"{name} 3 {r.fs:g} {n_total}"]
    for k, lead in enumerate(("I", "II", "III")):
        lines.append(f"{name}.dat 16 {gain:g}/mV 16 0 {int(first[k])} {int(checks[k]) % 65536} 0 {lead}")
    (out / f"{name}.hea").write_text("\n".join(lines) + "\n# tiled from CPSC 2021 data_101_8 for a memory benchmark\n")
    return out / name


def measure(path: Path, backend: str, bundle: str | None) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-c", _CHILD, str(path), backend, bundle or ""], capture_output=True,
                       text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[1.0, 24.0])
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for h in a.hours:
            t0 = time.perf_counter()
            base = write_holter(Path(tmp), h)
            made = time.perf_counter() - t0
            res = measure(base, a.backend, a.bundle)
            res.update(hours=h, file_mb=round((Path(tmp) / f"{base.name}.dat").stat().st_size / 2**20, 1),
                       write_s=round(made, 1))
            rows.append(res)
            print(f"{h:5g} h  3 leads 200 Hz  file {res['file_mb']:7.1f} MB  windows {res['windows']:6d}  "
                  f"peak RSS {res['rss_peak_mb']:6.1f} MB (after load {res['rss_loaded_mb']:.1f} MB, with scipy.signal "
                  f"and wfdb imported {res['rss_imported_mb']:.1f} MB)  "
                  f"{res['wall_s']:.1f} s  backend {res['backend']}", flush=True)
            (Path(tmp) / f"{base.name}.dat").unlink()
    if a.json:
        Path(a.json).write_text(json.dumps({"benchmark": "long_record_memory", "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
