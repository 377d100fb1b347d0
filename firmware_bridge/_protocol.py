"""The K-MERL patch frame protocol, version 1 (see ``docs/protocol.md``): constants, CRC and the encoder.

Frame layout (all multi-byte fields little-endian, except the CRC which is big-endian)::

    off size field
     0   2   sync           A5 5A
     2   1   version        1
     3   1   type           1 samples, 2 device info, 3 status
     4   2   body_len       bytes from offset 6 up to the CRC (= 8 + payload length)
     6   1   flags          bit 0 STREAM_START (first frame after a device reset)
     7   1   reserved       0
     8   2   seq            frame counter over all frame types, wraps at 65536
    10   4   timestamp      device sample counter (ticks at fs) of the first sample, wraps at 2**32
    14   n   payload        type-specific
  14+n   2   crc            CRC-16/CCITT-FALSE over bytes 2 .. 13+n, big-endian

The envelope (sync, version, type, body_len, ..., CRC) is the same in every version, so a host can skip
frames of versions it does not know.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kmerl_edge._leads import LEADS, canonical_leads

from ._errors import BridgeConfigError, SamplingRateError

__all__ = [
    "SYNC",
    "VERSION",
    "TYPE_SAMPLES",
    "TYPE_DEVICE_INFO",
    "TYPE_STATUS",
    "FLAG_STREAM_START",
    "FORMATS",
    "MAX_SAMPLE_BYTES",
    "crc16",
    "lead_mask",
    "leads_from_mask",
    "DeviceConfig",
    "FrameEncoder",
    "quantise",
]

SYNC = b"\xa5\x5a"
VERSION = 1
TYPE_SAMPLES = 1
TYPE_DEVICE_INFO = 2
TYPE_STATUS = 3
FLAG_STREAM_START = 0x01

STATUS_SATURATED = 0x01
STATUS_LOW_BATTERY = 0x02
STATUS_CHARGING = 0x04

#: sample format name -> (wire code, bytes per sample, min, max)
FORMATS: dict[str, tuple[int, int, int, int]] = {
    "int16": (1, 2, -(1 << 15), (1 << 15) - 1),
    "int24": (2, 3, -(1 << 23), (1 << 23) - 1),
}
FORMAT_NAMES = {code: name for name, (code, *_rest) in FORMATS.items()}

ENVELOPE_SIZE = 6  # sync, version, type, body_len
HEADER_SIZE = 14  # v1 header incl. envelope
CRC_SIZE = 2
SAMPLES_META_SIZE = 12
DEVICE_INFO_SIZE = 36
STATUS_SIZE = 4
MODEL_LEN = 16
MAX_SAMPLE_BYTES = 1024
MAX_SAMPLES_PER_FRAME = 255
#: Largest body a host accepts for a frame of an unknown (future) version before giving up on it.
MAX_FOREIGN_BODY = 2048
#: What a device can mean (an ECG front end): sampling rates in Hz and gains in picovolts per LSB. A frame
#: outside them is refused by the decoder (``DecoderStats.implausible_frames``) and by :class:`DeviceConfig`.
FS_MIN_HZ = 10.0
FS_MAX_HZ = 32_000.0
LSB_PV_MIN = 1_000  # 1 nV per LSB
LSB_PV_MAX = 1_000_000_000  # 1 mV per LSB


def plausible_fs_mhz(fs_mhz: int) -> bool:
    """A rate (millihertz, as on the wire) an ECG device can sample at."""
    return FS_MIN_HZ * 1000 <= fs_mhz <= FS_MAX_HZ * 1000


def plausible_lsb_pv(lsb_pv: int) -> bool:
    """A gain (picovolts per LSB, as on the wire) an ECG front end can have."""
    return LSB_PV_MIN <= lsb_pv <= LSB_PV_MAX

_HEAD = struct.Struct("<BBHBBHI")  # version, type, body_len, flags, reserved, seq, timestamp
_META = struct.Struct("<HBBII")  # lead_mask, format, n_samples, fs_mhz, lsb_pv
_INFO = struct.Struct("<HBBIIIBBBB16s")
_STATUS = struct.Struct("<HBB")


def crc16(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0): ``b"123456789"`` → 0x29B1."""
    return binascii.crc_hqx(data, crc)


def lead_mask(leads: Sequence[str]) -> int:
    """The 12-bit lead mask of ``leads`` (bit i = ``LEADS[i]``)."""
    mask = 0
    for lead in canonical_leads(leads):
        mask |= 1 << LEADS.index(lead)
    return mask


def leads_from_mask(mask: int) -> tuple[str, ...]:
    """The leads of a lead mask, in canonical order (the order of the interleaved samples on the wire)."""
    return tuple(lead for i, lead in enumerate(LEADS) if mask >> i & 1)


