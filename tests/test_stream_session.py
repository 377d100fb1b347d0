"""StreamSession behaviour: window times, parity with offline preprocessing, gaps, bad leads, events,
smoothing, backlog dropping, the gateway. Real record (the demo's CPSC2021 excerpt), real ONNX Runtime."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import kmerl_edge
from kmerl_edge import NoUsableLeadsError, SamplingRateError, SignalShapeError, preprocess
from kmerl_edge._stream_events import EventDetector
from kmerl_edge._stream_session import MAX_T0_S
from kmerl_edge.stream import (
    SKIP_BACKLOG,
    SKIP_FRAGMENTED,
    SKIP_GAP,
    SKIP_NO_USABLE_LEADS,
    EventRule,
    Gateway,
    LeadStatus,
    StreamClosedError,
    StreamConfig,
    StreamInputError,
    StreamSession,
    demo_record_path,
)

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
FS = 200.0


@pytest.fixture(scope="module")
def clf() -> Any:
    return kmerl_edge.load(BUNDLE, backend="onnxruntime")


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    """(2, 24244) mV, leads I and II, 200 Hz: a real paroxysmal-AF recording."""
    rec = kmerl_edge.read_record(demo_record_path())
    assert rec.fs == FS and rec.leads == ("I", "II")
    return rec.signal.astype(np.float32)


def _push_all(s: StreamSession, x: np.ndarray, t0: float = 0.0, sizes: tuple[int, ...] = (37, 113, 7, 260)) -> list:
    out: list = []
    k = 0
    i = 0
    while k < x.shape[1]:
        n = sizes[i % len(sizes)]
        out += s.push(x[:, k : k + n], t0 + k / s.fs)
        k += n
        i += 1
    return out + s.close()


# -- windows and times --------------------------------------------------------------------------------
def test_window_times_follow_device_clock(clf: Any, ecg: np.ndarray) -> None:
    x = ecg[:, : int(41 * FS)]
    s = clf.stream(fs=FS, leads=["I", "II"], hop_s=2.0, synchronous=True)
    res = _push_all(s, x, t0=1000.0)
    # 41 s of signal: windows end at 10, 12, ..., 40 s after the first sample
    assert [r.index for r in res] == list(range(16))
    assert [round(r.t_end - 1000.0, 6) for r in res] == [10.0 + 2 * k for k in range(16)]
    assert all(abs((r.t_end - r.t_start) - 10.0) < 1e-9 for r in res)
    assert not any(r.skipped for r in res)
    assert all(r.leads_used == ("I", "II") and r.quality is not None for r in res)
    st = s.stats()
    assert st.windows == st.scored == 16 and st.samples == x.shape[1]


@pytest.mark.parametrize("fs", [130.0, 500.0])
def test_session_scores_equal_offline_preprocess(clf: Any, ecg: np.ndarray, fs: float) -> None:
    """Each window goes through exactly the steps of ``preprocess`` (resample → filter → normalise), both
    at a device rate that needs resampling and at the model rate (where the quality band-pass is reused)."""
    from kmerl_edge._preprocess import resample_signal

    x = resample_signal(ecg[:1, : int(30 * FS)].astype(np.float64), fs_in=FS, fs_out=fs).astype(np.float32)
    s = clf.stream(fs=fs, leads=["I"], hop_s=5.0, synchronous=True)
    res = _push_all(s, x)
    assert len(res) == 5
    for r in res:
        a = int(round(r.t_start * fs))
        seg = x[:, a : a + int(10 * fs)]
        pre = preprocess(seg, fs=fs, leads=["I"], config=clf.bundle.preprocess_config)
        assert pre.windows.shape == (1, 1, 5000)
        want = clf.scores_from_probs(clf.run_windows(pre.windows, pre.lead_ids)[0])[0]
        assert r.scores.keys() == want.keys()
        np.testing.assert_allclose([r.scores[k] for k in want], list(want.values()), atol=1e-5)


def test_threaded_results_match_synchronous(clf: Any, ecg: np.ndarray) -> None:
    x = ecg[:, : int(30 * FS)]
    sync = _push_all(clf.stream(fs=FS, leads=["I", "II"], synchronous=True), x)
    s = clf.stream(fs=FS, leads=["I", "II"])
    threaded = _push_all(s, x)
    assert [r.index for r in threaded] == list(range(len(sync)))
    for a, b in zip(sync, threaded):
        assert a.t_end == b.t_end
        np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=1e-6)
    assert not s.worker._thread.is_alive()  # type: ignore[union-attr]


# -- gaps ---------------------------------------------------------------------------------------------
def test_gaps_skip_windows_with_reasons_and_never_fill(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I", "II"], hop_s=2.0, synchronous=True, max_gap_fraction=0.2)
    res = s.push(ecg[:, : int(20 * FS)], t0=0.0)
    res += s.push_gap(int(1 * FS))  # 20–21 s lost (10% of a window)
    res += s.push(ecg[:, int(21 * FS) : int(40 * FS)], t0=21.0)
    res += s.close()
    by_end = {round(r.t_end): r for r in res}
    assert sorted(by_end) == list(range(10, 41, 2))  # every window is accounted for
    # 10% missing: scored from the gap-free stretches, flagged
    w22 = by_end[22]
    assert not w22.skipped and w22.flags == ("gap",) and w22.missing_fraction == pytest.approx(0.1)
    # windows ending after 31 s do not contain the gap
    assert not by_end[32].flags and by_end[32].missing_fraction == 0.0
    st = s.stats()
    assert st.gaps == 1 and st.gap_samples == 200

    s = clf.stream(fs=FS, leads=["I"], hop_s=2.0, synchronous=True, max_gap_fraction=0.2)
    res = s.push(ecg[:1, : int(12 * FS)])
    res += s.push_gap(int(3 * FS))  # 12–15 s lost: 30% of windows ending 16..22 s
    res += s.push(ecg[:1, int(15 * FS) : int(30 * FS)], t0=15.0)
    res += s.close()
    by_end = {round(r.t_end): r for r in res}
    # windows ending 16..22 s hold the whole 3-s gap (30% > 20%): skipped, with the reason
    for end in (16, 18, 20, 22):
        assert by_end[end].skipped and by_end[end].reason == SKIP_GAP and "30%" in by_end[end].detail
        assert by_end[end].scores == {} and by_end[end].missing_fraction == pytest.approx(0.3)
    # 12–14 s of the gap in the window ending at 14 s (20%, not above the limit) and 1 s in 14–24 s
    for end in (14, 24):
        assert not by_end[end].skipped and "gap" in by_end[end].flags
    assert s.stats().skipped == {SKIP_GAP: 4}


def test_gap_at_window_end_scores_like_a_padded_short_recording(clf: Any, ecg: np.ndarray) -> None:
    """A window whose last 2 s are missing sees exactly what ``preprocess`` makes of the 8 s it has:
    resampled, filtered, z-scored, zero-padded; no sample is invented."""
    s = clf.stream(fs=FS, leads=["I", "II"], hop_s=10.0, synchronous=True)
    res = s.push(ecg[:, : int(18 * FS)]) + s.push_gap(int(2 * FS)) + s.close()
    assert [r.flags for r in res] == [(), ("gap",)]
    pre = preprocess(ecg[:, int(10 * FS) : int(18 * FS)], fs=FS, leads=["I", "II"], config=clf.bundle.preprocess_config)
    assert pre.padded
    want = clf.scores_from_probs(clf.run_windows(pre.windows, pre.lead_ids)[0])[0]
    np.testing.assert_allclose([res[1].scores[k] for k in want], list(want.values()), atol=1e-5)


def test_fragmented_window_is_skipped(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I"], hop_s=10.0, synchronous=True, max_gap_fraction=0.2, min_segment_s=0.5)
    res = s.push(ecg[:1, : int(10 * FS)])
    for k in range(20):  # a flaky link: 0.4 s received, 0.1 s lost, 20 times (20% missing)
        a = int((10 + 0.5 * k) * FS)
        res += s.push(ecg[:1, a : a + 80], t0=a / FS)
        res += s.push_gap(20)
    res += s.close()
    assert [r.reason for r in res] == [None, SKIP_FRAGMENTED]
    assert res[1].missing_fraction == pytest.approx(0.2) and "add up to 0.00 s" in res[1].detail
    # the same link with 0.9 s received per 0.1 s lost keeps every stretch: scored, flagged
    s = clf.stream(fs=FS, leads=["I"], hop_s=10.0, synchronous=True)
    res = s.push(ecg[:1, : int(10 * FS)])
    for k in range(10):
        a = int((10 + k) * FS)
        res += s.push(ecg[:1, a : a + 180], t0=a / FS) + s.push_gap(20)
    res += s.close()
    assert not res[1].skipped and res[1].flags == ("gap",) and res[1].missing_fraction == pytest.approx(0.1)


def test_timestamp_jump_is_a_gap_and_backwards_is_a_reset(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I"], hop_s=2.0, synchronous=True)
    s.push(ecg[:1, : int(10 * FS)], t0=50.0)
    s.push(ecg[:1, int(10 * FS) : int(20 * FS)], t0=63.0)  # 3 s jump ahead: a gap, not stitched
    st = s.stats()
    assert st.gaps == 1 and st.gap_samples == 600 and s.t_now == pytest.approx(73.0)
    res = s.push(ecg[:1, : int(12 * FS)], t0=5.0, reset=True)  # device restarted its clock (and says so)
    res += s.close()
    assert s.stats().clock_resets == 1
    after = [r for r in res if r.t_end < 50]
    assert after and any(not r.skipped for r in after) and any(r.skipped for r in after)
    for r in after:  # what came before the reset counts as missing: nothing is stitched across it
        assert r.missing_fraction == pytest.approx(max(0.0, 1 - (r.t_end - 5.0) / 10), abs=1e-9)
        assert r.skipped == (r.missing_fraction > 0.2)


def _count_hops(s: StreamSession) -> list[int]:
    """Count the session's per-hop steps (window cuts): the work a timestamp jump could multiply."""
    calls = [0]
    emit = s._emit_window

    def counted() -> None:
        calls[0] += 1
        emit()

    s._emit_window = counted  # type: ignore[method-assign]
    return calls


