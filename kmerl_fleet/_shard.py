"""One shard of the fleet gateway: MQTT in, :class:`kmerl_edge.stream.Gateway` sessions, MQTT out.

A shard owns the devices whose id hashes to it (:func:`shard_of`). It subscribes to every device's small
retained ``info`` document (the binary device-info frame) and, for its own devices only, to their
``frames``, ``link`` and (once, to resume) retained ``results`` topics: no shard reads the frames of a
device it does not own. Frames are decoded with the firmware bridge's :class:`FrameDecoder` (one per
device, so sequence numbers and timestamps find what was lost), fed to one :class:`StreamSession` per
device on a shared :class:`Gateway` whose worker batches windows across the shard's devices, and the
window results and events are published as versioned JSON (``docs/fleet.md``).

Threads: paho's network thread only puts (topic, payload) on a bounded queue (full: the oldest item is
dropped and counted, and the decoder reports the frames it held as lost); one processing thread decodes,
feeds sessions, and publishes what the inference worker has finished.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge._decoder import FrameDecoder
from firmware_bridge._mqtt import (
    TOPIC_ROOT,
    BrokerConfig,
    broker_config,
    connect_client,
    mqtt_client,
    valid_device_id,
)
from kmerl_edge._jsonout import dumps
from kmerl_edge._source import DeviceInfo, Gap, LeadStatus, LinkStatus, SampleBlock
from kmerl_edge._stream_errors import DeviceChangedError
from kmerl_edge._stream_session import StreamSession
from kmerl_edge._stream_types import StreamConfig

from ._errors import FleetConfigError

__all__ = ["SCHEMA_RESULT", "SCHEMA_EVENT", "QOS_RESULTS", "shard_of", "ShardConfig", "FleetShard"]

SCHEMA_RESULT = "kmerl.fleet.result/1"
SCHEMA_EVENT = "kmerl.fleet.event/1"
#: results and events: at least once (a consumer de-duplicates by device_id + index / + t and type)
QOS_RESULTS = 1


def shard_of(device_id: str, n_shards: int) -> int:
    """The shard that owns ``device_id``: CRC-32 (IEEE, as zlib and most firmware SDKs compute it) of the
    id's UTF-8 bytes, modulo the number of shards."""
    return zlib.crc32(device_id.encode("utf-8")) % n_shards


@dataclass(frozen=True)
class ShardConfig:
    """``url``: the broker, ``mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][?ca=&cert=&key=]`` or a
    :class:`BrokerConfig` (TLS and credentials, ``docs/fleet.md``)."""

    url: str | BrokerConfig
    shard: int = 0
    n_shards: int = 1
    stream: StreamConfig = field(default_factory=StreamConfig)
    ingest_queue: int = 100_000  #: frames waiting for the processing thread; full: drop the oldest
    poll_s: float = 0.01  #: how often finished results are collected when no frame arrives
    resume_wait_s: float = 0.5  #: how long a new session waits for the device's retained last result

    def __post_init__(self) -> None:
        broker_config(self.url)
        if not 0 <= self.shard < self.n_shards:
            raise FleetConfigError(f"shard {self.shard} is not in 0..{self.n_shards - 1}")

    @property
    def broker(self) -> BrokerConfig:
        return broker_config(self.url)


@dataclass
class _Device:
    device_id: str
    decoder: FrameDecoder
    info: DeviceInfo | None = None
    session: StreamSession | None = None
    resume_t: float | None = None  #: t_end of the last result published before this shard took over
    resume_known: bool = False
    since: float = field(default_factory=time.monotonic)
    backlog: list[Any] = field(default_factory=list)


