"""Named errors of the streaming runtime (all :class:`kmerl_edge.KmerlError` subclasses)."""

from __future__ import annotations

from ._errors import KmerlError

__all__ = [
    "StreamError",
    "StreamConfigError",
    "StreamClosedError",
    "StreamInputError",
    "DeviceChangedError",
    "UnknownDeviceError",
    "SourceError",
    "UnknownSourceError",
]


class StreamError(KmerlError):
    """Base class of the streaming runtime's errors."""


class StreamConfigError(StreamError, ValueError):
    """A stream option (``StreamConfig``, an event rule, a session argument) is not acceptable."""


class StreamClosedError(StreamError):
    """Samples were pushed into a session that is closed."""


class StreamInputError(StreamError, ValueError):
    """An argument of ``push``/``push_gap``/``set_lead_off``/``feed`` is not acceptable."""


class DeviceChangedError(StreamError):
    """The device's rate or leads changed mid-session: end this session and open a new one."""


class UnknownDeviceError(StreamError, KeyError):
    """A gateway has no open session for that device id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class SourceError(StreamError):
    """A stream source cannot be opened or read."""


class UnknownSourceError(SourceError):
    """No kind of source (built in, registered or installed as a plugin) accepts the name given."""
