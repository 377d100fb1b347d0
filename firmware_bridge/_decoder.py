"""Incremental decoder of the K-MERL frame protocol.

Feed it bytes in any chunking; it returns stream messages (:mod:`firmware_bridge._events`). It never raises
on bad bytes: garbage is skipped (and counted), frames failing their CRC are rejected, a sequence gap becomes
a :class:`Gap` with its exact length in samples (from the device's sample-counter timestamps), duplicated
and stale frames are dropped. Every fault has a counter in :class:`DecoderStats`.

Timestamp model. The timestamp is the device's sample counter (32 bits, wraps; the decoder unwraps it to
64 bits). Frames in an unbroken sequence must continue it exactly; a sequence gap may advance it by at most
what the lost frames can hold (255 samples each) plus ``MAX_SKIP_S`` seconds the device may skip on its own.
A samples frame outside that (its timestamp goes backwards, or jumps further than that) is a *timestamp
fault*: it is dropped and counted (``timestamp_errors``, its samples in ``bad_timestamp_samples``), nothing
moves, and the next frame's timestamp decides whether samples are missing, so a single bad frame delivers
no old samples as new, reports no gap that did not happen and shifts no later time. Only when
``CLOCK_CONFIRM`` consecutive frames agree on the new timestamps does the decoder accept that the device's
clock jumped (``clock_jumps``): a ``Gap(reset=True)`` (holding the samples of the frames dropped while
confirming) starts a new timeline that continues the host's unwrapped tick. No input makes the decoder do
work proportional to a timestamp jump.
"""

from __future__ import annotations

import binascii
import struct
from array import array
from dataclasses import asdict, dataclass

import numpy as np

from ._events import DeviceInfo, Gap, LeadStatus, Message, SampleBlock
from ._protocol import (
    DEVICE_INFO_SIZE,
    FLAG_STREAM_START,
    FORMAT_NAMES,
    HEADER_SIZE,
    MAX_FOREIGN_BODY,
    MAX_SAMPLE_BYTES,
    MAX_SAMPLES_PER_FRAME,
    SAMPLES_META_SIZE,
    STATUS_CHARGING,
    STATUS_LOW_BATTERY,
    STATUS_SATURATED,
    STATUS_SIZE,
    SYNC,
    TYPE_DEVICE_INFO,
    TYPE_SAMPLES,
    TYPE_STATUS,
    VERSION,
    leads_from_mask,
    plausible_fs_mhz,
    plausible_lsb_pv,
)

__all__ = ["DecoderStats", "FrameDecoder"]

_M32 = 0xFFFFFFFF
_FLAGS = struct.Struct("<BBHI")  # flags, reserved, seq, timestamp (at offset 6)
_META = struct.Struct("<HBBII")
_INFO = struct.Struct("<HBBIIIBBBB16s")
_STATUS = struct.Struct("<HBB")
_SAMPLES_MIN = 8 + SAMPLES_META_SIZE
_SAMPLES_MAX = 8 + SAMPLES_META_SIZE + MAX_SAMPLE_BYTES
#: consecutive stale-but-consecutive frames after which the decoder accepts that the device restarted
#: without setting STREAM_START.
STALE_RESTART_RUN = 8
#: consecutive samples frames agreeing on timestamps outside the running timeline after which the decoder
#: accepts that the device's clock jumped.
CLOCK_CONFIRM = 3
#: seconds of samples a device may skip (timestamps jump ahead) without losing a frame.
MAX_SKIP_S = 2.0


@dataclass
class DecoderStats:
    """Counters of everything the decoder saw. Faults: every field from ``garbage_bytes`` on."""

    bytes_in: int = 0
    frames: int = 0  #: CRC-valid frames of this version accepted (any type)
    sample_frames: int = 0
    samples: int = 0  #: samples per lead delivered in SampleBlocks
    device_info_frames: int = 0
    status_frames: int = 0
    garbage_bytes: int = 0  #: bytes that were not part of any accepted frame
    resyncs: int = 0  #: times the decoder lost frame alignment and had to search for a sync word
    bad_headers: int = 0  #: sync words followed by an impossible version/type/length
    crc_errors: int = 0  #: frames rejected by their CRC
    truncated_frames: int = 0  #: CRC failures where a new frame starts inside (cut-short frames), and a
    #: partial frame left at flush()
    invalid_frames: int = 0  #: CRC-valid frames whose fields are impossible (empty lead mask, fs 0, ...)
    implausible_frames: int = 0  #: CRC-valid frames whose rate (outside 10 Hz..32 kHz) or gain (outside
    #: 1 nV..1 mV per LSB) no ECG device can mean
    unsupported_version: int = 0  #: CRC-valid frames of a protocol version this decoder does not read
    duplicates: int = 0  #: frames repeating the previous sequence number (dropped)
    stale_frames: int = 0  #: frames from behind the sequence (replayed / out of order, dropped)
    lost_frames: int = 0  #: frames missing from the sequence (any type)
    gaps: int = 0  #: Gaps emitted
    lost_samples: int = 0  #: samples per lead reported lost in Gaps
    restarts: int = 0  #: device restarts (STREAM_START, or a run of consecutive stale frames)
    timestamp_errors: int = 0  #: samples frames dropped because their timestamp left the timeline
    bad_timestamp_samples: int = 0  #: samples per lead in those frames
    clock_jumps: int = 0  #: device clock jumps accepted after CLOCK_CONFIRM consistent frames
    config_changes: int = 0  #: samples frames whose leads / rate / gain / format changed mid-stream

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def faults(self) -> int:
        d = self.as_dict()
        keys = list(d)
        skip = {"gaps", "bad_timestamp_samples"}
        return sum(d[k] for k in keys[keys.index("garbage_bytes"):] if k not in skip)


