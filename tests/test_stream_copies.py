"""The ring buffer's window, also when it wraps around the ring's end (two slices joined): the slots in time
order, fresh copies, the gap and lead-off masks with them."""

from __future__ import annotations

import numpy as np
import pytest

from kmerl_edge._stream_ring import BAD_LEAD_OFF, RingBuffer


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
