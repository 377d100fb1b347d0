"""The virtual patch: a real recording streamed through a real pty, as a patch's firmware would send it.

It resamples a WFDB / ``.mat`` record to the device rate (``scipy.signal.resample_poly``), quantises it,
and writes K-MERL frames (or ASCII lines) in real time (times ``speed``) to the master side of a pty. The
slave side is reached through a stable symlink (like ``/dev/serial/by-id/...``), so an unplug (closing the
pty) and replug (a new pty behind the same path) exercise the host's reconnection. Faults are injected
per frame (a chunk of ``frame_samples`` lines for ASCII): dropped, or corrupted by one flipped bit.

A patch waits for a reader: streaming starts when a host opens the port (the pty's master reports a hang-up
while no one holds the slave side), so nothing is lost to an empty port. With ``wait_for_reader=False`` it
streams at once, as a patch that is switched on before the host listens: samples sent while no reader is
attached are lost, counted in ``stats["lost_before_reader"]`` and reported when a reader attaches.
"""

from __future__ import annotations

import fcntl
import math
import os
import select
import shutil
import struct
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._io import read_record
from kmerl_edge._leads import canonical_leads

from ._ascii import format_ascii_lines
from ._errors import BridgeConfigError, SamplingRateError
from ._protocol import DeviceConfig, FrameEncoder, lead_mask, leads_from_mask, quantise

__all__ = ["SimulateConfig", "VirtualPatch", "load_patch_signal"]


