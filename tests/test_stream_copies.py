"""The stream's window path copies less without changing a bit: the ring buffer's wrapped window is the
slots in time order, and windows scored together in one batch (the worker handing the preprocessing's own
arrays on) get exactly the outputs each gets alone. Real record (the demo's CPSC2021 excerpt), the shipped
default bundle (AF fusion and superclass stack: the device-rate rhythm path), real ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kmerl_edge
import kmerl_edge._stream_worker as sw
from kmerl_edge._polarity import run_with_polarity
from kmerl_edge._stream_ring import BAD_LEAD_OFF, RingBuffer
from kmerl_edge._stream_worker import InferenceWorker, Outcome, WindowJob
from kmerl_edge.stream import demo_record_path


@pytest.mark.parametrize("written", [5, 7, 10, 13, 29])
@pytest.mark.parametrize("n", [1, 4, 7])
def test_ring_window_is_the_slots_in_time_order(written: int, n: int) -> None:
    ring = RingBuffer(2, 7)
    x = np.arange(2 * written, dtype=np.float32).reshape(2, written)
    bad = np.zeros((2, written), dtype=np.int8)
    bad[1, ::3] = BAD_LEAD_OFF
    ring.write(x[:, :3], bad[:, :3])
    ring.write_gap(1)
    ring.write(x[:, 4:], bad[:, 4:])
    slots = np.arange(written - n, written)
    want = x[:, np.maximum(slots, 0)]
    want_bad = bad[:, np.maximum(slots, 0)]
    want_gap = (slots == 3) | (slots < 0)  # never received: missing
    data, gap, b = ring.window(n)
    # gap slots keep whatever the ring held; compare the received ones, and the masks whole
    assert np.array_equal(data[:, ~want_gap], want[:, ~want_gap]) and data.dtype == np.float32
    assert np.array_equal(gap, want_gap) and gap.dtype == bool
    assert np.array_equal(b[:, ~want_gap], want_bad[:, ~want_gap]) and b.dtype == np.int8
    assert data.flags.c_contiguous and b.flags.c_contiguous
    assert not np.shares_memory(data, ring.data) and not np.shares_memory(b, ring.bad)


class _Sink:
    def __init__(self) -> None:
        self.out: dict[int, Outcome] = {}

    def _complete(self, job: WindowJob, outcome: Outcome) -> None:
        self.out[job.index] = outcome


@pytest.fixture(scope="module")
def clf() -> Any:
    return kmerl_edge.load(backend="onnxruntime")


def test_a_batch_gets_the_model_inputs_and_outputs_of_its_windows_stacked_afresh(clf: Any, monkeypatch) -> None:
    """The worker hands a group's preprocessed windows to the model without stacking them once more: the
    inputs are, bit for bit, each window's own (scored alone) stacked, and the outputs those of that fresh
    stack (the backend's batch of N may differ in the last bit from N batches of one, so that is compared)."""
    calls: list[tuple[np.ndarray, np.ndarray, Any, np.ndarray]] = []

    def spy(target: Any, windows: np.ndarray, ids: np.ndarray, *, rhythm: Any = None) -> Any:
        probs, pol = run_with_polarity(target, windows, ids, rhythm=rhythm)
        calls.append((windows.copy(), np.asarray(ids).copy(), rhythm, probs.copy()))
        return probs, pol

    monkeypatch.setattr(sw, "run_with_polarity", spy)
    rec = kmerl_edge.read_record(demo_record_path())  # 200 Hz, leads I and II
    x = rec.signal.astype(np.float32)
    n = int(10 * rec.fs)
    one = [(rec.fs, x[:1, k : k + n].copy(), ("I",)) for k in range(0, 5 * 400, 400)]
    two = [(rec.fs, x[:, k : k + n].copy(), ("I", "II")) for k in range(200, 3 * 400, 400)]
    flat = x[:, :n].copy()
    flat[1] = 0.0  # lead II flat: left out, the window scored on lead I alone
    # the same samples taken as 500 Hz (the model's rate: the quality check's band-pass is the model's)
    fast = [(500.0, x[:1, k : k + 5000].copy(), ("I",)) for k in range(0, 3 * 1000, 1000)]
    worker = InferenceWorker(clf, synchronous=True)
    for batch in (one, one + two, two + [(rec.fs, flat, ("I", "II"))] + one, fast, fast + one):
        sink = _Sink()
        jobs = [WindowJob(sink, i, fs, data, leads, {}, 0.0) for i, (fs, data, leads) in enumerate(batch)]
        calls.clear()
        for job in jobs:
            worker._process([job])
        alone = {i: calls[i][0][0] for i in range(len(jobs))}
        quality = {i: sink.out[i] for i in range(len(jobs))}
        calls.clear()
        worker._process(jobs)
        # the groups (by lead set, in order of first appearance), each in window order
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in range(len(jobs)):
            groups.setdefault(sink.out[i].leads_used, []).append(i)
        assert len(calls) == len(groups)
        for (windows, ids, rhythm, probs), members in zip(calls, groups.values()):
            fresh = np.stack([alone[i] for i in members])
            assert windows.tobytes() == fresh.tobytes() and windows.shape == fresh.shape
            assert run_with_polarity(clf, fresh, ids, rhythm=rhythm)[0].tobytes() == probs.tobytes()
            for k, i in enumerate(members):
                got, want = sink.out[i], quality[i]
                assert got.probs is not None and got.probs.tobytes() == probs[k].tobytes()
                assert (got.quality, got.leads_used, got.excluded, got.flags) == (
                    want.quality, want.leads_used, want.excluded, want.flags)
