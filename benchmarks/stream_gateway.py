"""Streaming benchmarks: per-window latency of one session at 1, 2, 3 leads, and gateway capacity.

    python -m benchmarks.stream_gateway --bundle BUNDLE --backend onnxruntime \\
        --latency-leads 1,2,3 --patches 250,500,1000,1500,2000 --duration 30

Signals are real: the package's demo recording (CPSC2021 data_101_8, leads I and II at 200 Hz) and its
lead III derived by Einthoven's law (III = II − I), looped, each patch starting at its own offset.

**Latency** (``--latency-leads``): one session with its own worker thread; a 2-s chunk is pushed, the
result awaited, then the next chunk, so every window is scored alone as it would be at real time; the
latency is the session's own ``latency_ms`` (last sample pushed → result ready: queue + quality +
resample/filter/normalise + backend).

**Gateway** (``--patches``): N one-lead sessions on one :class:`kmerl_edge.stream.Gateway` (one worker
batching across devices). Each patch pushes a 2-s chunk every 2 s of *wall* time at its own phase, with
its device timestamps on a virtual clock; the first 8 s of every patch are pushed before the clock starts
(no window needs them scored). After ``--duration`` s the windows' latencies are collected. N patches run
in real time when no window was dropped, the pushes kept up with the schedule (lag p99 ≤ 250 ms) and
the window latency p99 ≤ 250 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["signal_bank", "bench_latency", "bench_gateway", "main"]

LEAD_SETS = {1: ("I",), 2: ("I", "II"), 3: ("I", "II", "III")}


def signal_bank() -> tuple[np.ndarray, float]:
    """(3, n) float32 mV at 200 Hz: leads I, II of the demo recording and III = II − I."""
    from kmerl_edge import read_record
    from kmerl_edge.stream import demo_record_path

    rec = read_record(demo_record_path(), leads=["I", "II"])
    x = rec.signal.astype(np.float32)
    return np.vstack([x, x[1:2] - x[0:1]]), float(rec.fs)


def _take(bank: np.ndarray, rows: int, start: int, n: int) -> np.ndarray:
    idx = (start + np.arange(n)) % bank.shape[1]
    return bank[:rows, idx]


def bench_latency(clf: Any, n_leads: int, windows: int, hop_s: float = 2.0) -> dict[str, Any]:
    """Median/p99 latency of ``windows`` windows scored one at a time by a threaded session."""
    from kmerl_edge._stream_worker import warmup

    bank, fs = signal_bank()
    leads = LEAD_SETS[n_leads]
    warmup(clf, fs=fs, leads=leads)
    s = clf.stream(fs=fs, leads=leads, hop_s=hop_s)
    hop = int(round(hop_s * fs))
    s.push(_take(bank, n_leads, 0, int(10 * fs) - hop), t0=0.0)
    k = int(10 * fs) - hop
    lat: list[float] = []
    while len(lat) < windows:
        s.push(_take(bank, n_leads, k, hop), t0=k / fs)
        k += hop
        for r in s.flush():
            if not r.skipped:
                lat.append(r.latency_ms)
    s.close()
    arr = np.asarray(lat)
    return {
        "leads": list(leads),
        "windows": int(arr.size),
        "latency_ms_median": round(float(np.median(arr)), 3),
        "latency_ms_p99": round(float(np.percentile(arr, 99)), 3),
        "latency_ms_max": round(float(arr.max()), 3),
    }


def bench_gateway(
    clf: Any,
    n_patches: int,
    duration_s: float,
    *,
    hop_s: float = 2.0,
    queue_size: int = 4096,
    max_batch: int = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``n_patches`` one-lead patches in real time for ``duration_s`` wall seconds; see module doc."""
    from kmerl_edge._stream_worker import warmup
    from kmerl_edge.stream import Gateway

    bank, fs = signal_bank()
    warmup(clf, fs=fs, leads=("I",))
    rng = np.random.default_rng(seed)
    hop = int(round(hop_s * fs))
    offsets = rng.integers(0, bank.shape[1], n_patches)
    phases = rng.uniform(0.0, hop_s, n_patches)
    gw = Gateway(clf, queue_size=queue_size, max_batch=max_batch)
    sessions = [gw.open(f"patch-{i:05d}", fs=fs, leads=["I"], hop_s=hop_s) for i in range(n_patches)]
    pre = int(10 * fs) - hop  # 8 s: the first window completes with the first paced chunk
    for i, s in enumerate(sessions):
        s.push(_take(bank, 1, int(offsets[i]), pre), t0=0.0)
    next_k = np.full(n_patches, pre, dtype=np.int64)  # next sample index to push, per patch
    t_start = time.monotonic() + 0.2
    due = t_start + phases  # wall time of each patch's next push
    lags: list[float] = []
    results = 0
    while True:
        now = time.monotonic()
        if now - t_start >= duration_s:
            break
        ready = np.flatnonzero(due <= now)
        for i in ready.tolist():
            lags.append((time.monotonic() - due[i]) * 1e3)
            k = int(next_k[i])
            results += len(sessions[i].push(_take(bank, 1, int(offsets[i]) + k, hop), t0=k / fs))
            next_k[i] = k + hop
            due[i] += hop_s
        wait = float(due.min()) - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.005))
    wall = time.monotonic() - t_start
    for s in sessions:
        s.flush(60.0)
    st = gw.stats()
    gw.close()
    lag = np.asarray(lags) if lags else np.zeros(1)
    ok = st.dropped == 0 and st.latency_ms_p99 <= 250.0 and float(np.percentile(lag, 99)) <= 250.0
    return {
        "patches": n_patches,
        "wall_s": round(wall, 2),
        "windows": st.windows,
        "windows_per_s": round(st.windows / wall, 1),
        "dropped": st.dropped,
        "latency_ms_median": round(st.latency_ms_median, 2),
        "latency_ms_p99": round(st.latency_ms_p99, 2),
        "latency_ms_max": round(st.latency_ms_max, 2),
        "push_lag_ms_p99": round(float(np.percentile(lag, 99)), 2),
        "mean_batch": round(st.mean_batch, 1),
        "worker_busy_fraction": round(st.worker_busy_s / wall, 3),
        "real_time": bool(ok),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stream_gateway", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the package's default bundle)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1, help="backend intra-op threads")
    ap.add_argument("--latency-leads", default="1,2,3", help="lead counts for the latency run ('' to skip)")
    ap.add_argument("--windows", type=int, default=200, help="windows per latency run")
    ap.add_argument("--patches", default="250,500,1000", help="gateway sizes to try, ascending ('' to skip)")
    ap.add_argument("--duration", type=float, default=30.0, help="wall seconds per gateway run")
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--queue-size", type=int, default=4096)
    ap.add_argument("--keep-going", action="store_true", help="try every size even after one fails")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = ap.parse_args(argv)

    import kmerl_edge

    clf = kmerl_edge.load(a.bundle, backend=a.backend, threads=a.threads)
    out: dict[str, Any] = {
        "bundle": str(clf.bundle_path),
        "model": clf.bundle.model_config.name,
        "backend": clf.backend_name,
        "latency": [],
        "gateway": [],
    }
    print(f"bundle {clf.bundle_path} ({clf.bundle.model_config.name}), backend {clf.backend_name}", flush=True)
    for n in [int(v) for v in a.latency_leads.split(",") if v.strip()]:
        r = bench_latency(clf, n, a.windows)
        out["latency"].append(r)
        print(f"latency  {n} lead(s): median {r['latency_ms_median']:.2f} ms, p99 {r['latency_ms_p99']:.2f} ms "
              f"({r['windows']} windows)", flush=True)
    best = 0
    for n in [int(v) for v in a.patches.split(",") if v.strip()]:
        r = bench_gateway(clf, n, a.duration, queue_size=a.queue_size, max_batch=a.max_batch)
        out["gateway"].append(r)
        print(f"gateway  {n:5d} patches: {r['windows_per_s']:.0f} windows/s, p99 {r['latency_ms_p99']:.1f} ms "
              f"(median {r['latency_ms_median']:.1f}), push lag p99 {r['push_lag_ms_p99']:.1f} ms, dropped "
              f"{r['dropped']}, mean batch {r['mean_batch']}, worker busy {r['worker_busy_fraction']:.0%} → "
              f"{'real time' if r['real_time'] else 'NOT real time'}", flush=True)
        if r["real_time"]:
            best = max(best, n)
        elif not a.keep_going:
            break
    out["max_real_time_patches"] = best
    print(f"largest gateway at real time with p99 <= 250 ms: {best} one-lead patches", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
