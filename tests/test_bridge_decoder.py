"""FrameDecoder: sequence handling, fault counters, and hypothesis properties over broken byte streams.

The invariant checked everywhere: every delivered sample equals the recording at its tick, and the
delivered blocks plus the reported gaps cover the stream's ticks exactly once.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from firmware_bridge import DeviceConfig, FrameDecoder, FrameEncoder, GapEvent, SampleBlock, quantise
from kmerl_edge import read_record

SPF = 10


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    from pathlib import Path

    rec = Path(__file__).resolve().parent / "fixtures" / "records" / "00001_hr"
    sig = read_record(rec, leads=("I", "II", "V2")).signal
    return quantise(sig, 1_000_000)  # (3, 5000) counts of 1 µV


def frames(truth: np.ndarray, n: int, first_seq: int = 0, first_tick: int = 0) -> list[bytes]:
    enc = FrameEncoder(DeviceConfig(("I", "II", "V2"), 500.0, 1_000_000), first_seq=first_seq)
    return [enc.samples((first_tick + k * SPF) & 0xFFFFFFFF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(n)]


def check(events, truth: np.ndarray, n_ticks: int, tick0: int | None = None) -> tuple[np.ndarray, int]:
    """Assert no corrupted sample was delivered and nothing is double-covered; return coverage, #delivered."""
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    if not blocks:
        return np.zeros(n_ticks, dtype=int), 0
    base = blocks[0].tick if tick0 is None else tick0
    cover = np.zeros(n_ticks, dtype=int)
    scale = np.float32(1e-3)
    for e in events:
        if isinstance(e, SampleBlock):
            t = e.tick - base
            assert 0 <= t <= n_ticks - e.n_samples
            np.testing.assert_array_equal(e.data, truth[:, t:t + e.n_samples].astype(np.float32) * scale)
            cover[t:t + e.n_samples] += 1
        elif isinstance(e, GapEvent) and e.n_samples:
            t = e.tick - base
            cover[t:t + e.n_samples] += 1
    assert cover.max() <= 1, "a sample was delivered or reported twice"
    return cover, len(blocks)


def feed_chunks(dec: FrameDecoder, data: bytes, sizes: list[int]) -> list:
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        out += dec.feed(data[pos:pos + size])
        pos += size
        i += 1
    return out


def test_clean_stream_is_decoded_exactly(truth):
    dec = FrameDecoder()
    events = dec.feed(b"".join(frames(truth, 50)))
    cover, n = check(events, truth, 500, tick0=0)
    assert n == 50 and cover.all()
    blk = next(e for e in events if isinstance(e, SampleBlock))
    assert blk.leads == ("I", "II", "V2") and blk.fs == 500.0 and blk.data.dtype == np.float32
    assert blk.data.shape == (3, SPF) and blk.data.flags.c_contiguous and blk.t0 == 0.0
    assert dec.stats.faults == 0


def test_dropped_frames_become_gaps_with_exact_length(truth):
    fr = frames(truth, 20)
    kept = [f for k, f in enumerate(fr) if k not in (3, 4, 5, 11)]
    dec = FrameDecoder()
    events = dec.feed(b"".join(kept))
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert [(g.tick, g.n_samples, g.reason) for g in gaps] == [(30, 30, "lost frames"), (110, 10, "lost frames")]
    assert gaps[0].t0 == pytest.approx(30 / 500)
    assert dec.stats.lost_frames == 4 and dec.stats.lost_samples == 40 and dec.stats.gaps == 2
    cover, _ = check(events, truth, 200, tick0=0)
    assert cover.all()


def test_duplicates_and_stale_frames_are_dropped_and_counted(truth):
    fr = frames(truth, 6)
    stream = fr[0] + fr[1] + fr[1] + fr[2] + fr[0] + fr[3] + fr[3] + fr[4] + fr[5]
    dec = FrameDecoder()
    events = dec.feed(stream)
    cover, n = check(events, truth, 60, tick0=0)
    assert n == 6 and cover.all()
    assert dec.stats.duplicates == 2 and dec.stats.stale_frames == 1 and dec.stats.gaps == 0