def _chunks(x: np.ndarray, fs: float, size: int, t0: float = 0.0):
    for k in range(0, x.shape[1], size):
        yield x[:, k : k + size], t0 + k / fs


def test_late_chunk_is_dropped_never_old_samples_as_new_no_phantom_gap_no_shift(clf: Any, ecg: np.ndarray) -> None:
    x = ecg[:1, : int(30 * FS)]
    ref = clf.stream(fs=FS, leads=["I"], synchronous=True)
    want = [r for c, t in _chunks(x, FS, 100) for r in ref.push(c, t)] + ref.close()
    s = clf.stream(fs=FS, leads=["I"], synchronous=True)
    got: list = []
    for c, t in _chunks(x, FS, 100):
        got += s.push(c, t)
        if t == 20.0:  # a chunk stamped 15 s back (old samples, a replay, a clock glitch)
            got += s.push(x[:, : 100], t0=t + 0.5 - 15.0)
    got += s.close()
    st = s.stats()
    assert st.late_chunks == 1 and st.late_samples == 100
    assert st.gaps == 0 and st.clock_resets == 0 and st.samples == x.shape[1]
    assert [r.t_end for r in got] == [r.t_end for r in want]  # nothing shifted
    for a, b in zip(got, want):
        assert a.scores == b.scores


