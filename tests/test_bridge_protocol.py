"""Frame protocol v1: CRC, layout, encoder validation, and the committed golden vectors (no gcc needed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge import (
    BridgeConfigError,
    DeviceConfig,
    DeviceInfo,
    FrameDecoder,
    FrameEncoder,
    SampleBlock,
    StatusEvent,
    crc16,
    lead_mask,
    leads_from_mask,
)
from firmware_bridge._golden import encode_script
from kmerl_edge._errors import SamplingRateError, UnknownLeadError

GOLDEN = Path(__file__).parent / "fixtures" / "bridge_golden"
VECTORS = json.loads((GOLDEN / "vectors.json").read_text())["vectors"]


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_lead_mask_bits_follow_canonical_leads():
    assert lead_mask(["I", "II", "V2"]) == 0b10000011
    assert lead_mask(["V2", "AVR"]) == (1 << 7) | (1 << 3)
    assert leads_from_mask(0x0FFF)[-1] == "V6" and len(leads_from_mask(0x0FFF)) == 12
    with pytest.raises(UnknownLeadError):
        lead_mask(["X"])


def test_samples_frame_layout_is_as_documented():
    dev = DeviceConfig(("V2", "I"), 500.0, 1_000_000)
    assert dev.leads == ("I", "V2")  # wire order is canonical order
    enc = FrameEncoder(dev, first_seq=7)
    raw = np.array([[1, -2], [300, -32768]])
    f = enc.samples(1234, raw)
    assert f[:2] == b"\xa5\x5a"
    ver, ftype, body_len, flags, _res, seq, ts = struct.unpack_from("<BBHBBHI", f, 2)
    assert (ver, ftype, flags, seq, ts) == (1, 1, 1, 7, 1234)
    assert body_len == len(f) - 8 == 8 + 12 + 2 * 2 * 2
    mask, fmt, n, fs_mhz, lsb = struct.unpack_from("<HBBII", f, 14)
    assert (mask, fmt, n, fs_mhz, lsb) == (0b10000001, 1, 2, 500000, 1_000_000)
    assert np.frombuffer(f, "<i2", 4, 26).tolist() == [1, -2, 300, -32768]
    assert int.from_bytes(f[-2:], "big") == crc16(f[2:-2])
    assert crc16(f[2:]) == 0  # big-endian CRC: the whole frame checks to zero
    # second frame: no STREAM_START flag, next sequence number
    g = enc.samples(1236, raw)
    assert g[6] == 0 and struct.unpack_from("<H", g, 8)[0] == 8


def test_int24_and_clamping():
    enc = FrameEncoder(DeviceConfig(("II",), 250.0, 47684, "int24"))
    f = enc.samples(0, np.array([[-8388608], [8388607], [-1], [9_000_000], [-9_000_000]]))
    vals = [int.from_bytes(f[26 + 3 * i:29 + 3 * i], "little", signed=True) for i in range(5)]
    assert vals == [-8388608, 8388607, -1, 8388607, -8388608]


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"fs": 0.0}, SamplingRateError),
        ({"fs": float("nan")}, SamplingRateError),
        ({"sample_format": "float32"}, BridgeConfigError),
        ({"lsb_pv": 0}, BridgeConfigError),
        ({"samples_per_frame": 0}, BridgeConfigError),
        ({"samples_per_frame": 256}, BridgeConfigError),
        ({"model": "x" * 17}, BridgeConfigError),
    ],
)
def test_device_config_rejects_user_mistakes(kwargs, err):
    base = {"leads": ("I",), "fs": 500.0, "lsb_pv": 1000}
    with pytest.raises(err):
        DeviceConfig(**{**base, **kwargs})


def test_frame_size_limit():
    dev = DeviceConfig(tuple(leads_from_mask(0xFFF)), 500.0, 1000, "int24", samples_per_frame=28)
    assert dev.max_samples_per_frame == 28  # 28 * 12 * 3 = 1008 <= 1024 payload bytes
    with pytest.raises(BridgeConfigError):
        FrameEncoder(dev).samples(0, np.zeros((29, 12), dtype=np.int64))


@pytest.mark.parametrize("vec", VECTORS, ids=[v["file"] for v in VECTORS])
def test_python_encoder_reproduces_golden_bytes(vec):
    assert encode_script("\n".join(vec["script"])) == (GOLDEN / vec["file"]).read_bytes()


def _expected_from_script(script: list[str]):
    """(device line fields, list of ('S', ts, raw (n, nl)) / ('I', ts) / ('T', ts, off, batt, flags))."""
    dev = [int(t) if i != 9 else t for i, t in enumerate(script[0].split()[1:])]
    nl = bin(dev[0]).count("1")
    cmds = []
    for line in script[1:]:
        tok = line.split()
        if tok[0] == "S":
            ts, n = int(tok[1]), int(tok[2])
            cmds.append(("S", ts, np.array([int(v) for v in tok[3:]]).reshape(n, nl)))
        else:
            cmds.append((tok[0], *[int(v) for v in tok[1:]]))
    return dev, cmds


@pytest.mark.parametrize("vec", VECTORS, ids=[v["file"] for v in VECTORS])
def test_decoder_reads_golden_vectors(vec):
    data = (GOLDEN / vec["file"]).read_bytes()
    dev, cmds = _expected_from_script(vec["script"])
    mask, fmt, spf, fs_mhz, lsb_pv, dev_id, fa, fb, fc, model, first_seq = dev
    lo, hi = (-(1 << 15), (1 << 15) - 1) if fmt == 1 else (-(1 << 23), (1 << 23) - 1)
    dec = FrameDecoder()
    events = dec.feed(data)
    assert dec.stats.frames == len(cmds) and dec.stats.crc_errors == 0 and dec.stats.garbage_bytes == 0
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    expected = [c for c in cmds if c[0] == "S"]
    assert len(blocks) == len(expected)
    tick0 = blocks[0].tick
    for b, (_, ts, raw) in zip(blocks, expected):
        assert b.leads == leads_from_mask(mask)
        assert b.fs == fs_mhz / 1000
        np.testing.assert_allclose(b.data, np.clip(raw, lo, hi).T * lsb_pv * 1e-9, rtol=1e-6, atol=0)
        # timestamps unwrap across 2**32
        assert b.tick - tick0 == (ts - expected[0][1]) % (1 << 32)
    assert dec.stats.gaps == 0 and dec.stats.lost_frames == 0
    infos = [e for e in events if isinstance(e, DeviceInfo) and not e.inferred]
    if any(c[0] == "I" for c in cmds):
        assert infos[0].device_id == dev_id and infos[0].firmware == f"{fa}.{fb}.{fc}"
        assert infos[0].model == ("" if model == "-" else model)
        assert infos[0].samples_per_frame == spf
    for st, cmd in zip([e for e in events if isinstance(e, StatusEvent)], [c for c in cmds if c[0] == "T"]):
        assert st.lead_off == leads_from_mask(cmd[2])
        assert st.battery_pct == (None if cmd[3] == 255 else cmd[3])
        assert st.saturated == bool(cmd[4] & 1) and st.charging == bool(cmd[4] & 4)