@dataclass(frozen=True)
class DeviceConfig:
    """What a patch streams. ``leads`` are stored in canonical order (their order on the wire).

    ``fs`` is sent in millihertz (``round(fs * 1000)``), the gain as ``lsb_pv``: picovolts per LSB, so
    ``mV = raw * lsb_pv * 1e-9`` (1 µV/LSB is ``1_000_000``).
    """

    leads: tuple[str, ...]
    fs: float
    lsb_pv: int
    sample_format: str = "int16"
    samples_per_frame: int = 10
    device_id: int = 0
    firmware: tuple[int, int, int] = (0, 0, 0)
    model: str = ""

    def __post_init__(self) -> None:
        mask = lead_mask(self.leads)
        object.__setattr__(self, "leads", leads_from_mask(mask))
        if not (self.fs > 0) or not plausible_fs_mhz(round(self.fs * 1000)):
            raise SamplingRateError(f"sampling rate must be in {FS_MIN_HZ:g}..{FS_MAX_HZ:g} Hz, got {self.fs}")
        if self.sample_format not in FORMATS:
            raise BridgeConfigError(f"sample format must be one of {', '.join(FORMATS)}, got {self.sample_format!r}")
        if not plausible_lsb_pv(int(self.lsb_pv)):
            raise BridgeConfigError(
                f"lsb_pv (picovolts per LSB) must be in {LSB_PV_MIN}..{LSB_PV_MAX} (1 nV..1 mV), got {self.lsb_pv}"
            )
        if not 1 <= self.samples_per_frame <= self.max_samples_per_frame:
            raise BridgeConfigError(
                f"samples_per_frame must be 1..{self.max_samples_per_frame} for {len(self.leads)} "
                f"{self.sample_format} leads, got {self.samples_per_frame}"
            )
        if not 0 <= self.device_id < 1 << 32:
            raise BridgeConfigError(f"device_id must fit 32 bits, got {self.device_id}")
        if len(self.firmware) != 3 or not all(0 <= v < 256 for v in self.firmware):
            raise BridgeConfigError(f"firmware must be three numbers 0..255, got {self.firmware}")
        if len(self.model.encode("ascii", "replace")) > MODEL_LEN:
            raise BridgeConfigError(f"model name is at most {MODEL_LEN} ASCII characters, got {self.model!r}")

    @property
    def mask(self) -> int:
        return lead_mask(self.leads)

    @property
    def fs_mhz(self) -> int:
        return round(self.fs * 1000)

    @property
    def bytes_per_sample(self) -> int:
        return FORMATS[self.sample_format][1]

    @property
    def max_samples_per_frame(self) -> int:
        return min(MAX_SAMPLES_PER_FRAME, MAX_SAMPLE_BYTES // (len(self.leads) * self.bytes_per_sample))

    @property
    def mv_per_lsb(self) -> float:
        return self.lsb_pv * 1e-9


def quantise(signal_mv: np.ndarray, lsb_pv: int) -> np.ndarray:
    """Signal in mV → int64 ADC counts of ``lsb_pv`` picovolts (round half to even, no clamping)."""
    return np.rint(np.asarray(signal_mv, dtype=np.float64) / (lsb_pv * 1e-9)).astype(np.int64)


class FrameEncoder:
    """Builds frames for one device, byte-identical to the C reference encoder (``c/kmerl_frame.c``).

    The first frame after construction carries ``FLAG_STREAM_START``; ``seq`` increments per frame of any
    type and wraps at 65536. Samples outside the format's range are clamped, as the C encoder does.
    """

    def __init__(self, device: DeviceConfig, *, first_seq: int = 0) -> None:
        self.device = device
        self.seq = first_seq & 0xFFFF
        self._started = False
        _code, self._bps, self._lo, self._hi = FORMATS[device.sample_format]

    def _frame(self, ftype: int, timestamp: int, payload: bytes) -> bytes:
        flags = 0 if self._started else FLAG_STREAM_START
        self._started = True
        head = _HEAD.pack(VERSION, ftype, 8 + len(payload), flags, 0, self.seq, timestamp & 0xFFFFFFFF)
        crc = binascii.crc_hqx(payload, binascii.crc_hqx(head, 0xFFFF))
        self.seq = (self.seq + 1) & 0xFFFF
        return SYNC + head + payload + crc.to_bytes(2, "big")

    def samples(self, timestamp: int, raw: np.ndarray) -> bytes:
        """A samples frame: ``raw`` is (n_samples, n_leads) integer ADC counts, leads in canonical order."""
        arr = np.asarray(raw)
        n_leads = len(self.device.leads)
        if arr.ndim != 2 or arr.shape[1] != n_leads:
            raise BridgeConfigError(f"samples must be (n_samples, {n_leads}), got shape {arr.shape}")
        n = arr.shape[0]
        if not 1 <= n <= self.device.max_samples_per_frame:
            raise BridgeConfigError(f"a frame holds 1..{self.device.max_samples_per_frame} samples, got {n}")
        vals = np.clip(arr.astype(np.int64), self._lo, self._hi)
        if self._bps == 2:
            data = vals.astype("<i2").tobytes()
        else:
            data = vals.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        meta = _META.pack(self.device.mask, FORMATS[self.device.sample_format][0], n, self.device.fs_mhz,
                          int(self.device.lsb_pv))
        return self._frame(TYPE_SAMPLES, timestamp, meta + data)

    def device_info(self, timestamp: int) -> bytes:
        """A device-info frame announcing leads, rate, gain, format, id, firmware version and model."""
        d = self.device
        payload = _INFO.pack(d.mask, FORMATS[d.sample_format][0], d.samples_per_frame, d.fs_mhz, int(d.lsb_pv),
                             d.device_id, *d.firmware, 0, d.model.encode("ascii", "replace"))
        return self._frame(TYPE_DEVICE_INFO, timestamp, payload)

    def status(
        self,
        timestamp: int,
        lead_off: Sequence[str] = (),
        *,
        battery_pct: int | None = None,
        saturated: bool = False,
        low_battery: bool = False,
        charging: bool = False,
    ) -> bytes:
        """A status frame: lead-off mask, battery (``None`` = unknown, sent as 255) and status flags."""
        mask = lead_mask(lead_off) if lead_off else 0
        batt = 255 if battery_pct is None else int(battery_pct)
        if not 0 <= batt <= 255:
            raise BridgeConfigError(f"battery_pct must be 0..100 or None, got {battery_pct}")
        flags = (STATUS_SATURATED if saturated else 0) | (STATUS_LOW_BATTERY if low_battery else 0)
        flags |= STATUS_CHARGING if charging else 0
        return self._frame(TYPE_STATUS, timestamp, _STATUS.pack(mask, batt, flags))
