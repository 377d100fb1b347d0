"""Per-stage latency of ``predict`` of one 10-s window: each stage timed alone, and the whole call.

    python -m benchmarks.stage_latency [--bundle B] [--backend onnxruntime-int8] [--leads 1,3] [--json FILE]

On the benchmark record of :mod:`benchmarks.latency` (PTB-XL ``00001_hr``, 500 Hz, first 10 s; ``--device-fs``
resamples it to a patch's rate first), batch 1, one thread, median / p99 of ``--iters`` calls after
``--warmup`` untimed ones (:func:`benchmarks._stats.time_calls`):

- ``preprocess``: :meth:`Classifier.preprocess` (quality, resampling, band-pass, normalisation);
- ``model``: ``backend.run(window, lead_ids)`` alone;
- ``rhythm``: :func:`kmerl_edge.rhythm.analyse` of the AF fusion's rhythm lead at the input rate (the one
  analysis per window that ``predict`` reports and the fusion and the superclass stack reuse);
- ``fusion``: the AF fusion's window features (:func:`kmerl_edge._af_fusion.window_rhythm_features`, given
  that analysis) and its calibrated probability; absent when the bundle carries no fusion;
- ``superclass_stack``: the stack's measurements (:func:`kmerl_edge._superclass_stack.stack_measurements`,
  given that analysis) and its probabilities; absent when the bundle carries no stack;
- ``run_windows``: model, fusion and stack together (:meth:`Classifier.run_windows` with the analysis);
- ``end_to_end``: :meth:`Classifier.predict` of the 10-s record (all of the above, plus bookkeeping).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._stats import LatencyStats, machine_info, time_calls
from .latency import leads_for_count, load_input_signal


def _row(t: LatencyStats) -> dict[str, float]:
    return {"median_ms": round(t.median_ms, 4), "p99_ms": round(t.p99_ms, 4)}


def _fuse(fusion: Any, logit: np.ndarray, win: np.ndarray, lids: np.ndarray, fs: float, rhythm: Any) -> None:
    from kmerl_edge._af_fusion import window_rhythm_features

    fusion.probability(logit, window_rhythm_features(win, lids, fs=fs, rhythm=[rhythm]))


def _stack(stack: Any, logits: np.ndarray, win: np.ndarray, lids: np.ndarray, fs: float, rhythm: Any) -> None:
    from kmerl_edge._superclass_stack import stack_measurements

    per, glob = stack_measurements(win, lids, fs=fs, rhythm=[rhythm])
    stack.probability(logits, per, glob, lids)


def run_stages(
    bundle: str | None,
    backend: str,
    lead_counts: tuple[int, ...],
    *,
    iters: int,
    warmup: int,
    device_fs: float | None = None,
) -> dict[str, Any]:
    import kmerl_edge
    from kmerl_edge._af_fusion import fusion_rhythm_lead
    from kmerl_edge.rhythm import analyse

    clf = kmerl_edge.load(bundle, backend=backend, threads=1)
    sig = load_input_signal(None, device_fs=device_fs)
    model_fs = clf.bundle.preprocess_config.target_fs
    rows: list[dict[str, Any]] = []
    for n in lead_counts:
        leads = leads_for_count(n)
        x = sig.subset(leads)
        pre = clf.preprocess(x, fs=sig.fs, leads=leads)
        if pre.windows.shape[0] != 1 or pre.leads != leads:
            raise RuntimeError(f"benchmark input gave {pre.windows.shape[0]} windows of {pre.leads}; expected 1 of {leads}")
        win, lids = pre.windows, pre.lead_ids
        lead = fusion_rhythm_lead(lids)
        raw = np.asarray(x[leads.index(lead)], dtype=np.float64)
        rhythm = analyse(raw, fs=sig.fs, lead=lead)
        logits = clf.backend.run(win, lids).astype(np.float64)

        def timed(fn: Any) -> dict[str, float]:
            return _row(time_calls(fn, iters=iters, warmup=warmup))

        stages: dict[str, dict[str, float]] = {
            "preprocess": timed(partial(clf.preprocess, x, fs=sig.fs, leads=leads)),
            "model": timed(partial(clf.backend.run, win, lids)),
            "rhythm": timed(partial(analyse, raw, fs=sig.fs, lead=lead)),
        }
        if clf.af_fusion is not None:
            stages["fusion"] = timed(partial(_fuse, clf.af_fusion, logits[:, clf._fusion_col], win, lids, model_fs,
                                             rhythm))
        if clf.superclass_stack is not None:
            stages["superclass_stack"] = timed(partial(_stack, clf.superclass_stack, logits[:, clf._stack_cols], win,
                                                       lids, model_fs, rhythm))
        stages["run_windows"] = timed(partial(clf.run_windows, win, lids, rhythm=[rhythm]))
        stages["end_to_end"] = timed(partial(clf.predict, x, fs=sig.fs, leads=leads))
        rows.append({"leads": list(leads), "rhythm_lead": lead, "stages": stages})
        print(f"{n:2d} lead(s): " + ", ".join(f"{k} {v['median_ms']:.3f}" for k, v in stages.items()) + " ms (median)",
              flush=True)
    return {
        "benchmark": "stage_latency",
        "machine": machine_info(1),
        "bundle": str(clf.bundle.path),
        "backend": backend,
        "input": sig.source,
        "iters": iters,
        "warmup": warmup,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the package's default bundle)")
    ap.add_argument("--backend", default="onnxruntime-int8")
    ap.add_argument("--leads", default="1,3", help="lead counts")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device-fs", type=float, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    counts = tuple(int(s) for s in a.leads.split(",") if s.strip())
    res = run_stages(a.bundle, a.backend, counts, iters=a.iters, warmup=a.warmup, device_fs=a.device_fs)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
