"""Hours of stream at accelerated speed (no sleeping): memory stays flat.

The stream is the shipped real recording (CPSC2021, lead I, 200 Hz) looped on a continuous device clock,
with a source gap and a flat stretch every few minutes so that every path (scored, gap-scored, skipped,
lead dropped) runs thousands of times. Python allocations (tracemalloc, which numpy reports to) and the
process RSS are sampled once per simulated hour.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge.stream import demo_record_path

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
FS = 200.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _stream_hours(hours: float, hop_s: float) -> tuple[list[int], list[int], kmerl_edge.stream.StreamStats]:
    clf = kmerl_edge.load(BUNDLE, backend="onnxruntime")
    x = kmerl_edge.read_record(demo_record_path(), leads=["I"]).signal.astype(np.float32)
    n_rec = x.shape[1]
    s = clf.stream(fs=FS, leads=["I"], hop_s=hop_s, synchronous=True, smoothing_windows=3, latency_history=256)
    chunk = int(5 * FS)  # 5 s per push
    n_total = int(hours * 3600 * FS)
    per_hour = int(3600 * FS)
    traced: list[int] = []
    rss: list[int] = []
    pos = 0
    k = 0
    c = 0
    next_check = per_hour
    while k < n_total:
        if k >= next_check:
            next_check += per_hour
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])
            rss.append(_rss_bytes())
        c += 1
        phase = c % 84  # a 7-minute cycle of 5-s chunks
        if phase == 30:
            s.push_gap(int(1.5 * FS))  # a source gap
            k += int(1.5 * FS)
        idx = (pos + np.arange(chunk)) % n_rec
        block = x[:, idx]
        if 60 <= phase < 72:
            block = np.full_like(block, 0.8)  # the lead lies flat for a minute
        s.push(block, t0=k / FS)
        pos += chunk
        k += chunk
        s.poll()  # a consumer that keeps up
        for _ in s.events():
            pass
    s.close()
    gc.collect()
    traced.append(tracemalloc.get_traced_memory()[0])
    rss.append(_rss_bytes())
    return traced, rss, s.stats()


@pytest.mark.slow
def test_memory_flat_over_twelve_hours(request: pytest.FixtureRequest) -> None:
    """12 h at hop 2 s (21,600 windows): minutes. Runs only when asked for: ``pytest -m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or "") or "not slow" in request.config.getoption("markexpr"):
        pytest.skip("long run: select it with -m slow")
    tracemalloc.start()
    try:
        traced, rss, st = _stream_hours(12.0, 2.0)
    finally:
        tracemalloc.stop()
    assert st.windows > 21000 and len(traced) == 12
    assert max(traced) - traced[0] < 256 * 1024, traced
    assert max(rss) - rss[0] < 16 * 2**20, rss


def test_memory_flat_over_three_hours() -> None:
    """3 h of device time at hop 10 s (1,080 windows) in about ten seconds."""
    tracemalloc.start()
    try:
        traced, rss, st = _stream_hours(3.0, 10.0)
    finally:
        tracemalloc.stop()
    assert len(traced) == 3  # after hour 1, hour 2, and the end of hour 3
    # every path ran, many times: scored, scored around a gap, lead flat → nothing left to score
    assert st.windows == pytest.approx(3 * 3600 / 10, abs=2)
    assert st.gaps >= 25 and st.skipped.get("gap", 0) == 0
    assert st.skipped.get("no_usable_leads", 0) > 100 and st.scored > 700
    # flat: from hour 1 to hour 3, under 256 KiB more Python/numpy allocations and 16 MiB more RSS
    growth = max(traced) - traced[0]
    assert growth < 256 * 1024, f"traced memory grew {growth / 1024:.0f} KiB: {traced}"
    rss_growth = max(rss) - rss[0]
    assert rss_growth < 16 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB: {rss}"