class FleetShard:
    """See the module docstring. ``start()`` connects and subscribes; ``close()`` flushes and disconnects;
    ``kill()`` stops at once (as a node that dies: nothing flushed)."""

    def __init__(self, classifier: Any, config: ShardConfig) -> None:
        from kmerl_edge._gateway import Gateway

        self.classifier = classifier
        self.config = config
        self.gateway = Gateway(classifier, config=config.stream, queue_size=config.stream.queue_size,
                               max_batch=config.stream.max_batch)
        self._q: deque[tuple[str, bytes]] = deque()
        self._q_event = threading.Event()
        self._devices: dict[str, _Device] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {"frames": 0, "ingest_dropped": 0, "results": 0, "events": 0, "gaps": 0,
                                      "devices": 0, "foreign_devices": 0, "bad_device_ids": 0, "reconnects": 0,
                                      "device_changed": 0}
        self.published: queue.SimpleQueue[tuple[str, dict[str, Any]]] | None = None  #: tests: a copy of output

    # ------------------------------------------------------------------ MQTT
    def start(self, timeout: float = 10.0) -> FleetShard:
        broker = self.config.broker
        c = mqtt_client(f"kmerl-fleet-shard-{self.config.shard}-of-{self.config.n_shards}-{id(self):x}", broker)
        c.max_queued_messages_set(0)  # results queue while the broker is away (QoS 1), bounded by memory
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        try:  # TLS failure, refused credentials, no broker: a named error (BrokerConnectionError / AuthError)
            connect_client(c, broker, timeout=timeout, what=f"fleet shard {self.config.shard}")
        except Exception:
            self._client = None
            self.gateway.close(1.0)
            raise
        self._thread = threading.Thread(target=self._run, name=f"kmerl-fleet-shard-{self.config.shard}",
                                        daemon=True)
        self._thread.start()
        return self

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(f"{TOPIC_ROOT}/+/info", qos=1)
        with self._lock:
            mine = list(self._devices)
        for d in mine:  # a clean session forgets subscriptions: renew them
            client.subscribe([(f"{TOPIC_ROOT}/{d}/frames", 0), (f"{TOPIC_ROOT}/{d}/link", 1)])
        if self._connected.is_set():
            self.stats["reconnects"] += 1
        self._connected.set()

    def _on_disconnect(self, *_a: Any) -> None:
        pass

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        q = self._q
        if len(q) >= self.config.ingest_queue:
            q.popleft()
            self.stats["ingest_dropped"] += 1
        q.append((msg.topic, bytes(msg.payload)))
        self._q_event.set()

    # ------------------------------------------------------------ processing
    def _run(self) -> None:
        poll = self.config.poll_s
        last_poll = 0.0
        while not self._stop.is_set():
            self._q_event.wait(poll)
            self._q_event.clear()
            while self._q and not self._stop.is_set():
                topic, payload = self._q.popleft()
                try:
                    self._handle(topic, payload)
                except Exception as exc:  # noqa: BLE001 - one device's bad data must not stop the shard
                    self._event_for(topic.split("/")[2], {"type": "error", "detail": f"{type(exc).__name__}: {exc}"})
                if time.monotonic() - last_poll >= poll:
                    self._publish_ready()
                    last_poll = time.monotonic()
            self._publish_ready()
            last_poll = time.monotonic()

    def _handle(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
            return
        device_id, kind = parts[2], parts[3]
        if kind == "info":
            self._on_info(device_id, payload)
            return
        dev = self._devices.get(device_id)
        if dev is None:
            return
        if kind == "frames":
            self.stats["frames"] += 1
            for m in dev.decoder.feed(payload):
                self._feed(dev, m)
        elif kind == "link":
            state = payload.decode("ascii", "replace")
            self._event(dev, {"type": "link", "connected": state == "online", "detail": state})
        elif kind == "results" and not dev.resume_known:
            try:
                doc = json.loads(payload)
                dev.resume_t = float(doc["t_end"])
            except (ValueError, KeyError, TypeError):
                dev.resume_t = None
            dev.resume_known = True
            self._client.unsubscribe(f"{TOPIC_ROOT}/{device_id}/results")
            backlog, dev.backlog = dev.backlog, []
            for m in backlog:
                self._feed(dev, m)

    def _on_info(self, device_id: str, payload: bytes) -> None:
        if not valid_device_id(device_id):
            self.stats["bad_device_ids"] += 1
            return
        if shard_of(device_id, self.config.n_shards) != self.config.shard:
            self.stats["foreign_devices"] += 1
            return
        infos = [m for m in FrameDecoder().feed(payload) if isinstance(m, DeviceInfo)]
        if not infos:
            return
        dev = self._devices.get(device_id)
        if dev is None:
            dev = _Device(device_id, FrameDecoder())
            with self._lock:
                self._devices[device_id] = dev
            self.stats["devices"] += 1
            # the device's last retained result says where scoring stopped if another shard served it
            self._client.subscribe([(f"{TOPIC_ROOT}/{device_id}/results", 1),
                                    (f"{TOPIC_ROOT}/{device_id}/frames", 0),
                                    (f"{TOPIC_ROOT}/{device_id}/link", 1)])
        dev.info = infos[-1]

    def _open(self, dev: _Device, block: SampleBlock) -> StreamSession:
        s = self.gateway.open(dev.device_id, fs=block.fs, leads=block.leads)
        dev.session = s
        if dev.resume_t is not None and block.t0 > dev.resume_t:
            lost = int(round((block.t0 - dev.resume_t) * block.fs))
            if lost > 0:
                self._gap(dev, lost, dev.resume_t, "gateway restarted")
        return s

    def _feed(self, dev: _Device, m: Any) -> None:
        if not dev.resume_known:
            if time.monotonic() - dev.since < self.config.resume_wait_s:
                dev.backlog.append(m)
                return
            dev.resume_known = True  # no retained result: the device is new to the fleet
            self._client.unsubscribe(f"{TOPIC_ROOT}/{dev.device_id}/results")
            backlog, dev.backlog = dev.backlog, []
            for b in backlog:
                self._feed(dev, b)
        if isinstance(m, SampleBlock):
            s = dev.session or self._open(dev, m)
            try:
                self._results(dev.device_id, s.feed(m))
            except DeviceChangedError as exc:
                self.stats["device_changed"] += 1
                self._event(dev, {"type": "device_changed", "detail": str(exc)})
                self._retire(dev)
                s = self._open(dev, m)
                self._results(dev.device_id, s.feed(m))
        elif isinstance(m, Gap):
            self._gap(dev, m.n_samples, m.t0, m.reason, reset=m.reset)
            if dev.session is not None:
                self._results(dev.device_id, dev.session.feed(m))
        elif isinstance(m, LeadStatus):
            if dev.session is not None:
                self._results(dev.device_id, dev.session.feed(m))
        elif isinstance(m, (DeviceInfo, LinkStatus)):
            dev.info = m if isinstance(m, DeviceInfo) else dev.info

    def _gap(self, dev: _Device, n: int, t0: float, reason: str, reset: bool = False) -> None:
        self.stats["gaps"] += 1
        fs = dev.session.fs if dev.session is not None else (dev.info.fs if dev.info else None)
        self._event(dev, {"type": "gap", "t0": round(t0, 4), "n_samples": int(n),
                          "seconds": round(n / fs, 4) if fs else None, "reason": reason, "reset": reset})

    def _retire(self, dev: _Device) -> None:
        if dev.session is None:
            return
        self._results(dev.device_id, self.gateway.close_session(dev.device_id))
        self._publish_session(dev.device_id, dev.session)
        dev.session = None

    # ------------------------------------------------------------ publishing
    def _publish(self, topic: str, doc: dict[str, Any], retain: bool = False) -> None:
        doc["t_published"] = round(time.time(), 4)
        if self.published is not None:
            self.published.put((topic, doc))
        self._client.publish(topic, dumps(doc, separators=(",", ":")), qos=QOS_RESULTS, retain=retain)

    def _event(self, dev: _Device, doc: dict[str, Any]) -> None:
        self._event_for(dev.device_id, doc)

    def _event_for(self, device_id: str, doc: dict[str, Any]) -> None:
        self.stats["events"] += 1
        self._publish(f"{TOPIC_ROOT}/{device_id}/events",
                      {"schema": SCHEMA_EVENT, "device_id": device_id, **doc})

    def _results(self, device_id: str, results: list[Any]) -> None:
        for r in results:
            self.stats["results"] += 1
            # retained: a late subscriber sees the device's latest result, and a shard that takes the
            # device over learns where scoring stopped (the gap it reports starts there)
            self._publish(f"{TOPIC_ROOT}/{device_id}/results",
                          {"schema": SCHEMA_RESULT, **r.to_dict(), "device_id": device_id}, retain=True)

    def _publish_session(self, device_id: str, s: StreamSession) -> None:
        self._results(device_id, s.poll())
        for e in s.events():
            self._event_for(device_id, {**e.to_dict(), "type": "rhythm", "device_id": device_id})

    def _publish_ready(self) -> None:
        for dev in list(self._devices.values()):
            if dev.session is not None:
                self._publish_session(dev.device_id, dev.session)

    # ------------------------------------------------------------- lifecycle
    @property
    def devices(self) -> list[str]:
        return sorted(self._devices)

    def close(self, timeout: float = 30.0) -> None:
        """Score what is pending, publish it, and disconnect."""
        deadline = time.monotonic() + timeout
        while self._q and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for dev in list(self._devices.values()):
            if dev.session is not None:
                self._results(dev.device_id, dev.session.flush(max(0.1, deadline - time.monotonic())))
                self._publish_session(dev.device_id, dev.session)
        self.gateway.close(max(0.1, deadline - time.monotonic()))
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def kill(self) -> None:
        """Stop at once without flushing or publishing (a node that dies)."""
        self._stop.set()
        if self._client is not None:
            self._client.loop_stop()
            try:
                self._client.socket().close() if self._client.socket() is not None else None
            except OSError:
                pass
        self.gateway.close(1.0)

    def gateway_stats(self) -> dict[str, Any]:
        return {**self.gateway.stats().to_dict(), **self.stats}
