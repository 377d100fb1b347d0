"""This machine's measured fp32 GEMM throughput, and each configuration's latency against it.

``fraction = (FLOPs ÷ peak GEMM throughput) ÷ measured latency``: 1.0 would mean the model ran every
FLOP at the speed of the best large square matrix product; small models on a CPU sit far below because
their GEMMs are small, attention and normalisation are memory-bound and per-call overheads dominate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._stats import machine_info, time_calls

__all__ = ["GemmResult", "measure_gemm", "roofline_rows", "run_roofline", "DEFAULT_GEMM_SIZES"]

DEFAULT_GEMM_SIZES: tuple[int, ...] = (128, 256, 512, 1024)


@dataclass(frozen=True)
class GemmResult:
    n: int
    median_ms: float
    gflops: float

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median_ms": round(self.median_ms, 4), "gflops": round(self.gflops, 2)}


def gemm_gflops(n: int, median_ms: float) -> float:
    """Throughput of an n×n by n×n fp32 product (2·n³ FLOPs) that took ``median_ms``."""
    return 2.0 * n**3 / (median_ms * 1e-3) / 1e9


def measure_gemm(
    *, threads: int, sizes: Sequence[int] = DEFAULT_GEMM_SIZES, iters: int = 50, warmup: int = 5
) -> list[GemmResult]:
    """Median-time fp32 ``torch.mm`` of square matrices of each size with ``threads`` threads."""
    import torch

    torch.set_num_threads(int(threads))
    out = []
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=g)
        b = torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        def mm(a: Any = a, b: Any = b, c: Any = c) -> Any:
            return torch.mm(a, b, out=c)

        st = time_calls(mm, iters=iters, warmup=warmup)
        out.append(GemmResult(n, st.median_ms, gemm_gflops(n, st.median_ms)))
    return out


def roofline_rows(latency: Mapping[str, Any], peak_gflops: float) -> list[dict[str, Any]]:
    """One row per measured configuration (and baseline) of a latency report dict."""
    rows = []
    for r in list(latency["results"]) + list(latency.get("baseline", [])):
        if r["status"] != "ok" or not r.get("model") or r.get("gflop") is None:
            continue
        ideal_ms = r["gflop"] / peak_gflops * 1e3
        med = r["model"]["median_ms"]
        rows.append(
            {
                "backend": r["backend"],
                "n_leads": r["n_leads"],
                "gflop": r["gflop"],
                "median_ms": med,
                "roofline_ms": ideal_ms,
                "fraction": ideal_ms / med if med > 0 else float("nan"),
                "achieved_gflops": r["gflop"] / (med * 1e-3) if med > 0 else float("nan"),
            }
        )
    return rows


def run_roofline(latency: Mapping[str, Any], *, threads: int, sizes: Sequence[int] = DEFAULT_GEMM_SIZES) -> dict[str, Any]:
    gemm = measure_gemm(threads=threads, sizes=sizes)
    peak = max(g.gflops for g in gemm)
    return {
        "kind": "roofline",
        "machine": machine_info(threads),
        "gemm": {"threads": threads, "sizes": [g.to_dict() for g in gemm], "peak_gflops": round(peak, 2)},
        "configs": roofline_rows(latency, peak),
        "latency_source": latency.get("options", {}).get("bundle"),
    }
