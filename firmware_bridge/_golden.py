"""Frame scripts: the text format the C test driver (``c/kmerl_golden.c``) reads, run by the Python encoder.

Both sides encode the same script, so the tests can require byte-identical output. Lines::

    D lead_mask format samples_per_frame fs_mhz lsb_pv device_id fw_major fw_minor fw_patch model first_seq
    I timestamp
    S timestamp n v0 v1 ... (n * n_leads values, sample-major)
    T timestamp lead_off_mask battery_pct flags
"""

from __future__ import annotations

import numpy as np

from ._errors import BridgeConfigError
from ._protocol import (
    FORMAT_NAMES,
    STATUS_CHARGING,
    STATUS_LOW_BATTERY,
    STATUS_SATURATED,
    DeviceConfig,
    FrameEncoder,
    leads_from_mask,
)

__all__ = ["encode_script"]


def encode_script(script: str) -> bytes:
    """Encode a frame script with :class:`FrameEncoder`; see the module docstring for the format."""
    tokens = script.split()
    out = bytearray()
    enc: FrameEncoder | None = None
    i = 0

    def take(k: int) -> list[int]:
        nonlocal i
        vals = [int(t) for t in tokens[i:i + k]]
        if len(vals) != k:
            raise BridgeConfigError("frame script ends in the middle of a command")
        i += k
        return vals

    while i < len(tokens):
        cmd = tokens[i]
        i += 1
        if cmd == "D":
            mask, fmt, spf, fs_mhz, lsb_pv, dev_id, fa, fb, fc = take(9)
            model = tokens[i]
            i += 1
            (first_seq,) = take(1)
            dev = DeviceConfig(leads_from_mask(mask), fs_mhz / 1000.0, lsb_pv, FORMAT_NAMES[fmt], spf, dev_id,
                               (fa, fb, fc), "" if model == "-" else model[:16])
            enc = FrameEncoder(dev, first_seq=first_seq)
            continue
        if enc is None:
            raise BridgeConfigError("frame script must start with a D (device) line")
        if cmd == "I":
            (ts,) = take(1)
            out += enc.device_info(ts)
        elif cmd == "S":
            ts, n = take(2)
            nl = len(enc.device.leads)
            out += enc.samples(ts, np.asarray(take(n * nl), dtype=np.int64).reshape(n, nl))
        elif cmd == "T":
            ts, off, batt, flags = take(4)
            out += enc.status(ts, leads_from_mask(off), battery_pct=None if batt == 255 else batt,
                              saturated=bool(flags & STATUS_SATURATED), low_battery=bool(flags & STATUS_LOW_BATTERY),
                              charging=bool(flags & STATUS_CHARGING))
        else:
            raise BridgeConfigError(f"unknown frame script command {cmd!r}")
    return bytes(out)
