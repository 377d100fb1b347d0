"""The messages a decoder (and :func:`firmware_bridge.open_source`) hands to the streaming session.

They are the runtime's own stream message types (:mod:`kmerl_edge.stream`): :class:`SampleBlock`,
:class:`Gap`, :class:`LeadStatus`, :class:`DeviceInfo` and :class:`LinkStatus`. Times are the *device's*
clock in seconds (``tick / fs``, where ``tick`` is the device's sample counter, unwrapped to 64 bits); for
the ASCII protocol, which carries no timestamps, ticks are counted by the host, one per line.

``GapEvent``, ``StatusEvent``, ``LinkEvent`` and ``Event`` are the earlier names of the same classes,
kept so existing code runs; "event" in the runtime means a rhythm event.
"""

from __future__ import annotations

from kmerl_edge._source import DeviceInfo, Gap, LeadStatus, LinkStatus, Message, SampleBlock

__all__ = [
    "SampleBlock",
    "Gap",
    "LeadStatus",
    "DeviceInfo",
    "LinkStatus",
    "Message",
    "GapEvent",
    "StatusEvent",
    "LinkEvent",
    "Event",
]

GapEvent = Gap
StatusEvent = LeadStatus
LinkEvent = LinkStatus
Event = Message