def test_a_clock_restart_is_confirmed_by_consecutive_chunks(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I"], synchronous=True, reset_confirm=3)
    s.push(ecg[:1, : int(12 * FS)], t0=100.0)
    res: list = []
    for c, t in _chunks(ecg[:1, : int(14 * FS)], FS, 200, t0=3.0):  # the device counts from 3 s again
        res += s.push(c, t)
    res += s.close()
    st = s.stats()
    assert st.clock_resets == 1 and st.late_chunks == 2 and st.gaps == 0
    new = [r for r in res if r.t_end < 100]
    assert new and new[-1].t_end == pytest.approx(17.0) and not new[-1].skipped


def test_timestamp_jitter_of_3_ms_at_250_hz_skips_nothing(clf: Any, ecg: np.ndarray) -> None:
    fs = 250.0  # the recording's samples, read as a 250-Hz device's
    x = ecg[:1, : int(30 * fs)]
    rng = np.random.default_rng(1)
    clean = clf.stream(fs=fs, leads=["I"], synchronous=True)
    want = [r for c, t in _chunks(x, fs, 25) for r in clean.push(c, t)] + clean.close()
    s = clf.stream(fs=fs, leads=["I"], synchronous=True)
    got = [r for c, t in _chunks(x, fs, 25) for r in s.push(c, t + rng.uniform(-0.003, 0.003))] + s.close()
    st = s.stats()
    assert st.gaps == 0 and st.clock_resets == 0 and st.late_chunks == 0 and st.skipped == {}
    assert [r.scores for r in got] == [r.scores for r in want]  # the same samples in every window
    # the clock is the first chunk's stamp plus samples counted: within the jitter, never drifting
    assert [r.t_end for r in got] == pytest.approx([r.t_end for r in want], abs=0.003)


@pytest.mark.parametrize("jump_s", [3600.0, 2.0**31 / 250.0, 1e9])
def test_a_huge_timestamp_jump_is_o1_and_keeps_unread_results(clf: Any, ecg: np.ndarray, jump_s: float) -> None:
    s = clf.stream(fs=FS, leads=["I"], results_buffer=16)
    res = s.push(ecg[:1, : int(20 * FS)], t0=0.0)
    deadline = time.monotonic() + 30
    while s.pending and time.monotonic() < deadline:  # 6 results computed, waiting: not read yet
        time.sleep(0.01)
    hops = _count_hops(s)
    res += s.push(ecg[:1, int(20 * FS) : int(32 * FS)], t0=20.0 + jump_s)
    res += s.push_gap(2**31)  # a source reporting 2**31 lost samples
    # work per window that holds samples only (before: one step per 2-s hop of the jump, ~10**6–10**9)
    assert hops[0] <= 25, hops
    res += s.close()
    st = s.stats()
    assert st.results_overflow == 0
    assert [r.t_end for r in res[:6]] == [10.0, 12.0, 14.0, 16.0, 18.0, 20.0]
    assert all(not r.skipped for r in res[:6])
    # only windows holding samples have results: 6 before, 4 + 6 around the 12 s after the jump, 5 after
    assert all(r.missing_fraction < 1 for r in res) and len(res) <= 22
    assert st.gaps == 2 and st.empty_windows > 1000


def test_push_with_wall_clock_t0_after_a_stream_without_t0_does_not_block(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I"], synchronous=True)
    res = s.push(ecg[:1, : int(12 * FS)])
    hops = _count_hops(s)
    res += s.push(ecg[:1, int(12 * FS) : int(24 * FS)], t0=time.time())  # ~1.7e9 s ahead of the clock
    assert hops[0] <= 20, hops
    res += s.close()
    assert res and all(r.t_end < 22 or r.t_end > 1e9 for r in res)


def test_set_lead_off_takes_a_name_or_a_sequence(clf: Any, ecg: np.ndarray) -> None:
    from kmerl_edge.stream import StreamInputError

    s = clf.stream(fs=FS, leads=["I", "II"], synchronous=True)
    s.set_lead_off("II")  # a lead name, not the letters I, I
    res = s.push(ecg[:, : int(10 * FS)]) + s.close()
    assert res[0].leads_used == ("I",) and res[0].excluded_leads == {"II": "lead_off"}
    s = clf.stream(fs=FS, leads=["I", "II"], synchronous=True)
    s.set_lead_off(["II"])
    s.set_lead_off(())
    for bad in ({"II"}, 2, [b"II"], None):
        with pytest.raises(StreamInputError):
            s.set_lead_off(bad)  # type: ignore[arg-type]
    with pytest.raises(kmerl_edge.UnknownLeadError):
        s.set_lead_off(["II", "XYZ"])
    s.close()


def test_config_hop_is_used_when_no_hop_is_given(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I"], config=StreamConfig(hop_s=5.0), synchronous=True)
    res = s.push(ecg[:1, : int(30 * FS)]) + s.close()
    assert [r.t_end for r in res] == [10.0, 15.0, 20.0, 25.0, 30.0]
    s = clf.stream(fs=FS, leads=["I"], config=StreamConfig(hop_s=5.0), hop_s=10.0, synchronous=True)
    assert [r.t_end for r in s.push(ecg[:1, : int(30 * FS)]) + s.close()] == [10.0, 20.0, 30.0]


def test_stream_errors_are_named(clf: Any) -> None:
    from kmerl_edge import KmerlError

    for kw in ({"not_an_option": 1}, {"max_gap_fraction": 1.5}, {"queue_size": 0}, {"clock_tolerance_s": -1}):
        with pytest.raises(KmerlError):
            clf.stream(fs=FS, leads=["I"], **kw)
    s = clf.stream(fs=FS, leads=["I"], synchronous=True)
    for call in (lambda: s.push_gap(-1), lambda: s.push_gap(2.5), lambda: s.push(np.zeros(10), t0=float("nan")),
                 lambda: s.feed("not a message")):
        with pytest.raises(KmerlError):
            call()
    s.close()


# -- bad leads ----------------------------------------------------------------------------------------
def test_flat_lead_is_left_out_and_reported(clf: Any, ecg: np.ndarray) -> None:
    x = ecg[:, : int(40 * FS)].copy()
    x[1, int(14 * FS) :] = 0.37  # lead II goes flat (electrode off) at 14 s
    s = clf.stream(fs=FS, leads=["I", "II"], hop_s=2.0, synchronous=True)
    res = _push_all(s, x)
    first, last = res[0], res[-1]
    assert first.leads_used == ("I", "II") and not first.excluded_leads
    assert last.leads_used == ("I",) and last.excluded_leads == {"II": "flat"}
    assert not last.skipped and last.scores
    assert last.quality is not None and last.quality["II"].flat and last.quality.overall == "degraded"
    assert "II" in last.quality.dropped_leads
    assert s.stats().lead_exclusions["II"] >= 10
    # the remaining lead alone gives what a 1-lead session gives
    one = _push_all(clf.stream(fs=FS, leads=["I"], hop_s=2.0, synchronous=True), x[:1])
    np.testing.assert_allclose(list(last.scores.values()), list(one[-1].scores.values()), atol=1e-6)


def test_lead_off_status_and_nonfinite_samples(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I", "II"], hop_s=2.0, synchronous=True)
    s.push(ecg[:, : int(10 * FS)])
    s.feed(LeadStatus(lead_off=("II",), t0=10.0))  # the message a source sends
    res = s.push(ecg[:, int(10 * FS) : int(12 * FS)], t0=10.0)
    assert res[-1].excluded_leads == {"II": "lead_off"} and res[-1].leads_used == ("I",)
    s.set_lead_off([])
    y = ecg[:, int(12 * FS) : int(24 * FS)].copy()
    y[0, 100:110] = np.nan
    res = {round(r.t_end): r for r in s.push(y, t0=12.0) + s.close()}
    # 10–20 s: II was off until 12 s and I holds NaNs at 12.5 s → nothing left to score
    assert res[20].reason == SKIP_NO_USABLE_LEADS and res[20].excluded_leads == {"I": "missing", "II": "lead_off"}
    assert res[22].excluded_leads == {"I": "missing"} and res[22].leads_used == ("II",)
    assert res[24].excluded_leads == {} and res[24].leads_used == ("I", "II")


def test_all_leads_unusable_is_a_counted_skip(clf: Any) -> None:
    s = clf.stream(fs=FS, leads=["I"], hop_s=2.0, synchronous=True)
    res = s.push(np.full((1, int(12 * FS)), 1.5, dtype=np.float32)) + s.close()
    assert [r.reason for r in res] == [SKIP_NO_USABLE_LEADS] * 2
    assert res[0].quality is not None and res[0].quality["I"].flat
    assert s.stats().skipped == {SKIP_NO_USABLE_LEADS: 2}
    with pytest.raises(NoUsableLeadsError):  # offline prediction refuses the same input
        clf.predict(np.full((1, 2400), 1.5), fs=FS, leads=["I"])


# -- events and smoothing -----------------------------------------------------------------------------
def test_event_hysteresis_on_scripted_probabilities() -> None:
    rule = EventRule("atrial fibrillation", on_threshold=0.6, off_threshold=0.4, min_on_windows=2, min_off_windows=2)
    det = EventDetector(rule, "rhythm", 0)
    seq = [0.1, 0.7, 0.3, 0.65, 0.9, 0.5, 0.35, 0.55, 0.3, 0.2, 0.1, 0.7]
    events = []
    for k, p in enumerate(seq):
        ev = det.update(k, 2.0 * k, 2.0 * k + 10, np.array([p]))
        if ev is not None:
            events.append(ev)
    # single 0.7 at k=1 does not start (needs 2); 0.65, 0.9 (k=3,4) start it; 0.5 holds; 0.35 then 0.55
    # breaks the off-run; 0.3, 0.2 (k=8,9) end it; a lone 0.7 at the end does not restart it
    assert [(e.kind, e.window_index) for e in events] == [("started", 4), ("ended", 9)]
    assert events[0].t == pytest.approx(0.5 * (6 + 16)) and events[0].t_confirmed == 18.0
    assert events[1].t == pytest.approx(0.5 * (16 + 26))
    assert not det.active
    with pytest.raises(ValueError):
        EventRule(on_threshold=0.4, off_threshold=0.6)


class ScriptedClassifier:
    """The real classifier with its backend's output replaced by a scripted AF probability per window
    (the random-weights test bundle cannot produce an AF episode)."""

    def __init__(self, clf: Any, af: list[float], delay_s: float = 0.0) -> None:
        self._clf = clf
        self.af = list(af)
        self.delay_s = delay_s
        self.calls = 0
        self.af_index = [i for i, (ls, c) in enumerate(clf.bundle.all_queries()[1]) if c == "atrial fibrillation"][0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clf, name)

    def run_windows(self, windows: np.ndarray, lead_ids: np.ndarray) -> np.ndarray:
        probs = self._clf.run_windows(windows, lead_ids)
        for row in probs:
            row[self.af_index] = self.af.pop(0) if self.af else 0.0
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return probs


def test_af_events_through_the_session_with_smoothing(clf: Any, ecg: np.ndarray) -> None:
    script = [0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]
    sc = ScriptedClassifier(clf, script)
    s = StreamSession(
        sc, fs=FS, leads=["I"], hop_s=2.0, synchronous=True, smoothing_windows=2, rate_events=()
    )  # only the model's AF events here (this recording is tachycardic: heart-rate events are tested elsewhere)
    res = _push_all(s, ecg[:1, : int(32.5 * FS)])
    assert len(res) == 12
    sm = [r.smoothed["atrial fibrillation"] for r in res]
    raw = [r.scores["atrial fibrillation"] for r in res]
    assert raw == pytest.approx(script)
    assert sm == pytest.approx([0.1] + [(a + b) / 2 for a, b in zip(script, script[1:])])
    ev = list(s.events())
    # smoothed: .1 .1 .5 .9 .9 .9 .55 .15 .1 → on at index 4 (run .9,.9 from index 3), off at 8 (.15,.1)
    assert [(e.kind, e.label, e.window_index) for e in ev] == [
        ("started", "atrial fibrillation", 4),
        ("ended", "atrial fibrillation", 8),
    ]
    assert ev[0].t == pytest.approx(res[3].t_start + 5.0)
    assert s.stats().events == 2 and s.active_events == ()


# -- never blocking the reader ----------------------------------------------------------------------
def test_backlog_drops_oldest_windows_and_counts_them(clf: Any, ecg: np.ndarray) -> None:
    slow = ScriptedClassifier(clf, [], delay_s=0.15)
    s = StreamSession(slow, fs=FS, leads=["I"], hop_s=1.0, queue_size=2, max_batch=1)
    x = ecg[:1, : int(60 * FS)]
    t = time.perf_counter()
    got: list = []
    for k in range(0, x.shape[1], 100):  # 51 windows arrive in well under 51 × 0.15 s
        got += s.push(x[:, k : k + 100], t0=k / FS)
    push_s = time.perf_counter() - t
    got += s.close()
    assert push_s < 2.5, f"push() blocked for {push_s:.2f} s"  # scoring all 51 would take > 7.6 s
    assert [r.index for r in got] == list(range(51))  # every window has a result, in order
    dropped = [r for r in got if r.reason == SKIP_BACKLOG]
    st = s.stats()
    assert len(dropped) >= 30 and st.dropped == len(dropped) == s.worker.stats.dropped
    assert st.scored + st.dropped == st.windows == 51
    assert all("fell behind" in r.detail for r in dropped)
    assert slow.calls == st.scored  # dropped windows never reached the backend


def test_session_api_errors_and_close(clf: Any, ecg: np.ndarray) -> None:
    with pytest.raises(SamplingRateError):
        clf.stream(fs=None, leads=["I"])  # type: ignore[arg-type]
    with pytest.raises(SamplingRateError, match="32000"):
        clf.stream(fs=4294967.295, leads=["I"])  # what one bogus 40-byte frame once opened (3.8 GB)
    with pytest.raises(kmerl_edge.KmerlError):
        clf.stream(fs=FS, leads=["I"], not_an_option=1)
    with pytest.raises(ValueError):
        StreamConfig(max_gap_fraction=1.5)
    s = clf.stream(fs=FS, leads=["I", "II"], synchronous=True)
    with pytest.raises(SignalShapeError):
        s.push(np.zeros((3, 10)))
    # rows named in another order are mapped by name
    a = s.push(ecg[::-1, : int(10 * FS)], leads=["II", "I"])
    b = clf.stream(fs=FS, leads=["I", "II"], synchronous=True).push(ecg[:, : int(10 * FS)])
    assert a[0].scores == b[0].scores
    s.close()
    assert s.close() == []
    with pytest.raises(StreamClosedError):
        s.push(ecg[:, :10])


def test_results_iterator_and_buffer_bound(clf: Any, ecg: np.ndarray) -> None:
    s = clf.stream(fs=FS, leads=["I"], hop_s=2.0, results_buffer=3, synchronous=True)
    got = s.push(ecg[:1, : int(30 * FS)])  # 11 windows completed inside one push
    assert [r.index for r in got] == [8, 9, 10]  # the caller never collected: only the newest 3 kept
    assert s.stats().results_overflow == 8 and s.stats().windows == 11
    s.close()

    s2 = clf.stream(fs=FS, leads=["I"], hop_s=2.0)
    seen: list = []
    th = threading.Thread(target=lambda: seen.extend(s2.results(block=True)))
    th.start()
    pushed = s2.push(ecg[:1, : int(20 * FS)])
    deadline = time.monotonic() + 20
    while len(seen) + len(pushed) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    closed = s2.close()
    th.join(10)
    assert not th.is_alive()  # the blocking iterator ends when the session is closed and drained
    assert seen  # results reached the iterator while push() had long returned
    # each result is handed out exactly once, by whichever consumer asked first
    assert sorted(r.index for r in seen + pushed + closed) == list(range(6))


# -- gateway --------------------------------------------------------------------------------------------
def test_gateway_batches_across_devices_with_same_results(clf: Any, ecg: np.ndarray) -> None:
    x = ecg[:, : int(24 * FS)]
    ref1 = _push_all(clf.stream(fs=FS, leads=["I"], synchronous=True), x[:1])
    ref2 = _push_all(clf.stream(fs=FS, leads=["I", "II"], synchronous=True), x)
    with Gateway(clf, queue_size=1024, max_batch=64) as gw:
        sessions = [gw.open(f"p{i}", fs=FS, leads=["I"] if i % 2 else ["I", "II"]) for i in range(12)]
        out: dict[str, list] = {s.device_id or "": [] for s in sessions}
        for k in range(0, x.shape[1], 400):
            for i, s in enumerate(sessions):
                out[f"p{i}"] += s.push(x[: 1 if i % 2 else 2, k : k + 400], t0=k / FS)
        for s in sessions:
            out[s.device_id or ""] += s.close()
        st = gw.stats()
    assert st.windows == 12 * len(ref1) and st.dropped == 0 and st.sessions == 12
    assert st.batches < st.windows  # windows of different devices shared backend calls
    for i in range(12):
        ref = ref1 if i % 2 else ref2
        got = out[f"p{i}"]
        assert [r.t_end for r in got] == [r.t_end for r in ref]
        for a, b in zip(got, ref):
            assert a.device_id == f"p{i}"
            np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=1e-5)


# -- the documented consumer patterns (README) --------------------------------------------------------------
def test_the_readme_push_loop_on_a_busy_machine_then_results_with_a_timeout(clf: Any, ecg: np.ndarray) -> None:
    slow = ScriptedClassifier(clf, [], delay_s=0.05)  # inference slower than the reader pushes
    s = StreamSession(slow, fs=FS, leads=["I"], hop_s=2.0)
    got: list = []
    for c, t in _chunks(ecg[:1, : int(30 * FS)], FS, 200):
        got += s.push(c, t)  # results that are ready come out of push()
    got += list(s.results(timeout=30))  # and the rest of what was pushed, as each is ready
    assert [r.index for r in got] == list(range(11))
    assert not s.closed and s.pending == 0
    # a result that became ready between two pushes comes out of the next push
    s.push(ecg[:1, int(30 * FS) : int(32 * FS)], t0=30.0)
    deadline = time.monotonic() + 30
    while s.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    ready = s.push(ecg[:1, int(32 * FS) : int(32.5 * FS)], t0=32.0)
    assert [r.index for r in ready] == [11]
    assert list(s.results()) == [] and s.poll() == []  # nothing is handed out twice
    assert s.close() == []


def test_gateway_stats_keep_closed_sessions(clf: Any, ecg: np.ndarray) -> None:
    with Gateway(clf) as gw:
        a = gw.open("a", fs=FS, leads=["I"])
        b = gw.open("b", fs=FS, leads=["I"])
        a.push(ecg[:1, : int(14 * FS)], t0=0.0)
        b.push(ecg[:1, : int(12 * FS)], t0=0.0)
        gw.close_session("a")
        st = gw.stats()
        assert st.windows >= 3 and st.sessions == 2 and st.open_sessions == 1
        gw.close_session("b")
        st = gw.stats()
    assert st.windows == 5 and st.scored == 5 and st.sessions == 2 and st.open_sessions == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=hst.lists(hst.tuples(hst.integers(1, 700),
                                  hst.sampled_from(["on", "jitter", "ahead", "back", "far", "none", "gap"]),
                                  hst.floats(0.0, 1.0)), min_size=1, max_size=40))
def test_any_timestamps_keep_the_session_consistent_and_cheap(clf: Any, ecg: np.ndarray, steps: list) -> None:
    """Whatever the timestamps say: no exception, no work proportional to a jump, every accepted sample
    counted once, every result in order."""
    s = clf.stream(fs=FS, leads=["I"], synchronous=True, results_buffer=100000)
    hops = _count_hops(s)
    res: list = []
    pushed = 0
    k = 0
    for n, kind, u in steps:
        chunk = ecg[:1, k % 20000 : k % 20000 + n]
        k += n
        now = s.t_now
        t0 = {"on": now, "jitter": now + (u - 0.5) * 0.02, "ahead": now + 30 * u, "back": now - 30 * u - 0.05,
              "far": now + 2.0**31 * (u + 0.01), "none": None, "gap": None}[kind]
        if kind == "gap":
            res += s.push_gap(int(u * 2**40))
            continue
        if t0 is not None and abs(t0) > MAX_T0_S:  # beyond the clock model's range: a named error, nothing taken
            with pytest.raises(StreamInputError, match="device time within"):
                s.push(chunk, t0)
            continue
        res += s.push(chunk, t0)
        pushed += chunk.shape[1]
    res += s.close()
    st = s.stats()
    # steps bounded by the samples pushed and a window's worth per jump, whatever the jumps' sizes
    assert hops[0] <= pushed / (2 * FS) + len(steps) * 7 + 1, hops
    assert st.samples + st.late_samples == pushed
    assert [r.index for r in res] == list(range(len(res))) and st.windows == len(res)
    assert all(0.0 <= r.missing_fraction < 1.0 for r in res)  # no result without a sample in it


def test_an_event_rule_smooths_and_gates_on_rhythm_quality() -> None:
    from kmerl_edge.stream import StreamConfigError

    def run(rule: EventRule, ps: list[float], ok: list[bool]) -> list[tuple[str, int]]:
        det = EventDetector(rule, "rhythm", 0)
        out = []
        for i, (p, good) in enumerate(zip(ps, ok)):
            ev = det.update(i, 2.0 * i, 2.0 * i + 10, np.array([p]), rhythm_ok=good)
            if ev is not None:
                out.append((ev.kind, i))
        return out

    spike = [0.1, 0.95, 0.95, 0.1, 0.1, 0.1, 0.1]
    assert run(EventRule(), spike, [True] * 7) == [("started", 2), ("ended", 4)]
    # a 4-window mean keeps a 2-window spike from two windows in a row at or above 0.6 (.1 .53 .67 .53 .53)
    assert run(EventRule(smooth_windows=4), spike, [True] * 7) == []
    # windows without usable beats neither start nor end an event
    assert run(EventRule(quality_gating=True), spike, [True, False, False, True, True, True, True]) == []
    assert run(EventRule(quality_gating=True, min_off_windows=2), [0.9, 0.9, 0.1, 0.1, 0.1],
               [True, True, True, False, True]) == [("started", 1), ("ended", 4)]
    with pytest.raises(StreamConfigError):
        EventRule(smooth_windows=0)


def test_a_session_uses_the_event_rule_its_bundle_was_tuned_with(tmp_path: Any) -> None:
    import shutil

    from kmerl_edge import BundleError
    from kmerl_edge._af_fusion import AF_FUSION_FILE, RHYTHM_FEATURES, AfFusion
    from kmerl_edge._bundle import add_artifacts

    n = len(RHYTHM_FEATURES) + 1
    tuned = {"on_threshold": 0.7, "off_threshold": 0.5, "min_on_s": 20.0, "min_off_s": 4.0, "smooth_s": 10.0,
             "quality_gating": True}
    fus = AfFusion("rhythm", "atrial fibrillation", ("model_logit",) + RHYTHM_FEATURES, np.zeros(n), np.ones(n),
                   np.ones(n), 0.0, event_rule=tuned)
    out = tmp_path / "bundle"
    shutil.copytree(Path(__file__).parent / "fixtures" / "test_bundle", out)
    add_artifacts(out, {AF_FUSION_FILE: (fus.save(tmp_path / AF_FUSION_FILE),
                                         {"kind": "fusion", "backend": "none", "precision": "fp64"})})
    c = kmerl_edge.load(out, backend="torch")
    s = StreamSession(c, fs=FS, leads=["I"], hop_s=2.0, synchronous=True)
    r = s._detectors[0].rule
    assert (r.on_threshold, r.off_threshold, r.min_on_windows, r.min_off_windows, r.smooth_windows,
            r.quality_gating) == (0.7, 0.5, 10, 2, 5, True)
    r5 = StreamSession(c, fs=FS, leads=["I"], hop_s=5.0, synchronous=True)._detectors[0].rule
    assert (r5.min_on_windows, r5.min_off_windows, r5.smooth_windows) == (4, 1, 2)  # seconds, not windows
    mine = EventRule(on_threshold=0.9, off_threshold=0.1)
    assert StreamSession(c, fs=FS, leads=["I"], synchronous=True, events=(mine,))._detectors[0].rule == mine
    bad = AfFusion.from_dict({**fus.to_dict(), "event_rule": None}).to_dict()
    for broken in ({**tuned, "min_on_s": -1.0}, {**tuned, "on_threshold": 0.2}, {"on_threshold": 0.7}):
        with pytest.raises(BundleError, match="event_rule"):
            AfFusion.from_dict({**bad, "event_rule": broken})
