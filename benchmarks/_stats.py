"""Timing statistics, the timing loop and the description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LatencyStats",
    "percentile",
    "summarize_ns",
    "time_calls",
    "peak_rss_mb",
    "machine_info",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation between closest ranks (numpy's default,
    the same as ``statistics.quantiles(method="inclusive")``). Raises ``ValueError`` on no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("no values")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds over ``iters`` timed calls that followed ``warmup`` untimed ones."""

    iters: int
    warmup: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def summarize_ns(samples_ns: Sequence[int], *, warmup: int) -> LatencyStats:
    """Median / p95 / p99 / mean / min / max in ms of ``perf_counter_ns`` durations."""
    ms = [s / 1e6 for s in samples_ns]
    if not ms:
        raise ValueError("no timed iterations")
    return LatencyStats(
        iters=len(ms),
        warmup=warmup,
        median_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        mean_ms=float(sum(ms) / len(ms)),
        min_ms=min(ms),
        max_ms=max(ms),
    )


def time_calls(fn: Callable[[], object], *, iters: int, warmup: int) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times, each timed with ``perf_counter_ns``."""
    if iters < 1:
        raise ValueError("iters must be >= 1")
    for _ in range(max(0, warmup)):
        fn()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(iters):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return summarize_ns(samples, warmup=warmup)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if platform.system() != "Darwin" else kb / (1024.0 * 1024.0)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU model, cores, library versions and the UTC date of this run."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "threads": threads,
        "versions": {
            name: _version(dist)
            for name, dist in (
                ("kmerl_edge", "kmerl-edge"),
                ("torch", "torch"),
                ("onnxruntime", "onnxruntime"),
                ("executorch", "executorch"),
                ("tensorrt", "tensorrt"),
                ("numpy", "numpy"),
            )
        },
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def macro_auc_ranks(y: np.ndarray, s: np.ndarray) -> float:
    """Macro AUC by ranks over the classes with both labels (the Mann-Whitney form, ties averaged); ``y``
    (N, C) bool, ``s`` (N, C); NaN when no class has both labels."""
    from scipy.stats import rankdata

    n = len(y)
    per = []
    for c in range(y.shape[1]):
        pos = int(y[:, c].sum())
        if 0 < pos < n:
            r = rankdata(s[:, c])
            per.append((r[y[:, c]].sum() - pos * (pos + 1) / 2) / (pos * (n - pos)))
    return float(np.mean(per)) if per else float("nan")
