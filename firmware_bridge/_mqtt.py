"""Patches on MQTT: the device side of the fleet path (``kmerl-bridge simulate --mqtt URL --devices N``).

A patch (or the phone relaying its BLE) publishes the project's binary frames, unchanged
(``docs/protocol.md``), to ``kmerl/v1/<device_id>/frames``; the topic scheme, QoS and retained messages are
in ``docs/fleet.md``. :class:`MqttPatchFleet` runs N virtual patches, each its own MQTT client replaying a
real recording at its own offset, with fault injection: frames dropped or corrupted, and a device that
disconnects from the broker for a while (it keeps sampling: what it measured meanwhile is lost, and the
gateway reports it as a gap from the frame sequence numbers and timestamps).

paho-mqtt is the ``fleet`` extra, imported only when a client is created.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ._errors import BridgeConfigError
from ._protocol import DeviceConfig, FrameEncoder, quantise
from ._simulate import inject_fault, load_patch_signal

__all__ = [
    "TOPIC_ROOT", "QOS_FRAMES", "QOS_INFO", "parse_mqtt_url", "mqtt_client", "frames_topic", "info_topic",
    "link_topic", "MqttFleetConfig", "MqttPatchFleet",
]

#: every topic of the fleet path starts here; ``v1`` is the topic scheme's version, not the frame protocol's
TOPIC_ROOT = "kmerl/v1"
#: frames: at most once. Loss is detected by the frames' sequence numbers and reported as a gap; a frame
#: redelivered late would only arrive behind the session's clock and be dropped as late.
QOS_FRAMES = 0
#: device-info (retained) and link state (retained, also the last will): at least once
QOS_INFO = 1


def frames_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/frames"


def info_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/info"


def link_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/link"


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` → (host, port); port 1883 when not given."""
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise BridgeConfigError(f"an MQTT broker is given as mqtt://HOST[:PORT], got {url!r}")
    try:
        port = u.port or 1883
    except ValueError:
        raise BridgeConfigError(f"bad port in {url!r}") from None
    return u.hostname, port


def mqtt_client(client_id: str) -> Any:
    """A paho-mqtt 2.x client (MQTT 3.1.1, clean session), or an error naming the ``fleet`` extra."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:  # pragma: no cover - depends on the install
        raise BridgeConfigError("MQTT needs paho-mqtt: pip install 'kmerl-edge[fleet]'") from None
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                    clean_session=True)
    c.reconnect_delay_set(min_delay=0.2, max_delay=2)  # type: ignore[arg-type]
    c.max_queued_messages_set(1000)
    return c


def valid_device_id(device_id: str) -> bool:
    """One topic level: no ``/``, ``+``, ``#``, not empty, at most 64 characters."""
    return 0 < len(device_id) <= 64 and not any(ch in device_id for ch in "/+#\0") and device_id.isprintable()


