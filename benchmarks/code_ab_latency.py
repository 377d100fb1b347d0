"""A/B of end-to-end ``predict`` latency per 10-s window between two source trees of ``kmerl_edge`` (e.g. before
and after a change), alternating rounds so both see the same machine load.

    git archive <base commit> | tar -x -C /tmp/base
    python -m benchmarks.code_ab_latency --a /tmp/base --b . --rounds 20 --iters 25

Each side runs in its own Python process with its tree first on ``sys.path`` (both alive for the whole run;
only one scores at a time, the order alternating each round). Each tree scores with its own shipped bundles:
1 lead (I) and 3 leads (I, II, V2) by ``default_bundle``, 12 leads by ``default_bundle_12``, on the real
PTB-XL record ``tests/fixtures/records/00001_hr`` (500 Hz), ONNX Runtime int8, one thread, no companion.
Median milliseconds per call.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REC = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "records" / "00001_hr"

_WORKER = r"""
import json, sys, time
import numpy as np
import kmerl_edge
r = kmerl_edge.read_record(sys.argv[1])
cases = {1: ("default_bundle", ["I"]), 3: ("default_bundle", ["I", "II", "V2"]),
         12: ("default_bundle_12", list(r.leads))}
root = kmerl_edge.__file__.rsplit("/", 1)[0]
data = {k: np.ascontiguousarray(r.signal[[list(r.leads).index(x) for x in v[1]], :5000]) for k, v in cases.items()}
clf = {k: kmerl_edge.load(f"{root}/{b}", backend="onnxruntime-int8", threads=1, companion=False)
       for k, (b, _) in cases.items()}
for k in cases:
    for _ in range(10):
        clf[k].predict(data[k], fs=r.fs, leads=cases[k][1])
print(json.dumps({"ready": root}), flush=True)
for line in sys.stdin:
    k, iters = (int(v) for v in line.split())
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        clf[k].predict(data[k], fs=r.fs, leads=cases[k][1])
        out.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(out), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.code_ab_latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="source tree A (holds kmerl_edge/)")
    ap.add_argument("--b", required=True, help="source tree B")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    procs = {}
    for side, tree in (("a", a.a), ("b", a.b)):
        code = f"import sys; sys.path.insert(0, {str(Path(tree).resolve())!r})\n" + _WORKER
        p = subprocess.Popen([sys.executable, "-c", code, str(REC)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout is not None
        ready = json.loads(p.stdout.readline())["ready"]
        if not ready.startswith(str(Path(tree).resolve())):
            raise SystemExit(f"side {side} imported kmerl_edge from {ready}, not from {tree}")
        procs[side] = p
    cases = (1, 3, 12)
    times: dict[str, dict[int, list[float]]] = {s: {k: [] for k in cases} for s in procs}
    try:
        for rnd in range(a.rounds):
            for side in (("a", "b") if rnd % 2 == 0 else ("b", "a")):
                p = procs[side]
                assert p.stdin is not None and p.stdout is not None
                for k in cases:
                    p.stdin.write(f"{k} {a.iters}\n")
                    p.stdin.flush()
                    times[side][k].extend(json.loads(p.stdout.readline()))
    finally:
        for p in procs.values():
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=60)
    res: dict[str, object] = {side: {str(k): round(float(np.median(v)), 4) for k, v in d.items()}
                              for side, d in times.items()}
    res["b_minus_a"] = {str(k): round(float(np.median(times["b"][k]) - np.median(times["a"][k])), 4) for k in cases}
    res["calls_per_side_and_lead_count"] = a.rounds * a.iters
    res["trees"] = {"a": str(a.a), "b": str(a.b)}
    print(json.dumps(res))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
