"""K-MERL Edge firmware bridge: how samples get from a patch's firmware into the runtime.

- the K-MERL frame protocol v1 (``docs/protocol.md``), its C99 reference encoder (``firmware_bridge/c``) and
  a byte-identical Python :class:`FrameEncoder`;
- an incremental, never-raising :class:`FrameDecoder` with fault counters, and an :class:`AsciiDecoder` for
  the comma-separated lines hobby boards print;
- :func:`open_source`: a pyserial reader thread yielding the runtime's stream messages
  (:class:`SampleBlock` in mV with device timestamps, :class:`Gap`, :class:`LeadStatus`, :class:`DeviceInfo`,
  :class:`LinkStatus`), registered with ``kmerl_edge`` as the ``serial`` source kind;
- :class:`VirtualPatch`: a real recording streamed through a pty (``kmerl-bridge simulate``).

pyserial is the ``serial`` extra (``pip install 'kmerl-edge[serial]'``), imported only when a port opens.
"""

from ._ascii import AsciiDecoder, AsciiStats, format_ascii_lines
from ._decoder import DecoderStats, FrameDecoder
from ._errors import (
    BridgeConfigError,
    BridgeError,
    BrokerAuthError,
    BrokerConnectionError,
    DeviceMismatchError,
    PortError,
)
from ._events import (
    DeviceInfo,
    Event,
    Gap,
    GapEvent,
    LeadStatus,
    LinkEvent,
    LinkStatus,
    Message,
    SampleBlock,
    StatusEvent,
)
from ._plugin import register as _register
from ._protocol import VERSION, DeviceConfig, FrameEncoder, crc16, lead_mask, leads_from_mask, quantise
from ._simulate import SimulateConfig, VirtualPatch, load_patch_signal
from ._transport import PROTOCOLS, BridgeSource, SourceConfig, open_source

_register()  # the runtime's open_source() also finds the serial source through its entry point

PROTOCOL_VERSION = VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "PROTOCOLS",
    # messages (the runtime's types) and their earlier names
    "Message",
    "SampleBlock",
    "Gap",
    "LeadStatus",
    "DeviceInfo",
    "LinkStatus",
    "Event",
    "GapEvent",
    "StatusEvent",
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
    "BrokerConnectionError",
    "BrokerAuthError",
]