@dataclass(frozen=True)
class MqttFleetConfig:
    """N virtual patches replaying ``record`` (each from its own offset) at ``speed`` × real time."""

    url: str
    record: str
    leads: tuple[str, ...]
    fs: float
    devices: int = 1
    prefix: str = "patch"
    speed: float = 1.0
    seconds: float | None = None  #: device seconds to stream (default: the recording, looped if ``loop``)
    loop: bool = False
    frame_samples: int = 50
    lsb_pv: int = 1_000_000
    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    disconnect_after_s: float | None = None  #: device seconds of streaming before a device leaves the broker
    disconnect_for_s: float = 2.0  #: device seconds it stays away (it keeps sampling)
    disconnect_devices: int = 1  #: how many devices (the first ones) disconnect
    info_every_s: float = 10.0
    lead_s: float = 0.5  #: wall seconds between announcing (retained device-info) and the first frame
    burst_s: float = 0.0  #: device seconds sent at once at the start (benchmarks: fill the first window)
    stagger_s: float = 0.0  #: devices start at random wall offsets in [0, stagger_s) (real fleets are not in step)
    seed: int = 0

    def __post_init__(self) -> None:
        parse_mqtt_url(self.url)
        if self.devices < 1:
            raise BridgeConfigError(f"--devices must be >= 1, got {self.devices}")
        if not self.speed > 0:
            raise BridgeConfigError(f"--speed must be positive, got {self.speed}")
        for name in ("drop_rate", "corrupt_rate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise BridgeConfigError(f"--{name.replace('_', '-')} must be a probability in [0, 1], got {p}")
        if not valid_device_id(f"{self.prefix}-{self.devices - 1}"):
            raise BridgeConfigError(f"--prefix {self.prefix!r} does not make valid device ids (no / + #)")


class MqttPatchFleet:
    """Virtual patches publishing frames over MQTT. ``start()`` runs them in one thread; ``publish_times``
    maps (device_id, end tick of a frame) → wall time it was published (for latency measurements)."""

    def __init__(self, config: MqttFleetConfig) -> None:
        self.config = config
        sig, leads = load_patch_signal(config.record, config.leads, config.fs)
        if config.seconds is not None:
            n = int(round(config.seconds * config.fs))
            if n > sig.shape[1] and config.loop:
                sig = np.tile(sig, (1, -(-n // sig.shape[1])))
            sig = sig[:, :n]
        self.raw = quantise(sig, config.lsb_pv)
        self.leads = leads
        self.device_ids = [f"{config.prefix}-{i}" for i in range(config.devices)]
        self._rng = np.random.default_rng(config.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._encoders: dict[str, FrameEncoder] = {}
        self._offsets: dict[str, int] = {}
        self._connected: dict[str, threading.Event] = {}
        self._retry: dict[str, float] = {}
        self._away: set[str] = set()  #: devices disconnected on purpose (fault injection)
        self.publish_times: dict[str, dict[int, float]] = {d: {} for d in self.device_ids}
        self.stats: dict[str, int] = {"frames": 0, "published": 0, "dropped": 0, "corrupted": 0,
                                      "while_disconnected": 0, "disconnects": 0, "not_sent": 0}

    def _device(self, i: int) -> DeviceConfig:
        c = self.config
        return DeviceConfig(self.leads, c.fs, c.lsb_pv, "int16", min(c.frame_samples, 255), i & 0xFFFFFFFF,
                            (0, 1, 0), "mqtt-sim")

    def _connect(self, device_id: str, dev: DeviceConfig) -> Any:
        """A client driven by this fleet's one thread (no network thread per device: ``publish`` writes
        at once, :meth:`_service` reads acknowledgements, pings and reconnects)."""
        c = mqtt_client(f"kmerl-device-{device_id}")
        info = FrameEncoder(dev, first_seq=0).device_info(0)
        ready = self._connected.setdefault(device_id, threading.Event())
        c.will_set(link_topic(device_id), b"offline", qos=QOS_INFO, retain=True)

        def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if not rc.is_failure:
                # announced on every (re)connect: a broker restarted without persistence forgets retained ones
                client.publish(info_topic(device_id), info, qos=QOS_INFO, retain=True)
                client.publish(link_topic(device_id), b"online", qos=QOS_INFO, retain=True)
                ready.set()

        def on_disconnect(_c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
            ready.clear()

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        self._retry[device_id] = 0.0
        self._try_connect(device_id, c, first=True)
        return c

    def _try_connect(self, device_id: str, c: Any, first: bool = False) -> None:
        now = time.monotonic()
        if now < self._retry.get(device_id, 0.0):
            return
        self._retry[device_id] = now + 0.2
        host, port = parse_mqtt_url(self.config.url)
        try:
            if first:
                c.connect(host, port, keepalive=10)
            else:
                c.reconnect()
        except OSError:
            pass

    def _service(self, timeout: float = 0.0) -> None:
        """Network work of every connected device; reconnect the ones the broker lost. Reads and writes
        each non-blocking socket directly (paho's ``loop()`` uses ``select``, which fails past 1,024 open
        descriptors, i.e. a few hundred devices)."""
        for d, c in self._clients.items():
            if d in self._away:
                continue
            rc = c.loop_read(max_packets=10)
            if rc in (0, -1):  # MQTT_ERR_SUCCESS, MQTT_ERR_AGAIN (nothing to read)
                rc = c.loop_write()
            if rc in (0, -1):
                rc = c.loop_misc()
            if rc not in (0, -1) and not self._connected[d].is_set():
                self._try_connect(d, c)
        if timeout > 0:
            time.sleep(timeout)

    def start(self, timeout: float = 10.0) -> MqttPatchFleet:
        """Connect every device (waits until all are connected) and stream from a background thread."""
        for i, d in enumerate(self.device_ids):
            dev = self._device(i)
            self._encoders[d] = FrameEncoder(dev, first_seq=1)
            self._offsets[d] = int(self._rng.integers(self.raw.shape[1])) if self.config.loop else 0
            self._clients[d] = self._connect(d, dev)
        deadline = time.monotonic() + timeout
        while not all(e.is_set() for e in self._connected.values()):
            if time.monotonic() > deadline:
                missing = [d for d, e in self._connected.items() if not e.is_set()]
                self.close()
                raise BridgeConfigError(f"device {missing[0]} could not connect to {self.config.url}")
            self._service(0.01)
        self._thread = threading.Thread(target=self.run, name="kmerl-mqtt-patches", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the recording has been played (True) or ``timeout`` passed (False)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self) -> dict[str, int]:
        """Stream every device until the recording is played (or forever with ``loop`` and no
        ``seconds``) or ``stop()``. Device ``i`` runs on its own schedule, ``stagger_s`` apart at most."""
        cfg = self.config
        fs = cfg.fs
        n_total = self.raw.shape[1]
        step = min(cfg.frame_samples, 255)
        forever = cfg.loop and cfg.seconds is None
        lead_end = time.monotonic() + cfg.lead_s
        while time.monotonic() < lead_end:
            if self._stop.wait(0.02):
                return self.stats
            self._service()
        phase = {d: float(self._rng.uniform(0.0, cfg.stagger_s)) if cfg.stagger_s > 0 else 0.0
                 for d in self.device_ids}
        ticks = dict.fromkeys(self.device_ids, 0)
        active = list(self.device_ids)
        t_start = time.monotonic()
        while not self._stop.is_set() and active:
            now = time.monotonic()
            next_due = math.inf
            for d in list(active):
                while True:
                    tick = ticks[d]
                    if not forever and tick >= n_total:
                        active.remove(d)
                        break
                    n = step if forever else min(step, n_total - tick)
                    due = t_start + phase[d] + max(0.0, (tick + n) / fs - cfg.burst_s) / cfg.speed
                    if due > now:
                        next_due = min(next_due, due)
                        break
                    self._send(d, tick, n)
                    ticks[d] = tick + n
            self._service()
            wait = next_due - time.monotonic()
            if wait > 0 and self._stop.wait(min(wait, 0.05)):
                break
        return self.stats

    def _send(self, d: str, tick: int, n: int) -> None:
        """Device ``d``'s frame of samples ``tick .. tick + n`` (and device-info every ``info_every_s``)."""
        cfg = self.config
        fs = cfg.fs
        n_total = self.raw.shape[1]
        if cfg.disconnect_after_s is not None and d in self.device_ids[: cfg.disconnect_devices]:
            off_from = int(round(cfg.disconnect_after_s * fs))
            off_to = off_from + int(round(cfg.disconnect_for_s * fs))
            if off_from <= tick < off_to:
                if d not in self._away:  # the device leaves the broker; it keeps sampling
                    self.stats["disconnects"] += 1
                    self._away.add(d)
                    self._clients[d].disconnect()
                self.stats["frames"] += 1
                self.stats["while_disconnected"] += 1
                self._encoders[d].seq = (self._encoders[d].seq + 1) & 0xFFFF  # the frame it measured, lost
                return
            if d in self._away:
                self._away.discard(d)
                self._retry[d] = 0.0
                self._try_connect(d, self._clients[d])
        enc = self._encoders[d]
        start = (self._offsets[d] + tick) % n_total
        idx = (start + np.arange(n)) % n_total
        out = bytearray()
        if tick % max(1, int(round(cfg.info_every_s * fs))) < n:
            out += enc.device_info(tick)
        out += enc.samples(tick, self.raw[:, idx].T)
        self.stats["frames"] += 1
        sent = self._fault(bytes(out))
        if sent is None:
            return
        info = self._clients[d].publish(frames_topic(d), sent, qos=QOS_FRAMES)
        if info.rc == 0:
            self.stats["published"] += 1
            self.publish_times[d][tick + n] = time.time()
        else:  # not connected (the broker is away): lost, as a radio link loses it
            self.stats["not_sent"] += 1

    def _fault(self, data: bytes) -> bytes | None:
        return inject_fault(data, self.config.drop_rate, self.config.corrupt_rate, self._rng, self.stats)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop streaming and disconnect every device (a clean disconnect: no last will)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for c in self._clients.values():
            try:
                c.disconnect()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
        self._clients.clear()

    def __enter__(self) -> MqttPatchFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

