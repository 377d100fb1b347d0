"""Registers the bridge's sources with the runtime (entry point ``kmerl_edge.sources: serial``).

- ``serial``: a port, a pty, ``loop://``, ``socket://``, ``rfc2217://`` ... (``kmerl-edge stream --source
  /dev/ttyACM0``);
- ``virtual-patch``: ``virtual-patch://RECORD?fs=200&leads=I,II&speed=3&protocol=kmerl``, a virtual patch on
  a pty replaying a recording, read through the real serial reader (``kmerl-edge demo``); the source ends
  when the patch has played the recording and hung up.

The runtime finds them through the entry point; it never imports the bridge by name.
"""

from __future__ import annotations

import os
import stat
from typing import Any

__all__ = ["register", "is_serial", "open_serial", "is_virtual_patch", "open_virtual_patch"]

_VP = "virtual-patch://"


def is_serial(spec: str) -> bool:
    """A pyserial URL, a character device, or a name that looks like a serial port."""
    if "://" in spec:
        return not spec.startswith(("synthetic:", _VP, "mqtt://", "mqtts://"))  # mqtt: the fleet package's source
    try:
        st = os.stat(spec)
    except OSError:
        return spec.startswith("/dev/") or spec.upper().startswith("COM")
    return stat.S_ISCHR(st.st_mode)


def open_serial(spec: str, **options: Any) -> Any:
    """A started :class:`~firmware_bridge.BridgeSource` on ``spec`` (options: :class:`SourceConfig` fields)."""
    from ._transport import open_source

    return open_source(spec, **options)


def is_virtual_patch(spec: str) -> bool:
    return spec.startswith(_VP)


def open_virtual_patch(spec: str, **options: Any) -> Any:
    """A virtual patch replaying a recording on a pty, and the serial reader on it, as one source."""
    from urllib.parse import parse_qs, unquote

    from ._errors import BridgeConfigError
    from ._simulate import SimulateConfig, VirtualPatch
    from ._transport import BridgeSource, SourceConfig

    path, _, query = spec[len(_VP):].partition("?")
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    q.update({k: ",".join(v) if isinstance(v, (tuple, list)) else str(v) for k, v in options.items() if v is not None})
    unknown = set(q) - {"fs", "leads", "speed", "protocol", "seconds"}
    if unknown:
        raise BridgeConfigError(f"virtual-patch source: unknown parameter(s) {', '.join(sorted(unknown))}")
    if "fs" not in q or "leads" not in q:
        raise BridgeConfigError("virtual-patch source needs fs and leads: virtual-patch://RECORD?fs=200&leads=I")
    try:
        fs = float(q["fs"])
        speed = float(q.get("speed", "1"))
        seconds = float(q["seconds"]) if "seconds" in q else None
    except ValueError as exc:
        raise BridgeConfigError(f"virtual-patch source: {exc}") from None
    leads = tuple(x.strip() for x in q["leads"].split(",") if x.strip())
    protocol = q.get("protocol", "kmerl")
    patch = VirtualPatch(SimulateConfig(record=unquote(path), leads=leads, fs=fs, protocol=protocol,
                                        speed=speed, seconds=seconds))

    class _PatchSource(BridgeSource):
        def close(self, timeout: float = 2.0) -> None:
            super().close(timeout)
            patch.close()

    port = patch.start()
    src = _PatchSource(SourceConfig(port=port, protocol=protocol, reconnect=False,
                                    fs=fs if protocol == "ascii" else None,
                                    leads=patch.device.leads if protocol == "ascii" else None))
    src.name = f"virtual-patch {unquote(path)}"
    src.patch = patch  # type: ignore[attr-defined]
    try:
        return src.start()
    except Exception:
        patch.close()
        raise


def register() -> None:
    from kmerl_edge._source import register_source

    register_source("serial", is_serial, open_serial)
    register_source("virtual-patch", is_virtual_patch, open_virtual_patch)
