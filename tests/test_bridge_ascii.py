"""The ASCII line protocol of hobby boards: parsing, bad lines as gaps, declared fs/leads/units."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from firmware_bridge import AsciiDecoder, GapEvent, SampleBlock, format_ascii_lines
from kmerl_edge._errors import SamplingRateError


def samples(events):
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    return np.concatenate([b.data for b in blocks], axis=1) if blocks else np.zeros((0, 0))


def test_lines_round_trip_within_print_precision():
    rng = np.random.default_rng(0)
    sig = rng.normal(0, 1, (2, 200))
    text = format_ascii_lines(sig, decimals=3)
    dec = AsciiDecoder(["I", "II"], 250.0, at_line_start=True)
    got = samples(dec.feed(text))
    np.testing.assert_allclose(got, sig, atol=0.0005 + 1e-6)
    assert dec.stats.malformed_lines == 0 and dec.stats.samples == 200


def test_partial_first_line_is_discarded_and_bad_lines_become_gaps():
    dec = AsciiDecoder(["I", "II"], 250.0)
    events = dec.feed(b"34,0.5\n1.0,2.0\r\n1.5,x\n# battery 80\n2,3\n\n" + b"9" * 300 + b"\n4,5,6\n4,5\n")
    assert samples(events).tolist() == [[1.0, 2.0, 4.0], [2.0, 3.0, 5.0]]
    gaps = [(g.tick, g.n_samples) for g in events if isinstance(g, GapEvent)]
    assert gaps == [(1, 1), (3, 2)]  # consecutive bad lines merge; ticks stay aligned
    s = dec.stats
    assert (s.malformed_lines, s.overlong_lines, s.comment_lines, s.blank_lines) == (2, 1, 1, 1)
    assert s.garbage_bytes == len(b"34,0.5\n")
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    assert blocks[-1].tick == 5 and blocks[-1].t0 == pytest.approx(5 / 250)


def test_counts_scaled_to_millivolts():
    # Arduino analogRead of an AD8232: 10-bit counts around mid-scale 512, 3.3 V / 1024 / gain 100
    mv_per_count = 3300 / 1024 / 100
    dec = AsciiDecoder(["II"], 360.0, mv_per_unit=mv_per_count, offset=512, at_line_start=True)
    got = samples(dec.feed(b"512\n612\n412\n"))
    np.testing.assert_allclose(got[0], [0.0, 100 * mv_per_count, -100 * mv_per_count], rtol=1e-6)
    assert dec.device_info().fs == 360.0


def test_fs_is_required():
    with pytest.raises(SamplingRateError):
        AsciiDecoder(["I"], None)  # type: ignore[arg-type]
    with pytest.raises(SamplingRateError):
        AsciiDecoder(["I"], 0.0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=hst.binary(max_size=600), cuts=hst.lists(hst.integers(1, 50), min_size=1, max_size=10))
def test_random_bytes_never_raise_and_ticks_stay_consistent(data, cuts):
    dec = AsciiDecoder(["I", "II", "V2"], 500.0)
    events = []
    pos = 0
    for c in cuts * 20:
        events += dec.feed(data[pos:pos + c])
        pos += c
    events += dec.flush()
    tick = None
    for e in events:
        if isinstance(e, SampleBlock | GapEvent):
            if tick is not None:
                assert e.tick == tick
            tick = e.tick + e.n_samples
            if isinstance(e, SampleBlock):
                assert np.isfinite(e.data).all() and e.data.shape[0] == 3


def test_values_beyond_any_ecg_are_gaps_not_inf():
    dec = AsciiDecoder(["I"], 250.0, at_line_start=True)
    events = dec.feed(b"1.0\n1e39\n-3e38\n2.0\n")
    got = samples(events)
    assert np.isfinite(got).all() and got.tolist() == [[1.0, 2.0]]
    assert [(g.tick, g.n_samples, g.reason) for g in events if isinstance(g, GapEvent)] == [
        (1, 2, "value out of range")
    ]
    assert dec.stats.out_of_range_lines == 2


@pytest.mark.parametrize("offset", [float("nan"), float("inf")])
def test_a_non_finite_offset_is_refused(offset):
    from firmware_bridge import BridgeConfigError

    with pytest.raises(BridgeConfigError, match="offset"):
        AsciiDecoder(["I"], 250.0, offset=offset)


def test_cr_only_lines_are_lines():
    dec = AsciiDecoder(["I", "II"], 250.0, at_line_start=True)
    text = b"1,2\r3,4\r5,6\r\n7,8\r"
    events = []
    for i in range(0, len(text), 3):  # any chunking, \r\n split between chunks included
        events += dec.feed(text[i:i + 3])
    events += dec.feed(b"9,10\r")
    assert samples(events).tolist() == [[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]]
    assert not [g for g in events if isinstance(g, GapEvent)] and dec.stats.malformed_lines == 0