def load_patch_signal(
    record: str | Path,
    leads: Sequence[str],
    fs: float,
    *,
    lead_map: Mapping[str, str] | str | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read ``record`` and return ``(signal, leads)``: (n_leads, n) float64 mV at ``fs``, leads canonical order.

    The record is read with the runtime's channel rules (:func:`kmerl_edge.read_record`): channels that are
    not ECG are left out; ECG channels of unknown position (``MCL1``, ``V``, ``ECG 1``) need ``lead_map``
    ({channel: lead} or ``"ECG 1=I"``). A record with missing samples is refused: a virtual patch replays
    complete recordings, and resampling would smear a gap into its neighbours.
    Resampling is ``resample_poly`` with the rate ratio as a fraction (denominator ≤ 1000).
    """
    if fs is None or not fs > 0:
        raise SamplingRateError(f"the patch's sampling rate must be positive, got {fs}")
    want = leads_from_mask(lead_mask(canonical_leads(leads)))
    rec = read_record(record, leads=want, lead_map=dict(lead_map) if isinstance(lead_map, Mapping) else lead_map)
    missing = int(np.isnan(rec.signal).any(axis=0).sum())
    if missing:
        raise BridgeConfigError(
            f"{rec.name}: {missing} missing samples ({missing / rec.fs:.1f} s); a virtual patch replays complete "
            "recordings only (use --seconds to stop before the first gap, or a record without gaps)"
        )
    sig = rec.signal.astype(np.float64)
    if abs(rec.fs - fs) > 1e-9:
        from scipy.signal import resample_poly

        ratio = Fraction(fs / rec.fs).limit_denominator(1000)
        sig = resample_poly(sig, ratio.numerator, ratio.denominator, axis=1)
    return sig, want


def inject_fault(
    data: bytes, drop_rate: float, corrupt_rate: float, rng: np.random.Generator, stats: dict[str, int]
) -> bytes | None:
    """A virtual link's faults: ``None`` (dropped) with probability ``drop_rate``, else one flipped bit
    with probability ``corrupt_rate``; counted in ``stats["dropped"]`` / ``stats["corrupted"]``."""
    if drop_rate and rng.random() < drop_rate:
        stats["dropped"] += 1
        return None
    if corrupt_rate and rng.random() < corrupt_rate:
        stats["corrupted"] += 1
        b = bytearray(data)
        i = int(rng.integers(len(b)))
        b[i] ^= 1 << int(rng.integers(8))
        return bytes(b)
    return data


def check_replay_options(cfg: Any) -> None:
    """``speed`` > 0 and ``drop_rate`` / ``corrupt_rate`` probabilities: the options every virtual patch
    (serial or MQTT) shares; a :class:`BridgeConfigError` naming the command-line option otherwise."""
    if not cfg.speed > 0:
        raise BridgeConfigError(f"--speed must be positive, got {cfg.speed}")
    for name in ("drop_rate", "corrupt_rate"):
        p = getattr(cfg, name)
        if not 0.0 <= p <= 1.0:
            raise BridgeConfigError(f"--{name.replace('_', '-')} must be a probability in [0, 1], got {p}")


@dataclass(frozen=True)
class SimulateConfig:
    """A virtual patch: which record, leads and rate, how fast, which faults. ``fs`` is required."""

    record: str
    leads: tuple[str, ...]
    fs: float
    protocol: str = "kmerl"
    speed: float = 1.0
    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    unplug_after_s: float | None = None  #: wall seconds of streaming before the cable is pulled
    unplug_for_s: float = 1.0  #: wall seconds it stays unplugged (the device keeps sampling)
    frame_samples: int = 10
    sample_format: str = "int16"
    lsb_pv: int = 1_000_000  #: 1 µV per LSB
    ascii_decimals: int = 3
    info_every_s: float = 1.0  #: device seconds between device-info and status frames
    loop: bool = False
    seed: int = 0
    link: str | None = None
    linger_s: float = 5.0  #: after the last frame, wait up to this long for the host to read everything
    seconds: float | None = None  #: stream only the first this many seconds of the record
    device_id: int = 0x4B4D0001
    model: str = "kmerl-virtual"
    wait_for_reader: bool = True  #: start streaming when a host opens the port (False: at once)
    #: which standard lead each ECG channel of unknown position is, e.g. (("ECG 1", "I"),)
    lead_map: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("kmerl", "ascii"):
            raise BridgeConfigError(f"protocol must be kmerl or ascii, got {self.protocol!r}")
        if self.fs is None or not (self.fs > 0 and math.isfinite(self.fs)):
            raise SamplingRateError(f"--fs must be a positive rate, got {self.fs}")
        check_replay_options(self)
        if self.unplug_after_s is not None and (self.unplug_after_s < 0 or self.unplug_for_s <= 0):
            raise BridgeConfigError("--unplug-after must be >= 0 and --unplug-for > 0")
        object.__setattr__(self, "leads", canonical_leads(self.leads))


class VirtualPatch:
    """A pty-backed virtual patch. ``open()`` returns the port path; ``run()`` streams (or ``start()``)."""

    def __init__(self, config: SimulateConfig) -> None:
        self.config = config
        self.signal, leads = load_patch_signal(
            config.record, config.leads, config.fs, lead_map=dict(config.lead_map) if config.lead_map else None
        )
        self.device = DeviceConfig(leads, config.fs, config.lsb_pv, config.sample_format,
                                   min(config.frame_samples, 255), config.device_id, (0, 1, 0), config.model)
        if config.frame_samples > self.device.max_samples_per_frame:
            raise BridgeConfigError(
                f"--frame-samples {config.frame_samples} exceeds {self.device.max_samples_per_frame} for this device"
            )
        if config.seconds is not None:
            if not config.seconds > 0:
                raise BridgeConfigError(f"--seconds must be positive, got {config.seconds}")
            self.signal = self.signal[:, : max(1, int(round(config.seconds * config.fs)))]
        self.raw = quantise(self.signal, config.lsb_pv)  # (n_leads, n)
        self._rng = np.random.default_rng(config.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = -1
        self._slave = -1
        self._tmpdir: str | None = None
        self.path = ""
        self.stats: dict[str, int] = {
            "frames": 0, "samples": 0, "dropped": 0, "corrupted": 0, "unplugged_frames": 0,
            "overflow_bytes": 0, "unplugs": 0, "bytes_written": 0, "lost_before_reader": 0,
        }
        self._slave_name = ""
        self.reader_attached = threading.Event()
        #: called once, from the streaming thread, when a reader attaches: (device tick, samples lost before)
        self.on_reader: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ pty
    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        self._slave_name = os.ttyname(slave)
        os.symlink(self._slave_name, tmp)
        os.replace(tmp, self.path)

    def _reader_present(self) -> bool:
        """Whether anyone holds the slave side open (the master reports a hang-up when no one does)."""
        if self._master < 0:
            return False
        p = select.poll()
        p.register(self._master, select.POLLHUP)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def _attach(self, tick: int) -> None:
        """A reader opened the port: hold the slave side ourselves from now on (buffer across the host's
        reconnections, FIONREAD) and report what was lost before."""
        self._slave = os.open(self._slave_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.reader_attached.set()
        if self.on_reader is not None:
            self.on_reader(tick, self.stats["lost_before_reader"])

    def _unplug(self) -> None:
        if os.path.lexists(self.path):
            os.unlink(self.path)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def open(self) -> str:
        """Create the pty and its stable path; returns the path the host should open."""
        if self.path:
            return self.path
        if self.config.link:
            self.path = str(Path(self.config.link).absolute())
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="kmerl-patch-")
            self.path = os.path.join(self._tmpdir, "tty")
        self._plug()
        os.close(self._slave)  # until a reader attaches, no one holds the slave side: we can see it arrive
        self._slave = -1
        return self.path

    def close(self) -> None:
        """Stop streaming, close the pty and remove the path."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._unplug()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> VirtualPatch:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> str:
        """Open the pty and stream from a background thread; returns the port path."""
        path = self.open()
        self._thread = threading.Thread(target=self.run, name="kmerl-virtual-patch", daemon=True)
        self._thread.start()
        return path

    def stop(self) -> None:
        self._stop.set()

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _write(self, data: bytes) -> None:
        if self._master < 0 or not data:
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError:
            n = 0
        self.stats["bytes_written"] += n
        self.stats["overflow_bytes"] += len(data) - n

    def _pending(self) -> int:
        if self._slave < 0:
            return 0
        buf = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    def _fault(self, frame: bytes) -> bytes | None:
        return inject_fault(frame, self.config.drop_rate, self.config.corrupt_rate, self._rng, self.stats)

    # ------------------------------------------------------------- streaming
    def run(self) -> dict[str, int]:
        """Stream the recording (blocking) until it ends (or forever with ``loop``) or ``stop()``, then hang up."""
        cfg = self.config
        self.open()
        enc = FrameEncoder(self.device)
        n_total = self.raw.shape[1]
        fs = cfg.fs
        info_every = max(1, int(round(cfg.info_every_s * fs)))
        next_info = 0
        battery = 100
        tick = 0
        unplug_at = cfg.unplug_after_s
        replug_at: float | None = None
        if cfg.wait_for_reader and not self.reader_attached.is_set():
            while not self._stop.is_set() and not self._reader_present():
                self._stop.wait(0.01)
            if self._stop.is_set():
                self._unplug()
                return self.stats
            self._attach(0)
        t_start = time.monotonic()
        while not self._stop.is_set():
            idx = tick % n_total
            if tick >= n_total and not cfg.loop:
                break
            n = min(cfg.frame_samples, n_total - idx)
            due = t_start + (tick + n) / fs / cfg.speed
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            wall = time.monotonic() - t_start
            if unplug_at is not None and wall >= unplug_at:
                unplug_at = None
                replug_at = wall + cfg.unplug_for_s
                self.stats["unplugs"] += 1
                self._unplug()
            if replug_at is not None and wall >= replug_at:
                replug_at = None
                self._plug()
            out = bytearray()
            if cfg.protocol == "kmerl":
                if tick >= next_info:
                    next_info += info_every
                    out += enc.device_info(tick)
                    out += enc.status(tick, battery_pct=battery)
                    battery = max(0, battery - 1)
                frame = enc.samples(tick, self.raw[:, idx:idx + n].T)
            else:
                frame = format_ascii_lines(self.raw[:, idx:idx + n] * (cfg.lsb_pv * 1e-9), cfg.ascii_decimals)
            self.stats["frames"] += 1
            if not self.reader_attached.is_set():
                if self._reader_present():
                    self._attach(tick)
                else:  # streaming into a port no one reads: lost, and counted
                    self.stats["lost_before_reader"] += n
                    self.stats["samples"] += n
                    tick += n
                    continue
            if replug_at is not None:
                self.stats["unplugged_frames"] += 1
            else:
                sent = self._fault(frame)
                if sent is not None:
                    out += sent
                self._write(bytes(out))
            self.stats["samples"] += n
            tick += n
        # let the host drain what is buffered in the pty before hanging up
        # (FIONREAD misses bytes still in the tty flip buffer, so wait until it reads 0 twice, 0.1 s apart)
        deadline = time.monotonic() + cfg.linger_s
        quiet = 0
        while not self._stop.is_set() and quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            quiet = quiet + 1 if self._pending() == 0 else 0
        self._unplug()  # hang up, as a patch that is switched off
        return self.stats
