"""A/B of end-to-end ``predict`` latency per 10-s window, bundle A against bundle B (e.g. before / after the
superclass stack), alternating rounds in one process so both see the same machine load.

    python -m benchmarks.superclass_stack_latency --a /tmp/old --b kmerl_edge --rounds 20 --iters 25

``--a`` / ``--b`` are folders holding ``default_bundle`` and ``default_bundle_12``: 1 lead (I) and 3 leads
(I, II, V2) are scored by ``default_bundle``, 12 leads by ``default_bundle_12``, on the real PTB-XL record
``tests/fixtures/records/00001_hr`` (500 Hz), ONNX Runtime int8, one thread. Median milliseconds per call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REC = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "records" / "00001_hr"


def main(argv: list[str] | None = None) -> int:
    import kmerl_edge

    ap = argparse.ArgumentParser(prog="python -m benchmarks.superclass_stack_latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    r = kmerl_edge.read_record(REC)
    cases = {1: ("default_bundle", ["I"]), 3: ("default_bundle", ["I", "II", "V2"]),
             12: ("default_bundle_12", list(r.leads))}
    data = {k: np.ascontiguousarray(r.signal[[list(r.leads).index(x) for x in v[1]], :5000]) for k, v in cases.items()}
    clf = {(side, k): kmerl_edge.load(Path(root) / b, backend="onnxruntime-int8", threads=1, companion=False)
           for side, root in (("a", a.a), ("b", a.b)) for k, (b, _) in cases.items()}
    times: dict[str, dict[int, list[float]]] = {"a": {k: [] for k in cases}, "b": {k: [] for k in cases}}
    for (_side, k), c in clf.items():  # warm up
        for _ in range(10):
            c.predict(data[k], fs=r.fs, leads=cases[k][1])
    for rnd in range(a.rounds):
        for side in (("a", "b") if rnd % 2 == 0 else ("b", "a")):
            for k in cases:
                c, leads = clf[(side, k)], cases[k][1]
                for _ in range(a.iters):
                    t = time.perf_counter()
                    c.predict(data[k], fs=r.fs, leads=leads)
                    times[side][k].append((time.perf_counter() - t) * 1e3)
    res = {side: {str(k): round(float(np.median(v)), 3) for k, v in d.items()} for side, d in times.items()}
    res["b_minus_a"] = {str(k): round(res["b"][str(k)] - res["a"][str(k)], 3) for k in cases}
    res["calls_per_side_and_lead_count"] = a.rounds * a.iters
    print(json.dumps(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
