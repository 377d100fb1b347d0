"""The events a decoder (and :func:`firmware_bridge.open_source`) hands to the streaming session.

All are small frozen dataclasses. Times are the *device's* clock in seconds (``tick / fs``, where ``tick``
is the device's sample counter, unwrapped to 64 bits); for the ASCII protocol, which carries no
timestamps, ticks are counted by the host, one per line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SampleBlock", "GapEvent", "StatusEvent", "DeviceInfo", "LinkEvent", "Event"]


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """Samples that arrived intact: ``data`` is (n_leads, n) float32 in mV, rows in ``leads`` order.

    ``t0`` is the device time of the first sample in seconds, ``tick`` the same as a sample index, ``seq``
    the frame sequence number it came in (0..65535, wraps).
    """

    leads: tuple[str, ...]
    fs: float
    data: np.ndarray
    t0: float
    seq: int
    tick: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True)
class GapEvent:
    """``n_samples`` samples per lead, starting at device time ``t0`` (sample ``tick``), that were lost.

    ``reason`` says why: ``"lost frames"`` (sequence gap: dropped or corrupted frames), ``"device skipped
    samples"`` (timestamps jumped inside an unbroken sequence), ``"malformed line"`` (ASCII),
    ``"queue overflow"`` (the consumer fell behind), ``"disconnected (estimated)"`` (ASCII only).
    """

    n_samples: int
    t0: float
    reason: str
    tick: int = 0


@dataclass(frozen=True)
class StatusEvent:
    """A device status report: leads whose electrode is off, battery, ADC saturation."""

    lead_off: tuple[str, ...]
    t0: float
    battery_pct: int | None = None
    saturated: bool = False
    low_battery: bool = False
    charging: bool = False
    seq: int = 0


@dataclass(frozen=True)
class DeviceInfo:
    """What a device announces: its leads (canonical order), rate, gain (mV per LSB), sample format.

    ``device_id``/``firmware``/``model`` are ``None``/``""`` when the info was inferred from a samples
    frame before the device-info frame arrived (``inferred=True``), or declared by the user (ASCII).
    """

    leads: tuple[str, ...]
    fs: float
    mv_per_lsb: float
    sample_format: str
    samples_per_frame: int | None = None
    device_id: int | None = None
    firmware: str = ""
    model: str = ""
    protocol: str = "kmerl/1"
    inferred: bool = False


@dataclass(frozen=True)
class LinkEvent:
    """The transport connected to or lost the port (unplug, socket closed); ``detail`` says why."""

    connected: bool
    port: str
    detail: str = ""


Event = SampleBlock | GapEvent | StatusEvent | DeviceInfo | LinkEvent
