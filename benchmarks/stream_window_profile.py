"""Where a stream window's time goes: each block of the inference worker's path, and the reader's push.

    python -m benchmarks.stream_window_profile [--bundle B] [--backend onnxruntime] [--leads 1,2,3] [--json FILE]

On the signal bank of :mod:`benchmarks.stream_gateway` (the demo's CPSC2021 excerpt, 200 Hz; lead III = II − I),
one thread, the default bundle unless ``--bundle``:

- **worker**: ``--windows`` 10-s windows scored one at a time by a synchronous
  :class:`kmerl_edge._stream_worker.InferenceWorker` (batch 1, as a lone session's), each block timed where
  the worker calls it (so in the cache state of the real path), median µs per window: ``quality`` (device-rate
  band-pass and the quality flags), ``resample_bandpass`` (to the model rate), ``zscore``, ``device_rhythm``
  (the fusion lead's analysis at the device rate), ``model_fusion_stack`` (model, AF fusion, superclass stack
  and lead I polarity: ``run_with_polarity``; inside it ``backend``, ``fusion_features``, ``stack_measurements``),
  and ``window`` (the whole ``_process``); ``other`` is the window less the top-level blocks;
- **reader**: median µs of one :meth:`StreamSession.push` of a 2-s chunk that completes a window (ring buffer,
  the session's running beat detector and its window summary, the window copy, the hand-off to the worker),
  with the session's worker thread scoring beside it as in a live session.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._stats import machine_info
from .stream_gateway import LEAD_SETS, _take, signal_bank

__all__ = ["profile_worker", "profile_reader", "main"]

#: (owner attribute path, block name); owners: the worker module, the worker class, the classifier module
_TOP = (("sw", "InferenceWorker._quality", "quality"), ("sw", "_model_band", "resample_bandpass"),
        ("sw", "normalize_window", "zscore"), ("sw", "_device_rhythm", "device_rhythm"),
        ("sw", "run_with_polarity", "model_fusion_stack"))
_INNER = (("backend", "run", "backend"), ("kc", "window_rhythm_features", "fusion_features"),
          ("kc", "stack_measurements", "stack_measurements"))


def profile_worker(clf: Any, n_leads: int, windows: int, warmup: int = 20) -> dict[str, float]:
    """Median µs per window of each block (see the module doc) over ``windows`` windows of ``n_leads`` leads."""
    import kmerl_edge._classifier as kc
    import kmerl_edge._stream_worker as sw

    bank, fs = signal_bank()
    leads = LEAD_SETS[n_leads]
    n, hop = int(round(10 * fs)), int(round(2 * fs))
    sw.warmup(clf, fs=fs, leads=leads)
    worker = sw.InferenceWorker(clf, synchronous=True)

    class _Sink:
        def _complete(self, job: Any, outcome: Any) -> None:
            pass

    sink = _Sink()
    jobs = [sw.WindowJob(sink, i, fs, np.ascontiguousarray(_take(bank, n_leads, i * hop, n)), leads, {}, 0.0)
            for i in range(warmup + windows)]
    for job in jobs[:warmup]:
        worker._process([job])
    owners = {"sw": sw, "kc": kc, "backend": clf.backend}
    times: dict[str, list[float]] = defaultdict(list)
    targets: list[tuple[Any, str, str]] = []
    for key, path, label in _TOP + _INNER:
        owner = owners[key]
        *outer, attr = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        targets.append((owner, attr, label))
    whole: list[float] = []
    with _all_timed(targets, times):
        for job in jobs[warmup:]:
            t = time.perf_counter()
            worker._process([job])
            whole.append(time.perf_counter() - t)
    out = {label: float(np.median(times[label])) * 1e6 for _, _, label in _TOP + _INNER if times[label]}
    out["window"] = float(np.median(whole)) * 1e6
    per_window = np.asarray(whole) - sum(np.asarray(times[label]) for _, _, label in _TOP if times[label])
    out["other"] = float(np.median(per_window)) * 1e6
    return {k: round(v, 1) for k, v in out.items()}


@contextmanager
def _all_timed(targets: list[tuple[Any, str, str]], times: dict[str, list[float]]) -> Iterator[None]:
    saved = [(owner, attr, owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else _MISSING)
             for owner, attr, _ in targets]
    try:
        for owner, attr, label in targets:
            f: Callable[..., Any] = getattr(owner, attr)
            setattr(owner, attr, _wrap(f, times[label]))
        yield
    finally:
        for owner, attr, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


_MISSING = object()


def _wrap(f: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            sink.append(time.perf_counter() - t)

    return wrapper


def profile_reader(clf: Any, n_leads: int, windows: int) -> dict[str, float]:
    """Median µs of a :meth:`StreamSession.push` of one 2-s chunk (each completes a window)."""
    from kmerl_edge._stream_worker import warmup

    bank, fs = signal_bank()
    leads = LEAD_SETS[n_leads]
    hop = int(round(2 * fs))
    warmup(clf, fs=fs, leads=leads)
    s = clf.stream(fs=fs, leads=leads, hop_s=2.0, queue_size=windows + 10)
    k = int(10 * fs) - hop
    s.push(_take(bank, n_leads, 0, k), t0=0.0)
    chunks = [_take(bank, n_leads, k + i * hop, hop) for i in range(windows)]
    lat: list[float] = []
    for i, c in enumerate(chunks):
        t = time.perf_counter()
        s.push(c, t0=(k + i * hop) / fs)
        lat.append(time.perf_counter() - t)
    s.close()
    return {"push": round(float(np.median(lat)) * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stream_window_profile",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the package's default bundle)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--leads", default="1,3", help="lead counts")
    ap.add_argument("--windows", type=int, default=300, help="windows per lead count")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    import kmerl_edge

    clf = kmerl_edge.load(a.bundle, backend=a.backend, threads=1)
    rows = []
    for n in [int(v) for v in a.leads.split(",") if v.strip()]:
        worker = profile_worker(clf, n, a.windows)
        reader = profile_reader(clf, n, a.windows)
        rows.append({"leads": list(LEAD_SETS[n]), "worker_us": worker, "reader_us": reader})
        print(f"{n} lead(s): worker " + ", ".join(f"{k} {v:.0f}" for k, v in worker.items())
              + f" µs; reader push {reader['push']:.0f} µs (median)", flush=True)
    res = {"benchmark": "stream_window_profile", "machine": machine_info(1), "bundle": str(clf.bundle_path),
           "backend": clf.backend_name, "windows": a.windows, "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