def test_sequence_and_timestamp_wraparound(truth):
    fr = frames(truth, 30, first_seq=65530, first_tick=2**32 - 100)
    del fr[8]  # lost across the sequence wrap (seq 65538 -> 2)
    dec = FrameDecoder()
    events = dec.feed(b"".join(fr))
    base = 2**32 - 100
    cover, n = check(events, truth, 300, tick0=base)
    assert n == 29 and cover.all()
    assert [e.n_samples for e in events if isinstance(e, GapEvent)] == [10]
    assert dec.stats.duplicates == 0 and dec.stats.stale_frames == 0 and dec.stats.timestamp_errors == 0
    assert max(e.tick for e in events if isinstance(e, SampleBlock)) > 2**32  # unwrapped, monotonic


def test_garbage_crc_failures_and_unknown_versions_are_counted(truth):
    fr = frames(truth, 5)
    bad = bytearray(fr[2])
    bad[30] ^= 0x10
    v2 = bytearray(fr[0])
    v2[2] = 2  # a future protocol version: skipped by its length, after its CRC checks
    from firmware_bridge import crc16

    v2[-2:] = crc16(bytes(v2[2:-2])).to_bytes(2, "big")
    stream = b"noise\xa5" + fr[0] + b"\x00\xa5\x5a\x07" + fr[1] + bytes(bad) + bytes(v2) + fr[3] + fr[4][:20]
    dec = FrameDecoder()
    events = dec.feed(stream)
    dec.flush()
    assert dec.stats.crc_errors == 1 and dec.stats.unsupported_version == 1 and dec.stats.truncated_frames == 1
    assert dec.stats.bad_headers >= 1 and dec.stats.garbage_bytes > 0 and dec.stats.resyncs >= 3
    assert [(g.tick, g.n_samples) for g in events if isinstance(g, GapEvent)] == [(20, 10)]
    check(events, truth, 50, tick0=0)


def test_device_restart_and_skipped_samples(truth):
    dev = DeviceConfig(("I", "II", "V2"), 500.0, 1_000_000)
    a = FrameEncoder(dev)
    s1 = [a.samples(k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(3)]
    skipped = a.samples(50, truth[:, 50:60].T)  # same sequence, but the device skipped 20 samples
    b = FrameEncoder(dev)  # reboot: STREAM_START, seq and timestamps from 0 again, new samples
    s2 = [b.samples(k * SPF, truth[:, 200 + k * SPF:200 + (k + 1) * SPF].T) for k in range(2)]
    dec = FrameDecoder()
    events = dec.feed(b"".join(s1) + skipped + b"".join(s2))
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert (gaps[0].n_samples, gaps[0].reason) == (20, "device skipped samples")
    assert (gaps[1].n_samples, gaps[1].reason) == (0, "device restarted")
    ticks = [e.tick for e in events if isinstance(e, SampleBlock)]
    assert ticks == [0, 10, 20, 50, 60, 70]  # monotonic across the restart
    assert dec.stats.restarts == 1
    # a *replayed* first frame (identical bytes, STREAM_START set) is stale, not a restart
    dec2 = FrameDecoder()
    dec2.feed(b"".join(s1) + s1[0])
    assert dec2.stats.restarts == 0 and dec2.stats.stale_frames == 1


# ------------------------------------------------------------------ hypothesis properties

N_FRAMES = 30


def _mutate(data: bytearray, kind: str, where: float, amount: int) -> bytearray:
    i = int(where * (len(data) - 1))
    if kind == "flip":
        data[i] ^= 1 << (amount % 8)
    elif kind == "drop":
        del data[i:i + 1 + amount % 4]
    elif kind == "dup":
        data[i:i] = data[i:i + 1 + amount % 16]
    elif kind == "truncate_frame":
        # cut a frame: remove a run ending at a sync word
        j = data.find(b"\xa5\x5a", i + 1)
        if j > i:
            del data[i:j]
    elif kind == "garbage":
        data[i:i] = bytes((amount * 37 + k * 101) % 256 for k in range(1 + amount % 40))
    return data


mutations = hst.lists(
    hst.tuples(hst.sampled_from(["flip", "drop", "dup", "truncate_frame", "garbage"]),
               hst.floats(0, 1), hst.integers(0, 255)),
    max_size=6,
)
chunkings = hst.lists(hst.integers(1, 300), min_size=1, max_size=20)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@SETTINGS
@given(sizes=chunkings)
def test_any_chunking_gives_the_same_events(truth, sizes):
    data = b"".join(frames(truth, N_FRAMES))
    whole = FrameDecoder().feed(data)
    dec = FrameDecoder()
    pieces = feed_chunks(dec, data, sizes)
    assert len(pieces) == len(whole)
    for a, b in zip(pieces, whole):
        assert type(a) is type(b)
        if isinstance(a, SampleBlock):
            assert a.tick == b.tick and np.array_equal(a.data, b.data)


@SETTINGS
@given(muts=mutations, sizes=chunkings)
def test_broken_streams_never_deliver_corrupted_samples_and_report_every_loss(truth, muts, sizes):
    fr = frames(truth, N_FRAMES)
    body = bytearray(b"".join(fr[1:-1]))
    for kind, where, amount in muts:
        body = _mutate(body, kind, where, amount)
    data = fr[0] + bytes(body) + fr[-1]  # first and last frames intact, so the span is known
    dec = FrameDecoder()
    events = feed_chunks(dec, data, sizes)  # must not raise
    dec.flush()
    cover, _ = check(events, truth, N_FRAMES * SPF, tick0=0)
    assert cover.all(), "a lost sample was not reported as a gap"
    n_delivered = int(sum(e.n_samples for e in events if isinstance(e, SampleBlock)))
    assert dec.stats.lost_samples == N_FRAMES * SPF - n_delivered
    if not muts:
        assert dec.stats.faults == 0


@SETTINGS
@given(drop=hst.sets(hst.integers(1, N_FRAMES - 2)), dup=hst.sets(hst.integers(0, N_FRAMES - 1)))
def test_dropped_and_duplicated_frames(truth, drop, dup):
    fr = frames(truth, N_FRAMES)
    stream = b"".join((f + f if k in dup else f) for k, f in enumerate(fr) if k not in drop)
    dec = FrameDecoder()
    events = dec.feed(stream)
    cover, n = check(events, truth, N_FRAMES * SPF, tick0=0)
    assert cover.all() and n == N_FRAMES - len(drop)
    assert dec.stats.lost_frames == len(drop) and dec.stats.lost_samples == SPF * len(drop)
    assert dec.stats.duplicates == len(dup - drop)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=hst.binary(max_size=2000), sizes=chunkings)
