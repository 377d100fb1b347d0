"""Named errors of the firmware bridge (all :class:`kmerl_edge.KmerlError` subclasses)."""

from __future__ import annotations

from kmerl_edge._errors import KmerlError, SamplingRateError

__all__ = [
    "BridgeError",
    "BridgeConfigError",
    "PortError",
    "DeviceMismatchError",
    "BrokerConnectionError",
    "BrokerAuthError",
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


class BrokerConnectionError(BridgeError, ConnectionError):
    """An MQTT broker cannot be reached or its TLS handshake failed (wrong CA, host name, certificate)."""


class BrokerAuthError(BrokerConnectionError):
    """The MQTT broker refused the connection: bad user name or password, or not authorised."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason
