"""kmerl-bench: percentile arithmetic, timing-loop bookkeeping, speed-up and roofline arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._stats import machine_info, percentile, summarize_ns, time_calls
from benchmarks.latency import speedup
from benchmarks.roofline import gemm_gflops, measure_gemm, roofline_rows


def test_percentile_interpolates_between_closest_ranks():
    xs = list(range(1, 101))  # 1..100
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 95) == pytest.approx(95.05)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile(xs, 0) == 1 and percentile(xs, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2  # unsorted input


def test_percentile_matches_numpy_on_random_samples():
    rng = np.random.default_rng(1)
    xs = rng.lognormal(size=237)
    for q in (5, 50, 90, 95, 99, 99.9):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_ns_converts_to_ms():
    st = summarize_ns([1_000_000, 2_000_000, 3_000_000, 10_000_000], warmup=7)
    assert st.iters == 4 and st.warmup == 7
    assert st.median_ms == pytest.approx(2.5)
    assert st.min_ms == pytest.approx(1.0) and st.max_ms == pytest.approx(10.0)
    assert st.mean_ms == pytest.approx(4.0)
    assert st.p99_ms == pytest.approx(3 + 0.97 * 7)
    assert set(st.to_dict()) == {"iters", "warmup", "median_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"}


def test_time_calls_separates_warmup_from_timed_iterations():
    calls = []
    st = time_calls(lambda: calls.append(1), iters=13, warmup=4)
    assert len(calls) == 17
    assert st.iters == 13 and st.warmup == 4
    assert 0 <= st.min_ms <= st.median_ms <= st.p95_ms <= st.p99_ms <= st.max_ms
    with pytest.raises(ValueError):
        time_calls(lambda: None, iters=0, warmup=0)


def test_speedup():
    assert speedup(8.3, 0.25) == pytest.approx(33.2)
    assert speedup(None, 1.0) is None and speedup(1.0, None) is None and speedup(1.0, 0.0) is None


def test_roofline_arithmetic():
    assert gemm_gflops(1000, 20.0) == pytest.approx(100.0)  # 2e9 FLOP in 20 ms
    lat = {
        "results": [
            {"backend": "torch", "n_leads": 1, "status": "ok", "gflop": 0.01, "model": {"median_ms": 1.0}},
            {"backend": "tensorrt", "n_leads": 1, "status": "skipped", "gflop": None, "model": None},
        ],
        "baseline": [{"backend": "merl-baseline", "n_leads": 1, "status": "ok", "gflop": 1.0, "model": {"median_ms": 40.0}}],
    }
    rows = roofline_rows(lat, peak_gflops=100.0)
    assert [r["backend"] for r in rows] == ["torch", "merl-baseline"]
    assert rows[0]["roofline_ms"] == pytest.approx(0.1) and rows[0]["fraction"] == pytest.approx(0.1)
    assert rows[0]["achieved_gflops"] == pytest.approx(10.0)
    assert rows[1]["roofline_ms"] == pytest.approx(10.0) and rows[1]["fraction"] == pytest.approx(0.25)


def test_measure_gemm_small():
    res = measure_gemm(threads=1, sizes=(32, 64), iters=3, warmup=1)
    assert [r.n for r in res] == [32, 64]
    for r in res:
        assert r.gflops == pytest.approx(gemm_gflops(r.n, r.median_ms))


def test_machine_info_fields():
    m = machine_info(2)
    assert m["threads"] == 2 and m["cores"] >= 1 and m["cpu"]
    assert m["versions"]["torch"] and "onnxruntime" in m["versions"] and "executorch" in m["versions"]
    assert m["date"].endswith("+00:00")
