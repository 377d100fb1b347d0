"""Cold load time of each backend: a fresh process imports ``kmerl_edge`` and runs ``load(bundle, backend)``
(library import, bundle verification, session creation, warm-up), timed from process start.

This is the one-off cost ``backend="auto"`` weighs against per-window latency
(:data:`kmerl_edge._backends.FAMILIES`). Native backends are probed in a child process the first time a
bundle is loaded (see :mod:`kmerl_edge._probe`); ``first`` includes that probe, ``cached`` is a later load.

    python -m benchmarks.load_time [--bundle B] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import sys, time
t0 = time.perf_counter()
import kmerl_edge
clf = kmerl_edge.load(sys.argv[1] or None, backend=sys.argv[2])
print(time.perf_counter() - t0, clf.backend_name)
"""


def _one(bundle: str, backend: str, env: dict[str, str]) -> float:
    p = subprocess.run([sys.executable, "-c", _CHILD, bundle, backend], capture_output=True, text=True, env=env,
                       timeout=900)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    return float(p.stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load_time", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="", help="bundle directory (default: the shipped bundle)")
    ap.add_argument("--backends", default="auto,onnxruntime,onnxruntime-int8,torch,executorch,executorch-int8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "KMERL_EDGE_CACHE_DIR": cache}
        for backend in [b.strip() for b in a.backends.split(",") if b.strip()]:
            try:
                first = _one(a.bundle, backend, env)
                cached = [_one(a.bundle, backend, env) for _ in range(a.repeats)]
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                rows.append({"backend": backend, "error": str(exc)})
                print(f"{backend:18s} unavailable: {exc}")
                continue
            med = statistics.median(cached)
            rows.append({"backend": backend, "first_s": round(first, 3), "median_s": round(med, 3),
                         "min_s": round(min(cached), 3), "max_s": round(max(cached), 3), "n": len(cached)})
            print(f"{backend:18s} first {first:6.2f} s   median {med:6.2f} s  (min {min(cached):.2f}, "
                  f"max {max(cached):.2f}, n={len(cached)})")
    if a.json:
        Path(a.json).write_text(json.dumps({"bundle": a.bundle or "default", "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
