"""pyserial transport: a reader thread that decodes a port into a bounded queue of events.

Ports are opened with ``serial.serial_for_url``, so device paths (``/dev/ttyACM0``, a pty) and pyserial URL
handlers (``loop://``, ``socket://host:port``, ``rfc2217://host:port``) all work. When the device goes away
(unplugged, socket closed) the reader emits ``LinkStatus(connected=False)``, retries with exponential
backoff, and carries on; gaps across the outage come out of the decoder (frame timestamps) or, for ASCII,
are estimated from the host clock.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kmerl_edge._errors import require
from kmerl_edge._leads import canonical_leads

from ._ascii import AsciiDecoder
from ._decoder import FrameDecoder
from ._errors import BridgeConfigError, DeviceMismatchError, PortError, SamplingRateError
from ._events import Gap, LinkStatus, Message, SampleBlock

__all__ = ["SourceConfig", "BridgeSource", "open_source", "PROTOCOLS"]

PROTOCOLS = ("kmerl", "ascii")


@dataclass(frozen=True)
class SourceConfig:
    """Where and how to read a patch.

    ``fs`` and ``leads`` are required for ``protocol="ascii"`` (the lines do not state them). For
    ``"kmerl"`` the device announces them; if given, they are checked (``DeviceMismatchError`` on a
    different rate) and ``leads`` selects a subset of the device's leads. ``mv_per_unit``/``offset`` apply
    to ASCII values only (``mV = (value - offset) * mv_per_unit``).
    """

    port: str
    protocol: str = "kmerl"
    fs: float | None = None
    leads: tuple[str, ...] | None = None
    baudrate: int = 115200
    mv_per_unit: float = 1.0
    offset: float = 0.0
    queue_size: int = 1024
    read_timeout_s: float = 0.05
    reconnect: bool = True
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise BridgeConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.leads is not None:
            object.__setattr__(self, "leads", canonical_leads(self.leads))
        if self.fs is not None and not (self.fs > 0 and math.isfinite(self.fs)):
            raise SamplingRateError(f"sampling rate must be positive, got {self.fs}")
        if self.protocol == "ascii" and (self.fs is None or self.leads is None):
            raise SamplingRateError(
                "the ascii protocol needs the sampling rate and the leads (--fs, --leads): the lines do not say"
            )
        if self.queue_size < 1 or self.read_timeout_s <= 0 or self.backoff_initial_s <= 0:
            raise BridgeConfigError("queue_size, read_timeout_s and backoff_initial_s must be positive")


class BridgeSource:
    """A started reader of one port, following the runtime's :class:`kmerl_edge.stream.Source` lifecycle:
    ``start()`` → ``get()``/iterate → ``ended`` → ``close()`` (or use ``with``).

    Iteration ends when the source is closed, or when the port is lost and ``reconnect=False``.
    The reader never blocks on a slow consumer: when the queue is full, sample blocks are dropped and
    reported as one ``Gap(reason="queue overflow")`` as soon as there is room again.
    """

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.name = config.port
        self.decoder: FrameDecoder | AsciiDecoder
        if config.protocol == "ascii":
            assert config.fs is not None and config.leads is not None
            self.decoder = AsciiDecoder(config.leads, config.fs, mv_per_unit=config.mv_per_unit,
                                        offset=config.offset)
        else:
            self.decoder = FrameDecoder()
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: Any = None
        self._lock = threading.Lock()
        self._pending_gap: Gap | None = None
        self.transport: dict[str, int] = {
            "bytes_read": 0, "connects": 0, "disconnects": 0, "open_failures": 0,
            "queue_overflows": 0, "overflow_samples": 0, "dropped_events": 0,
        }

    # ------------------------------------------------------------- lifecycle
    def _open(self) -> Any:
        serial: Any = require("serial", "serial")
        try:
            return serial.serial_for_url(self.config.port, baudrate=self.config.baudrate,
                                         timeout=self.config.read_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"cannot open {self.config.port}: {exc}") from exc

    def start(self) -> BridgeSource:
        """Open the port (raising :class:`PortError` if it cannot be opened) and start the reader thread."""
        if self._thread is not None:
            return self
        ser = self._open()
        self._thread = threading.Thread(target=self._run, args=(ser,), name=f"kmerl-bridge {self.config.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stop the reader, close the port, and wait for the thread (idempotent)."""
        self._stop.set()
        with self._lock:
            ser = self._serial
        if ser is not None:
            try:
                ser.cancel_read()
            except Exception:  # noqa: BLE001 - not every URL handler supports it
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> BridgeSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """Nothing more will come: the reader stopped (closed, or the port was lost with
        ``reconnect=False``) and every message it queued has been taken."""
        return self._thread is not None and not self._thread.is_alive() and self._queue.empty()

    @property
    def stats(self) -> dict[str, int]:
        """Decoder fault counters and transport counters, one flat dict."""
        return {**self.decoder.stats.as_dict(), **self.transport}

    def write(self, data: bytes) -> int:
        """Write bytes to the port (commands to the device; on ``loop://`` they come straight back)."""
        with self._lock:
            ser = self._serial
        if ser is None:
            raise PortError(f"{self.config.port} is not connected")
        return int(ser.write(data))

    # ---------------------------------------------------------- reader thread
    def _flush_pending(self) -> None:
        if self._pending_gap is not None:
            try:
                self._queue.put_nowait(self._pending_gap)
                self._pending_gap = None
            except queue.Full:
                pass

    def _put(self, ev: Message) -> None:
        self._flush_pending()
        if self._pending_gap is None:
            try:
                self._queue.put_nowait(ev)
                return
            except queue.Full:
                pass
        if isinstance(ev, SampleBlock | Gap):
            n = ev.n_samples
            if isinstance(ev, SampleBlock):
                self.transport["queue_overflows"] += 1
                self.transport["overflow_samples"] += n
            pg = self._pending_gap
            if pg is None:
                self._pending_gap = Gap(n, ev.t0, "queue overflow", ev.tick)
            else:
                self._pending_gap = Gap(pg.n_samples + n, pg.t0, "queue overflow", pg.tick)
        else:
            try:  # info / status / link events are rare and matter: wait a little for room
                self._queue.put(ev, timeout=0.2)
            except queue.Full:
                self.transport["dropped_events"] += 1

    def _run(self, ser: Any) -> None:
        serial: Any = require("serial", "serial")
        cfg = self.config
        backoff = cfg.backoff_initial_s
        lost_at: float | None = None
        while not self._stop.is_set():
            if ser is None:
                try:
                    ser = self._open()
                except PortError:
                    self.transport["open_failures"] += 1
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, cfg.backoff_max_s)
                    continue
            backoff = cfg.backoff_initial_s
            with self._lock:
                self._serial = ser
            self.transport["connects"] += 1
            self._put(LinkStatus(True, cfg.port, "connected"))
            if lost_at is not None and isinstance(self.decoder, AsciiDecoder):
                assert cfg.fs is not None
                n = int(round((time.monotonic() - lost_at) * cfg.fs))
                if n > 0:
                    self._put(self.decoder.skip(n, "disconnected (estimated)"))
            detail = "closed"
            try:
                while not self._stop.is_set():
                    data = ser.read(1)
                    if not data:
                        self._flush_pending()  # idle: hand on a pending overflow gap once there is room
                        continue
                    waiting = ser.in_waiting
                    if waiting:
                        data += ser.read(waiting)
                    self.transport["bytes_read"] += len(data)
                    for ev in self.decoder.feed(data):
                        self._put(ev)
            except (serial.SerialException, OSError) as exc:
                detail = str(exc) or type(exc).__name__
            finally:
                with self._lock:
                    self._serial = None
                try:
                    ser.close()
                except Exception:  # noqa: BLE001 - closing a vanished device may fail; it is gone anyway
                    pass
                ser = None
            self.decoder.flush()
            if self._stop.is_set():
                break
            self.transport["disconnects"] += 1
            lost_at = time.monotonic()
            self._put(LinkStatus(False, cfg.port, detail))
            if not cfg.reconnect:
                break
            self._stop.wait(backoff)
        if self._pending_gap is not None:
            try:
                self._queue.put(self._pending_gap, timeout=0.2)
                self._pending_gap = None
            except queue.Full:
                self.transport["dropped_events"] += 1

    # --------------------------------------------------------------- consumer
    def _check(self, ev: Message) -> Message:
        cfg = self.config
        if cfg.protocol != "kmerl" or not isinstance(ev, SampleBlock):
            return ev
        if cfg.fs is not None and abs(ev.fs - cfg.fs) > 1e-3:
            raise DeviceMismatchError(f"{cfg.port} streams {ev.fs:g} Hz but {cfg.fs:g} Hz was declared")
        if cfg.leads is not None and cfg.leads != ev.leads:
            missing = [lead for lead in cfg.leads if lead not in ev.leads]
            if missing:
                raise DeviceMismatchError(
                    f"{cfg.port} streams leads {','.join(ev.leads)}; {','.join(missing)} not among them"
                )
            rows = [ev.leads.index(lead) for lead in cfg.leads]
            return replace(ev, leads=cfg.leads, data=ev.data[rows])
        return ev

    def get(self, timeout: float | None = None) -> Message | None:
        """The next event, or ``None`` if none arrived within ``timeout`` seconds."""
        try:
            return self._check(self._queue.get(timeout=timeout))
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                ev = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self.running and self._queue.empty():
                    return
                continue
            yield self._check(ev)


def open_source(
    url_or_port: str,
    protocol: str = "kmerl",
    fs: float | None = None,
    leads: Sequence[str] | str | None = None,
    **options: Any,
) -> BridgeSource:
    """Open a patch on a serial port or pyserial URL and start reading; iterate the result for events.

    >>> with open_source("/dev/ttyACM0") as src:            # K-MERL frames: the device says fs and leads
    ...     for ev in src: ...
    >>> open_source("socket://localhost:7000", "ascii", fs=250, leads="I")   # hobby board: declare them

    ``options`` are the other :class:`SourceConfig` fields (``baudrate``, ``reconnect``, ``queue_size``...).
    Raises :class:`PortError` if the port cannot be opened, :class:`SamplingRateError` for ASCII without
    ``fs``/``leads``.
    """
    if isinstance(leads, str):
        leads = tuple(p.strip() for p in leads.split(",") if p.strip())
    cfg = SourceConfig(port=url_or_port, protocol=protocol, fs=fs,
                       leads=tuple(leads) if leads is not None else None, **options)
    return BridgeSource(cfg).start()