class _Cfg:
    __slots__ = ("leads", "n_leads", "bps", "dtype", "scale", "fs", "fmt")

    def __init__(self, mask: int, fmt: int, fs_mhz: int, lsb_pv: int) -> None:
        self.leads = leads_from_mask(mask)
        self.n_leads = len(self.leads)
        self.bps = 2 if fmt == 1 else 3
        self.dtype = np.dtype("<i2")
        self.scale = np.float32(lsb_pv * 1e-9)
        self.fs = fs_mhz / 1000.0
        self.fmt = FORMAT_NAMES[fmt]


class FrameDecoder:
    """Incremental, fault-counting decoder of K-MERL frames (protocol version 1).

    >>> dec = FrameDecoder()
    >>> events = dec.feed(chunk)          # any chunking; never raises on bad bytes
    >>> dec.stats.crc_errors, dec.stats.gaps

    Times in the events are the device's: ``tick`` is its sample counter unwrapped to 64 bits, kept
    monotonic across device restarts; ``t0 = tick / fs``.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._rest = b""
        self._skipping = False
        self._last_seq: int | None = None
        self._next_raw: int | None = None
        self._next_ext: int | None = None
        self._lost_since = 0
        self._stale_run = 0
        self._stale_last: int | None = None
        self._cand_next: int | None = None  # raw timestamp a timestamp-fault run expects next
        self._cand_run = 0
        self._cand_samples = 0
        self._cfg_key: tuple[int, int, int, int] | None = None
        self._cfg: _Cfg | None = None
        self._cfgs: dict[tuple[int, int, int, int], _Cfg] = {}
        self._info: DeviceInfo | None = None
        self._status: tuple[int, int, int] | None = None
        #: CRC of the last accepted frame with each sequence number: a replayed old frame (same seq, same
        #: CRC) is recognised as stale even when it carries STREAM_START, so it cannot fake a restart.
        self._seen = array("l", [-1]) * 65536

    # ------------------------------------------------------------------ bytes
    def _skip(self, k: int) -> None:
        if k > 0:
            self.stats.garbage_bytes += k
            if not self._skipping:
                self.stats.resyncs += 1
                self._skipping = True

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Message]:
        """Consume ``chunk`` and return the events it completes (possibly none)."""
        st = self.stats
        st.bytes_in += len(chunk)
        data = self._rest + bytes(chunk) if self._rest else bytes(chunk)
        out: list[Message] = []
        n = len(data)
        pos = 0
        find = data.find
        crc = binascii.crc_hqx
        mv = memoryview(data)
        while True:
            i = find(SYNC, pos)
            if i < 0:
                keep = 1 if n > pos and data[n - 1] == 0xA5 else 0
                self._skip(n - keep - pos)
                pos = n - keep
                break
            if i > pos:
                self._skip(i - pos)
                pos = i
            if n - pos < 6:
                break
            ver = data[pos + 2]
            ftype = data[pos + 3]
            body_len = data[pos + 4] | (data[pos + 5] << 8)
            if ver == VERSION:
                ok = (
                    (ftype == TYPE_SAMPLES and _SAMPLES_MIN < body_len <= _SAMPLES_MAX)
                    or (ftype == TYPE_DEVICE_INFO and body_len == 8 + DEVICE_INFO_SIZE)
                    or (ftype == TYPE_STATUS and body_len == 8 + STATUS_SIZE)
                )
            else:
                ok = 1 < ver < 16 and 0 < ftype < 16 and 8 <= body_len <= MAX_FOREIGN_BODY
            if not ok:
                st.bad_headers += 1
                self._skip(1)
                pos += 1
                continue
            end = pos + 8 + body_len
            if end > n:
                break  # wait for the rest of the frame
            if crc(mv[pos + 2:end], 0xFFFF) != 0:
                j = find(SYNC, pos + 2, end)
                if j >= 0 and j + 2 < n and data[j + 2] == VERSION:
                    st.truncated_frames += 1
                else:
                    st.crc_errors += 1
                self._skip(1)
                pos += 1
                continue
            self._skipping = False
            if ver != VERSION:
                st.unsupported_version += 1
            else:
                self._accept(data, pos, ftype, body_len, (data[end - 2] << 8) | data[end - 1], out)
            pos = end
        mv.release()
        self._rest = data[pos:]
        return out

    def flush(self) -> list[Message]:
        """The byte stream ended or was broken (port closed, unplugged): drop and count a partial frame."""
        rest, self._rest = self._rest, b""
        if rest:
            if rest.startswith(SYNC) and len(rest) >= 3 and rest[2] == VERSION:
                self.stats.truncated_frames += 1
            self._skip(len(rest))
        self._skipping = False
        return []

    # ----------------------------------------------------------------- frames
    def _ext(self, ts: int) -> int:
        """Unwrap a raw device timestamp against the running timeline."""
        if self._next_raw is None or self._next_ext is None:
            return ts if self._next_ext is None else self._next_ext
        d = (ts - self._next_raw) & _M32
        return self._next_ext + (d - (1 << 32) if d >= 1 << 31 else d)

    def _accept(self, data: bytes, pos: int, ftype: int, body_len: int, crc: int, out: list[Message]) -> None:
        st = self.stats
        flags, _reserved, seq, ts = _FLAGS.unpack_from(data, pos + 6)
        p = pos + HEADER_SIZE
        # 1. semantic validation before touching any sequence state
        if ftype == TYPE_SAMPLES:
            mask, fmt, n, fs_mhz, lsb_pv = _META.unpack_from(data, p)
            if (
                not 0 < mask < 4096
                or fmt not in FORMAT_NAMES
                or n == 0
                or fs_mhz == 0
                or lsb_pv == 0
                or body_len != _SAMPLES_MIN + bin(mask).count("1") * n * (2 if fmt == 1 else 3)
            ):
                st.invalid_frames += 1
                return
            if not (plausible_fs_mhz(fs_mhz) and plausible_lsb_pv(lsb_pv)):
                st.implausible_frames += 1
                return
        elif ftype == TYPE_DEVICE_INFO:
            info = _INFO.unpack_from(data, p)
            if not 0 < info[0] < 4096 or info[1] not in FORMAT_NAMES or info[3] == 0 or info[4] == 0:
                st.invalid_frames += 1
                return
            if not (plausible_fs_mhz(info[3]) and plausible_lsb_pv(info[4]) and 0 < info[2] <= MAX_SAMPLES_PER_FRAME):
                st.implausible_frames += 1
                return
        # 2. sequence: duplicates, stale frames, restarts, lost frames
        restart = False
        if self._last_seq is not None:
            d = (seq - self._last_seq) & 0xFFFF
            replay = self._seen[seq] == crc  # a copy of an accepted frame (checked only when not moving on)
            start = flags & FLAG_STREAM_START
            if d == 0 and (replay or not start):
                st.duplicates += 1
                return
            if start and not replay:
                restart = True
            elif start or d >= 0x8000:
                st.stale_frames += 1
                if replay:
                    return
                if self._stale_last is not None and seq == (self._stale_last + 1) & 0xFFFF:
                    self._stale_run += 1
                else:
                    self._stale_run = 1
                self._stale_last = seq
                if self._stale_run < STALE_RESTART_RUN:
                    return
                restart = True
            else:
                st.lost_frames += d - 1
                self._lost_since += d - 1
        self._stale_run = 0
        self._stale_last = None
        self._last_seq = seq
        self._seen[seq] = crc
        st.frames += 1
        if restart:
            st.restarts += 1
            self._next_raw = None
            self._lost_since = 0
            self._cand_next = None
            self._cand_run = self._cand_samples = 0
            if self._next_ext is not None and self._cfg is not None:
                out.append(Gap(0, self._next_ext / self._cfg.fs, "device restarted", self._next_ext, reset=True))
        # 3. payload
        if ftype == TYPE_SAMPLES:
            self._samples(data, p, seq, ts, mask, fmt, n, fs_mhz, lsb_pv, out)
        elif ftype == TYPE_DEVICE_INFO:
            st.device_info_frames += 1
            mask, fmt, spf, fs_mhz, lsb_pv, dev_id, fw_a, fw_b, fw_c, _r, model = info
            ev = DeviceInfo(
                leads=leads_from_mask(mask),
                fs=fs_mhz / 1000.0,
                mv_per_lsb=lsb_pv * 1e-9,
                sample_format=FORMAT_NAMES[fmt],
                samples_per_frame=spf,
                device_id=dev_id,
                firmware=f"{fw_a}.{fw_b}.{fw_c}",
                model=model.split(b"\0", 1)[0].decode("ascii", "replace"),
            )
            if ev != self._info:
                self._info = ev
                out.append(ev)
        else:
            st.status_frames += 1
            off_mask, batt, sflags = _STATUS.unpack_from(data, p)
            key = (off_mask & 0xFFF, batt, sflags)
            if key != self._status:
                self._status = key
                tick = self._ext(ts)
                fs = self._cfg.fs if self._cfg is not None else (self._info.fs if self._info else 0.0)
                out.append(LeadStatus(
                    lead_off=leads_from_mask(off_mask & 0xFFF),
                    t0=tick / fs if fs else float("nan"),
                    battery_pct=None if batt == 255 else batt,
                    saturated=bool(sflags & STATUS_SATURATED),
                    low_battery=bool(sflags & STATUS_LOW_BATTERY),
                    charging=bool(sflags & STATUS_CHARGING),
                    seq=seq,
                ))

    def _samples(self, data: bytes, p: int, seq: int, ts: int, mask: int, fmt: int, n: int, fs_mhz: int,
                 lsb_pv: int, out: list[Message]) -> None:
        st = self.stats
        key = (mask, fmt, fs_mhz, lsb_pv)
        if key != self._cfg_key:
            cfg = self._cfgs.get(key)
            if cfg is None:
                cfg = self._cfgs[key] = _Cfg(mask, fmt, fs_mhz, lsb_pv)
            if self._cfg_key is not None:
                st.config_changes += 1
                self._next_raw = None  # a new timeline in the new rate, continuing the old one
            self._cfg_key, self._cfg = key, cfg
            info = self._info
            if info is None or (info.leads, info.fs, info.sample_format) != (cfg.leads, cfg.fs, cfg.fmt) or \
                    abs(info.mv_per_lsb - lsb_pv * 1e-9) > 1e-15:
                self._info = DeviceInfo(cfg.leads, cfg.fs, lsb_pv * 1e-9, cfg.fmt, inferred=True)
                out.append(self._info)
        cfg = self._cfg
        assert cfg is not None
        # timeline (see the module docstring): O(1) whatever the timestamps say
        if self._next_raw is None or self._next_ext is None:
            ext = ts if self._next_ext is None else self._next_ext
        else:
            dt = (ts - self._next_raw) & _M32
            ext = self._next_ext
            bound = (self._lost_since + 1) * MAX_SAMPLES_PER_FRAME + int(MAX_SKIP_S * cfg.fs)
            if dt == 0:
                pass
            elif dt <= bound:
                reason = "lost frames" if self._lost_since else "device skipped samples"
                out.append(Gap(dt, ext / cfg.fs, reason, ext))
                st.gaps += 1
                st.lost_samples += dt
                ext += dt
            else:
                st.timestamp_errors += 1
                st.bad_timestamp_samples += n
                if self._cand_next is not None and ts == self._cand_next:
                    self._cand_run += 1
                else:
                    self._cand_run = 1
                    self._cand_samples = 0
                self._cand_next = (ts + n) & _M32
                if self._cand_run < CLOCK_CONFIRM:
                    self._cand_samples += n
                    self._lost_since += 1  # its slot may hold samples: the next frame's timestamp tells
                    return
                # the device's clock jumped: a new timeline; the frames dropped while confirming are lost
                st.clock_jumps += 1
                lost = self._cand_samples
                out.append(Gap(lost, ext / cfg.fs, "device clock jumped", ext, reset=True))
                if lost:
                    st.gaps += 1
                    st.lost_samples += lost
                ext += lost
        self._cand_next = None
        self._cand_run = self._cand_samples = 0
        self._lost_since = 0
        self._next_raw = (ts + n) & _M32
        self._next_ext = ext + n
        nl = cfg.n_leads
        p += SAMPLES_META_SIZE
        if cfg.bps == 2:
            raw = np.frombuffer(data, dtype=cfg.dtype, count=n * nl, offset=p).reshape(n, nl)
        else:
            b = np.frombuffer(data, dtype=np.uint8, count=n * nl * 3, offset=p).reshape(n, nl, 3).astype(np.int32)
            raw = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
            raw = (raw ^ 0x800000) - 0x800000
        block = np.ascontiguousarray(raw.T, dtype=np.float32)
        block *= cfg.scale
        st.sample_frames += 1
        st.samples += n
        out.append(SampleBlock(cfg.leads, cfg.fs, block, ext / cfg.fs, seq, ext))
