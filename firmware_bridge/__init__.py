"""K-MERL Edge firmware bridge: how samples get from a patch's firmware into the runtime.

- the K-MERL frame protocol v1 (``docs/protocol.md``), its C99 reference encoder (``firmware_bridge/c``) and
  a byte-identical Python :class:`FrameEncoder`;
- an incremental, never-raising :class:`FrameDecoder` with fault counters, and an :class:`AsciiDecoder` for
  the comma-separated lines hobby boards print;
- :func:`open_source`: a pyserial reader thread yielding :class:`SampleBlock` (mV, device timestamps),
  :class:`GapEvent`, :class:`StatusEvent`, :class:`DeviceInfo` and :class:`LinkEvent`;
- :class:`VirtualPatch`: a real recording streamed through a pty (``kmerl-bridge simulate``).

pyserial is the ``serial`` extra (``pip install 'kmerl-edge[serial]'``), imported only when a port opens.
"""

from ._ascii import AsciiDecoder, AsciiStats, format_ascii_lines
from ._decoder import DecoderStats, FrameDecoder
from ._errors import BridgeConfigError, BridgeError, DeviceMismatchError, PortError
from ._events import DeviceInfo, Event, GapEvent, LinkEvent, SampleBlock, StatusEvent
from ._protocol import VERSION, DeviceConfig, FrameEncoder, crc16, lead_mask, leads_from_mask, quantise
from ._simulate import SimulateConfig, VirtualPatch, load_patch_signal
from ._transport import PROTOCOLS, BridgeSource, SourceConfig, open_source

PROTOCOL_VERSION = VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "PROTOCOLS",
    # events
    "Event",
    "SampleBlock",
    "GapEvent",
    "StatusEvent",
    "DeviceInfo",
    "LinkEvent",
    # protocol
    "DeviceConfig",
    "FrameEncoder",
    "crc16",
    "lead_mask",
    "leads_from_mask",
    "quantise",
    # decoders
    "FrameDecoder",
    "DecoderStats",
    "AsciiDecoder",
    "AsciiStats",
    "format_ascii_lines",
    # transport
    "SourceConfig",
    "BridgeSource",
    "open_source",
    # virtual patch
    "SimulateConfig",
    "VirtualPatch",
    "load_patch_signal",
    # errors
    "BridgeError",
    "BridgeConfigError",
    "PortError",
    "DeviceMismatchError",
]