def test_random_bytes_never_raise(data, sizes):
    dec = FrameDecoder()
    events = feed_chunks(dec, b"\xa5\x5a\x01\x01" + data, sizes) + dec.flush()
    assert not any(isinstance(e, SampleBlock) for e in events)
    assert dec.stats.bytes_in == len(data) + 4


def test_sequence_reuse_after_wrap_is_not_mistaken_for_a_replay():
    """Frame 65536 reuses seq 0; even with the same CRC as frame 0 it is new data and must be delivered."""
    import binascii

    enc = FrameEncoder(DeviceConfig(("II",), 500.0, 1_000_000, samples_per_frame=1))
    stream = [enc.samples(k, np.array([[k % 1000]])) for k in range(65536)]
    target = int.from_bytes(stream[0][-2:], "big")
    probe = FrameEncoder(DeviceConfig(("II",), 500.0, 1_000_000, samples_per_frame=1), first_seq=0)
    probe._started = True  # no STREAM_START on the wrapped frame
    prefix = probe.samples(65536, np.array([[0]]))[2:-4]
    crc_prefix = binascii.crc_hqx(prefix, 0xFFFF)
    v = next(v for v in range(-32768, 32768) if binascii.crc_hqx(v.to_bytes(2, "little", signed=True), crc_prefix)
             == target)
    stream.append(enc.samples(65536, np.array([[v]])))
    assert stream[-1][8:10] == stream[0][8:10] and stream[-1][-2:] == stream[0][-2:]
    dec = FrameDecoder()
    events = dec.feed(b"".join(stream))
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    assert len(blocks) == 65537 and blocks[-1].tick == 65536 and blocks[-1].data[0, 0] == np.float32(v) * np.float32(1e-3)
    assert dec.stats.duplicates == 0 and dec.stats.stale_frames == 0


# -- timestamp model and header bounds (issue 16) ----------------------------------------------------------
def _blocks_and_gaps(events):
    blocks = [(e.tick, e.n_samples) for e in events if isinstance(e, SampleBlock)]
    gaps = [(e.tick, e.n_samples, e.reset) for e in events if isinstance(e, GapEvent)]
    return blocks, gaps


