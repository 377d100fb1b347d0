"""What a stream source hands to a :class:`~kmerl_edge.stream.StreamSession` (messages), the one lifecycle
every source follows (:class:`Source`), and the registry that finds the source for a name.

Words: a source produces **messages** (:class:`SampleBlock`, :class:`Gap`, :class:`LeadStatus`,
:class:`DeviceInfo`, :class:`LinkStatus`); a session turns samples into window results and rhythm
**events** ("atrial fibrillation started"). "Event" means only the latter.

Lifecycle (one for every source, as BrainFlow has one for every board)::

    src = open_source("recording.hea", speed=10)   # created and started: raises a named error if it cannot
    for msg in src:                                # or src.get(timeout=...) -> message | None
        session.feed(msg)
    src.ended                                      # True once nothing more will come (recording played,
                                                   # port lost with reconnect off, closed)
    src.close()                                    # idempotent; `with open_source(...) as src:` does it

Sources shipped in the runtime: recording playback (``"recording"``: any file :func:`kmerl_edge.read_record`
reads) and a synthetic patch (``"synthetic"``: ``synthetic://?fs=250&leads=I,II``). Other packages add
kinds with :func:`register_source`, or through the ``kmerl_edge.sources`` entry-point group (the firmware
bridge registers ``serial``: ports and pyserial URLs); the runtime imports none of them by name.

Time: every message carries the device's clock, ``t0`` seconds (and ``tick``, the same as a sample index
at ``fs``). The session's clock model is described in :mod:`kmerl_edge.stream`.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._stream_errors import SourceError, UnknownSourceError

__all__ = [
    "SampleBlock",
    "Gap",
    "LeadStatus",
    "DeviceInfo",
    "LinkStatus",
    "Message",
    "Source",
    "BaseSource",
    "register_source",
    "source_kind",
    "source_kinds",
    "open_source",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "kmerl_edge.sources"


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """Samples that arrived intact: ``data`` is (n_leads, n) float32 in mV, rows in ``leads`` order.

    ``t0`` is the device time of the first sample in seconds, ``tick`` the same as a sample index, ``seq``
    the frame sequence number it came in (0..65535, wraps; 0 where the source has none).
    """

    leads: tuple[str, ...]
    fs: float
    data: np.ndarray
    t0: float
    seq: int = 0
    tick: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True)
class Gap:
    """``n_samples`` samples per lead, starting at device time ``t0`` (sample ``tick``), that were lost.

    ``reason`` says why (``"lost frames"``, ``"device skipped samples"``, ``"bad timestamp"``,
    ``"malformed line"``, ``"queue overflow"``, ``"disconnected (estimated)"``, ``"missing samples"`` ...).
    ``reset``: the device's timeline breaks here (it restarted, or its clock jumped): nothing before may
    be joined to what follows, whatever the times say.
    """

    n_samples: int
    t0: float
    reason: str
    tick: int = 0
    reset: bool = False


@dataclass(frozen=True)
class LeadStatus:
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

    ``device_id``/``firmware``/``model`` are ``None``/``""`` when the info was inferred from samples
    before the device said it (``inferred=True``), or declared by the user (ASCII, recordings).
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
class LinkStatus:
    """The transport connected to or lost the device (unplug, socket closed); ``detail`` says why."""

    connected: bool
    port: str
    detail: str = ""


Message = SampleBlock | Gap | LeadStatus | DeviceInfo | LinkStatus


@runtime_checkable
class Source(Protocol):
    """The lifecycle every source follows: ``start()`` → ``get()`` / iterate → ``ended`` → ``close()``."""

    name: str

    def start(self) -> Source:
        """Open whatever the source reads and begin producing (raises a named error if it cannot)."""
        ...

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or ``None`` if none came within ``timeout`` seconds (or the source ended)."""
        ...

    @property
    def ended(self) -> bool:
        """Nothing more will come: played out, lost with no reconnection, or closed."""
        ...

    @property
    def stats(self) -> dict[str, int]:
        """Counters: samples delivered and every fault the source saw."""
        ...

    def close(self) -> None:
        """Stop and release everything (idempotent)."""
        ...

    def __iter__(self) -> Iterator[Message]: ...


class BaseSource(abc.ABC):
    """Iteration and ``with`` on top of ``start``/``get``/``ended``/``close`` (subclasses define those)."""

    name: str = "source"

    def start(self) -> BaseSource:
        return self

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting up to ``timeout`` s; ``None`` when there is none yet."""

    @property
    @abc.abstractmethod
    def ended(self) -> bool:
        """Whether the source will produce nothing more."""

    @property
    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        pass

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.get(timeout=0.1)
            if msg is not None:
                yield msg
            elif self.ended:
                return

    def __enter__(self) -> BaseSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Kind:
    name: str
    accepts: Callable[[str], bool]
    factory: Callable[..., Any]


_KINDS: dict[str, _Kind] = {}
_BUILTIN = ("synthetic", "recording")
_lock = threading.Lock()
_plugins_loaded = False
#: source plugins that are installed but failed to load: {entry point name: error}
PLUGIN_ERRORS: dict[str, str] = {}


def register_source(name: str, accepts: Callable[[str], bool], factory: Callable[..., Any]) -> None:
    """Add (or replace) a kind of source: ``accepts(spec)`` says whether a source name is of this kind,
    ``factory(spec, **options)`` returns a started :class:`Source`. Built-in kinds are asked first."""
    if not name or not callable(accepts) or not callable(factory):
        raise SourceError("register_source needs a name, an accepts(spec) predicate and a factory")
    with _lock:
        _KINDS[name] = _Kind(name, accepts, factory)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = ep.load()
            register()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the built-in sources
            PLUGIN_ERRORS[ep.name] = f"{type(exc).__name__}: {exc}"


def _builtin_kinds() -> None:
    if "recording" in _KINDS:
        return
    from . import _source_builtin as b

    register_source("synthetic", b.is_synthetic, b.open_synthetic)
    register_source("recording", b.is_recording, b.open_recording)


def source_kind(spec: str) -> str:
    """The kind of source ``spec`` names (``"recording"``, ``"synthetic"``, ``"serial"`` ...).

    Raises :class:`UnknownSourceError` when no registered kind (or installed plugin) accepts it."""
    spec = str(spec)
    if not spec.strip():
        raise UnknownSourceError("the source name is empty")
    _builtin_kinds()
    for attempt in range(2):
        kinds = [_KINDS[k] for k in _BUILTIN] + [k for n, k in _KINDS.items() if n not in _BUILTIN]
        for kind in kinds:
            if kind.accepts(spec):
                return kind.name
        if attempt == 0:
            _load_plugins()
    broken = "; ".join(f"plugin {k!r} failed to load: {v}" for k, v in PLUGIN_ERRORS.items())
    raise UnknownSourceError(
        f"no source for {spec!r}: not a recording this runtime reads, not synthetic://, and no installed "
        f"source plugin accepts it (serial ports and URLs need: pip install 'kmerl-edge[serial]')"
        + (f"; {broken}" if broken else "")
    )


def source_kinds() -> list[str]:
    """Names of the kinds of source available (built-in and registered plugins)."""
    _builtin_kinds()
    _load_plugins()
    return list(_KINDS)


def open_source(spec: str, **options: Any) -> Source:
    """Open and start the source ``spec`` names; ``options`` go to that kind's factory (``fs``,
    ``leads``, ``speed`` for recordings; ``protocol``, ``reconnect`` ... for serial ports)."""
    kind = source_kind(spec)
    src: Source = _KINDS[kind].factory(str(spec), **options)
    return src
