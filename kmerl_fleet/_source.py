"""One device's frames from an MQTT broker as a runtime stream source (``mqtt`` kind):

    kmerl-edge stream --source mqtt://broker:1883/patch-17
    kmerl-edge stream --source 'mqtts://monitor@broker:8883/patch-17?ca=/etc/kmerl/ca.pem'   # TLS + login

subscribes to ``kmerl/v1/patch-17/frames`` (QoS 0) and decodes them with the firmware bridge's
:class:`FrameDecoder`: :class:`SampleBlock`, :class:`Gap` (what was lost, from sequence numbers and
timestamps), :class:`LeadStatus`, :class:`DeviceInfo`; :class:`LinkStatus` when the broker connection is lost
or back. The device's retained ``info`` is read first, so its rate and leads are known before samples come.
TLS and credentials go in the URL (``mqtts://``, ``USER[:PASSWORD]@``, ``?ca=FILE&cert=FILE&key=FILE``;
a user name without a password takes it from ``$KMERL_MQTT_PASSWORD``). Registered through the ``kmerl_edge.sources`` entry point (``kmerl_fleet._source:register``).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

from firmware_bridge._decoder import FrameDecoder
from firmware_bridge._mqtt import TOPIC_ROOT, broker_config, connect_client, mqtt_client, valid_device_id
from kmerl_edge._source import BaseSource, LinkStatus, Message

from ._errors import FleetConfigError

__all__ = ["MqttSource", "is_mqtt", "open_mqtt", "register"]


def is_mqtt(spec: str) -> bool:
    return spec.startswith(("mqtt://", "mqtts://"))


def _split(spec: str) -> tuple[str, str]:
    u = urlparse(spec)
    device = unquote(u.path.lstrip("/"))
    if not valid_device_id(device):
        shown = broker_config(spec).display if u.scheme in ("mqtt", "mqtts") and u.hostname else spec
        raise FleetConfigError(f"an MQTT source names one device: mqtt[s]://HOST[:PORT]/DEVICE_ID, "
                               f"got {shown}{u.path}")
    return urlunparse((u.scheme, u.netloc, "", "", u.query, "")), device


class MqttSource(BaseSource):
    """See the module docstring. ``queue_size``: messages waiting for ``get``; when full the oldest is
    dropped and counted (``stats["dropped_messages"]``)."""

    def __init__(self, spec: str, *, queue_size: int = 100_000, connect_timeout: float = 10.0) -> None:
        url, self.device_id = _split(spec)
        self.broker = broker_config(url)
        self.url = self.broker.display  # no password
        self.name = f"mqtt {self.device_id} at {self.url}"
        self.decoder = FrameDecoder()
        self._q: deque[Message] = deque()
        self._max = queue_size
        self._cond = threading.Condition()
        self._closed = False
        self._dropped = 0
        self._timeout = connect_timeout
        self._client: Any = None
        self._connected = threading.Event()

    def _put(self, msgs: list[Message]) -> None:
        with self._cond:
            for m in msgs:
                if len(self._q) >= self._max:
                    self._q.popleft()
                    self._dropped += 1
                self._q.append(m)
            self._cond.notify_all()

    def start(self) -> MqttSource:
        c = mqtt_client(f"kmerl-source-{self.device_id}-{id(self):x}", self.broker)
        topic = f"{TOPIC_ROOT}/{self.device_id}"

        def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if rc.is_failure:
                return
            client.subscribe([(f"{topic}/info", 1), (f"{topic}/frames", 0)])
            self._connected.set()
            self._put([LinkStatus(True, self.url, "broker connected")])

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if not self._closed:
                self.decoder.flush()
                self._put([LinkStatus(False, self.url, f"broker connection lost ({rc})")])

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if msg.topic.endswith("/info"):
                # the retained announcement, decoded on its own (its sequence number is not the stream's)
                self._put(FrameDecoder().feed(msg.payload))
            else:
                self._put(self.decoder.feed(msg.payload))

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        c.on_message = on_message
        self._client = c
        try:  # TLS failure, refused credentials, no broker: BrokerConnectionError / BrokerAuthError
            connect_client(c, self.broker, timeout=self._timeout, what=f"the broker of {self.device_id}")
        except Exception:
            self._client = None
            self.close()
            raise
        return self

    def get(self, timeout: float | None = None) -> Message | None:
        with self._cond:
            if not self._q and not self._closed:
                self._cond.wait(timeout)
            return self._q.popleft() if self._q else None

    @property
    def ended(self) -> bool:
        return self._closed and not self._q

    @property
    def stats(self) -> dict[str, int]:
        return {**self.decoder.stats.as_dict(), "dropped_messages": self._dropped}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        with self._cond:
            self._cond.notify_all()


def open_mqtt(spec: str, **options: Any) -> MqttSource:
    unknown = set(options) - {"queue_size", "connect_timeout"}
    unknown = {k for k in unknown if options[k] is not None}
    if unknown:
        raise FleetConfigError(f"the mqtt source takes no option(s) {', '.join(sorted(unknown))}")
    kw = {k: v for k, v in options.items() if v is not None and k in ("queue_size", "connect_timeout")}
    return MqttSource(spec, **kw).start()


def register() -> None:
    from kmerl_edge._source import register_source

    register_source("mqtt", is_mqtt, open_mqtt)
