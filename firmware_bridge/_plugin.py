"""Registers the bridge's serial source with the runtime (entry point ``kmerl_edge.sources: serial``).

``kmerl-edge stream --source /dev/ttyACM0`` (a port, a pty, ``loop://``, ``socket://``, ``rfc2217://`` ...)
finds it through the entry point; the runtime never imports the bridge by name.
"""

from __future__ import annotations

import os
import stat
from typing import Any

__all__ = ["register", "is_serial", "open_serial"]


def is_serial(spec: str) -> bool:
    """A pyserial URL, a character device, or a name that looks like a serial port."""
    if "://" in spec:
        return not spec.startswith("synthetic:")
    try:
        st = os.stat(spec)
    except OSError:
        return spec.startswith("/dev/") or spec.upper().startswith("COM")
    return stat.S_ISCHR(st.st_mode)


def open_serial(spec: str, **options: Any) -> Any:
    """A started :class:`~firmware_bridge.BridgeSource` on ``spec`` (options: :class:`SourceConfig` fields)."""
    from ._transport import open_source

    return open_source(spec, **options)


def register() -> None:
    from kmerl_edge._source import register_source

    register_source("serial", is_serial, open_serial)