def test_a_frame_whose_timestamp_goes_back_delivers_nothing_old_no_phantom_gap_no_shift(truth):
    enc = FrameEncoder(DeviceConfig(("I", "II", "V2"), 500.0, 1_000_000))
    data = [enc.samples(k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(3)]
    # in sequence, but stamped 15 s back (a replay under a new sequence number, or a clock glitch)
    data.append(enc.samples(3 * SPF - 7500, truth[:, :SPF].T))
    data += [enc.samples(k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(3, 8)]
    dec = FrameDecoder()
    events = dec.feed(b"".join(data))
    blocks, gaps = _blocks_and_gaps(events)
    # the bad frame's slot: the next frame's timestamp says nothing is missing, so nothing is reported
    assert blocks == [(k * SPF, SPF) for k in range(8)] and gaps == []
    assert dec.stats.timestamp_errors == 1 and dec.stats.bad_timestamp_samples == SPF
    cover, _ = check(events, truth, 8 * SPF)
    assert cover.sum() == 8 * SPF


def test_a_corrupt_timestamp_in_its_slot_is_an_exact_gap(truth):
    enc = FrameEncoder(DeviceConfig(("I", "II", "V2"), 500.0, 1_000_000))
    data = [enc.samples(k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(3)]
    data.append(enc.samples(3 * SPF + (1 << 31) - 1, truth[:, 3 * SPF:4 * SPF].T))  # 2**31 ticks ahead
    data += [enc.samples(k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(4, 8)]
    dec = FrameDecoder()
    events = dec.feed(b"".join(data))
    blocks, gaps = _blocks_and_gaps(events)
    assert gaps == [(3 * SPF, SPF, False)]  # exactly the dropped frame, at its place
    assert [b[0] for b in blocks] == [0, 10, 20, 40, 50, 60, 70]
    cover, _ = check(events, truth, 8 * SPF)
    assert cover.min() == 1


def test_a_confirmed_clock_jump_starts_a_new_timeline_without_a_giant_gap(truth):
    enc = FrameEncoder(DeviceConfig(("I", "II", "V2"), 500.0, 1_000_000))
    data = [enc.samples(k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(3)]
    jump = 1 << 31
    data += [enc.samples(jump + k * SPF, truth[:, k * SPF:(k + 1) * SPF].T) for k in range(3, 10)]
    dec = FrameDecoder()
    events = dec.feed(b"".join(data))
    blocks, gaps = _blocks_and_gaps(events)
    assert dec.stats.clock_jumps == 1 and dec.stats.lost_samples == 2 * SPF
    # the two frames dropped while confirming are an exact gap that breaks the timeline (reset)
    assert gaps == [(3 * SPF, 2 * SPF, True)]
    assert [b[0] for b in blocks] == [0, 10, 20, 50, 60, 70, 80, 90]  # the host's tick goes on, no 2**31 hole
    cover, _ = check(events, truth, 10 * SPF)
    assert cover.min() == 1


@pytest.mark.parametrize("fs_mhz, lsb_pv", [(1, 1_000_000), (0xFFFFFFFF, 1_000_000), (500_000, 1),
                                            (500_000, 0xFFFFFFFF)])
def test_header_fields_no_device_can_mean_are_refused_and_counted(truth, fs_mhz, lsb_pv):
    import binascii
    import struct

    enc = FrameEncoder(DeviceConfig(("I", "II", "V2"), 500.0, 1_000_000))
    f = bytearray(enc.samples(0, truth[:, :SPF].T))
    struct.pack_into("<II", f, 18, fs_mhz, lsb_pv)  # rate (mHz) and gain (pV/LSB) of the samples header
    f[-2:] = binascii.crc_hqx(bytes(f[2:-2]), 0xFFFF).to_bytes(2, "big")  # a valid CRC: only the range says no
    info = bytearray(enc.device_info(SPF))
    struct.pack_into("<II", info, 18, fs_mhz, lsb_pv)
    info[-2:] = binascii.crc_hqx(bytes(info[2:-2]), 0xFFFF).to_bytes(2, "big")
    dec = FrameDecoder()
    events = dec.feed(bytes(f) + bytes(info))
    assert events == [] and dec.stats.implausible_frames == 2 and dec.stats.crc_errors == 0
    with pytest.raises(Exception, match="Hz|lsb_pv"):
        DeviceConfig(("I",), fs_mhz / 1000, lsb_pv)
