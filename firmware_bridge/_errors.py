"""Named errors of the firmware bridge (all :class:`kmerl_edge.KmerlError` subclasses)."""

from __future__ import annotations

from kmerl_edge._errors import KmerlError, SamplingRateError

__all__ = [
    "BridgeError",
    "BridgeConfigError",
    "PortError",
    "DeviceMismatchError",
    "SamplingRateError",
]


class BridgeError(KmerlError):
    """Base class of the firmware bridge's errors."""


class BridgeConfigError(BridgeError, ValueError):
    """A bridge, encoder or simulator configuration is not acceptable (a user mistake)."""


class PortError(BridgeError, OSError):
    """A serial port or pyserial URL cannot be opened."""


class DeviceMismatchError(BridgeError):
    """The device streams a different sampling rate or lead set than the one the caller declared."""
