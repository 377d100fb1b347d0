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
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from ._errors import BridgeConfigError, BrokerAuthError, BrokerConnectionError
from ._protocol import DeviceConfig, FrameEncoder, quantise
from ._simulate import check_replay_options, inject_fault, load_patch_signal

__all__ = [
    "TOPIC_ROOT", "QOS_FRAMES", "QOS_INFO", "PASSWORD_ENV", "BrokerConfig", "broker_config", "parse_mqtt_url",
    "mqtt_client", "connect_client", "add_broker_args", "broker_options", "refusal", "refused_error", "frames_topic", "info_topic",
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


#: the environment variable a password is read from when a user name is given without one (keeps it out of
#: the command line and the process list)
PASSWORD_ENV = "KMERL_MQTT_PASSWORD"
_QUERY_KEYS = {"ca": "ca_file", "cert": "cert_file", "key": "key_file"}


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach an MQTT broker. ``tls``: the connection is TLS (``mqtts://``, port 8883 by
    default), verified against ``ca_file`` (default: the system's CAs) including the host name; ``cert_file`` /
    ``key_file``: a client certificate (brokers with ``require_certificate``); ``username`` / ``password``:
    the broker's password authentication. ``display`` is the URL without the password (for messages)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if self.key_file and not self.cert_file:
            raise BridgeConfigError("an MQTT client key needs its certificate (cert=... / --mqtt-cert)")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise BridgeConfigError("CA and client certificates are for TLS: use an mqtts:// URL")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise BridgeConfigError(f"MQTT TLS {name.replace('_file', '')} file not found: {path}")

    @property
    def display(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def for_device(self, device_id: str) -> BrokerConfig:
        """The same broker with ``{device}`` in the user name and password replaced by ``device_id`` (a
        simulated fleet where every device logs in as itself, as per-device ACLs expect)."""
        def fill(v: str | None) -> str | None:
            return v.replace("{device}", device_id) if v else v

        return replace(self, username=fill(self.username), password=fill(self.password))


def broker_config(url: str | BrokerConfig, *, username: str | None = None, password: str | None = None,
                  ca_file: str | None = None, cert_file: str | None = None,
                  key_file: str | None = None) -> BrokerConfig:
    """``mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/...][?ca=FILE&cert=FILE&key=FILE]`` (a path is ignored:
    the stream source uses it for the device id) and options, which win over the URL. A user name without a
    password takes the password from ``$KMERL_MQTT_PASSWORD`` when set."""
    if isinstance(url, BrokerConfig):
        base = url
    else:
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise BridgeConfigError(f"an MQTT broker is given as mqtt://HOST[:PORT] or mqtts://HOST[:PORT], "
                                    f"got {_redact(url)!r}")
        try:
            port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        except ValueError:
            raise BridgeConfigError(f"bad port in {_redact(url)!r}") from None
        q = parse_qs(u.query, keep_blank_values=True)
        unknown = sorted(set(q) - set(_QUERY_KEYS))
        if unknown:
            raise BridgeConfigError(f"unknown MQTT URL parameter(s) {', '.join(unknown)} (known: ca, cert, key)")
        files = {_QUERY_KEYS[k]: v[-1] for k, v in q.items()}
        base = BrokerConfig(u.hostname, port, tls=u.scheme == "mqtts",
                            username=unquote(u.username) if u.username else None,
                            password=unquote(u.password) if u.password is not None else None, **files)
    user = username if username is not None else base.username
    pw = password if password is not None else base.password
    if user and pw is None:
        pw = os.environ.get(PASSWORD_ENV)
    if pw is not None and not user:
        raise BridgeConfigError("an MQTT password needs a user name")
    return replace(base, username=user, password=pw, ca_file=ca_file or base.ca_file,
                   cert_file=cert_file or base.cert_file, key_file=key_file or base.key_file)


def _redact(url: str) -> str:
    u = urlparse(url)
    if u.password is None:
        return url
    return url.replace(f":{u.password}@", ":***@", 1)


def parse_mqtt_url(url: str | BrokerConfig) -> tuple[str, int]:
    """``mqtt[s]://HOST[:PORT]`` → (host, port); port 1883 (8883 for ``mqtts``) when not given."""
    b = broker_config(url)
    return b.host, b.port


def mqtt_client(client_id: str, broker: str | BrokerConfig | None = None) -> Any:
    """A paho-mqtt 2.x client (MQTT 3.1.1, clean session), with TLS and credentials when ``broker`` asks for
    them, or an error naming the ``fleet`` extra."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:  # pragma: no cover - depends on the install
        raise BridgeConfigError("MQTT needs paho-mqtt: pip install 'kmerl-edge[fleet]'") from None
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                    clean_session=True)
    c.reconnect_delay_set(min_delay=0.2, max_delay=2)  # type: ignore[arg-type]
    c.max_queued_messages_set(1000)
    if broker is not None:
        b = broker_config(broker)
        if b.username:
            c.username_pw_set(b.username, b.password)
        if b.tls:
            import ssl

            try:
                c.tls_set(ca_certs=b.ca_file, certfile=b.cert_file, keyfile=b.key_file,
                          cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (ssl.SSLError, ValueError) as exc:
                raise BridgeConfigError(f"MQTT TLS files of {b.display} unusable: {exc}") from None
    return c


def refusal(rc: Any) -> str | None:
    """The broker's reason when a CONNACK ``rc`` (paho ``ReasonCode``) refuses the connection, else ``None``."""
    return str(rc) if getattr(rc, "is_failure", False) else None


def refused_error(broker: BrokerConfig, reason: str) -> BrokerAuthError:
    hint = ""
    if "user name or password" in reason.lower() or "not authori" in reason.lower():
        hint = (" (check the user name and password, the broker's password file and ACL; "
                f"the password can come from ${PASSWORD_ENV})")
    return BrokerAuthError(f"the MQTT broker at {broker.display} refused the connection: {reason}{hint}", reason)


def connect_client(c: Any, broker: BrokerConfig, *, timeout: float = 10.0, keepalive: int = 10,
                   what: str = "the broker") -> None:
    """Connect ``c`` (callbacks set; its ``on_connect`` must not be replaced later) and start its network
    thread; return when the broker accepted the connection. Named errors instead of a hang: a TLS handshake
    that fails (:class:`BrokerConnectionError`, at once), a refusal (:class:`BrokerAuthError`, at once), no
    broker within ``timeout`` (:class:`BrokerConnectionError`). A broker that is down at first is retried."""
    import ssl
    import threading

    done = threading.Event()
    result: dict[str, str | None] = {}
    user_on_connect = c.on_connect

    def on_connect(client: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        if not done.is_set():
            result["refused"] = refusal(rc)
            done.set()
        if user_on_connect is not None:
            user_on_connect(client, u, f, rc, p)

    user_on_disconnect = c.on_disconnect

    def on_disconnect(client: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        if not done.is_set():
            result["closed"] = str(rc)
            done.set()
        if user_on_disconnect is not None:
            user_on_disconnect(client, u, f, rc, p)

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            c.connect(broker.host, broker.port, keepalive=keepalive)
            break
        except ssl.SSLError as exc:
            raise BrokerConnectionError(f"TLS with {what} at {broker.display} failed: "
                                        f"{getattr(exc, 'verify_message', None) or exc.reason or exc}") from None
        except OSError as exc:
            last = exc
            if time.monotonic() >= deadline:
                raise BrokerConnectionError(f"could not connect to {what} at {broker.display} within "
                                            f"{timeout:g} s: {exc}") from None
            time.sleep(0.2)
    c.loop_start()
    if not done.wait(max(0.1, deadline - time.monotonic())):
        c.loop_stop()
        raise BrokerConnectionError(f"{what} at {broker.display} did not answer within {timeout:g} s"
                                    + (f" ({last})" if last else ""))
    c.on_disconnect = user_on_disconnect
    if "closed" in result:
        c.loop_stop()
        hint = ("a broker that requires a client certificate closes the connection without one: --mqtt-cert/"
                "--mqtt-key" if broker.tls else "is it a TLS listener? then use mqtts://")
        raise BrokerConnectionError(f"{what} at {broker.display} closed the connection before accepting it "
                                    f"({result['closed']}; {hint})")
    reason = result.get("refused")
    if reason is not None:
        c.loop_stop()
        try:
            c.disconnect()
        except Exception:  # noqa: BLE001 - already refused
            pass
        raise refused_error(broker, reason)


def add_broker_args(p: Any) -> None:
    """``--mqtt-username/--mqtt-password/--mqtt-ca/--mqtt-cert/--mqtt-key`` on an argparse parser."""
    p.add_argument("--mqtt-username", default=None, metavar="USER",
                   help="broker user name (or USER@ in the URL); the password comes from --mqtt-password, "
                        f"the URL or ${PASSWORD_ENV}")
    p.add_argument("--mqtt-password", default=None, metavar="PW",
                   help=f"broker password (prefer ${PASSWORD_ENV}: a command line is visible to other users)")
    p.add_argument("--mqtt-ca", default=None, metavar="FILE",
                   help="with mqtts://: CA certificate(s) the broker's certificate is verified against "
                        "(default: the system's)")
    p.add_argument("--mqtt-cert", default=None, metavar="FILE", help="with mqtts://: client certificate (PEM)")
    p.add_argument("--mqtt-key", default=None, metavar="FILE", help="with mqtts://: the client certificate's key")


def broker_options(args: Any) -> dict[str, str | None]:
    """The options of :func:`add_broker_args` as keyword arguments of :func:`broker_config`."""
    return {"username": args.mqtt_username, "password": args.mqtt_password, "ca_file": args.mqtt_ca,
            "cert_file": args.mqtt_cert, "key_file": args.mqtt_key}


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
    #: broker credentials and TLS files (override the URL's); ``{device}`` in the user name or password is each
    #: device's id. A password without a user name: every device logs in as its own id (per-device ACLs)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def broker(self) -> BrokerConfig:
        b = broker_config(self.url, ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)
        user = self.username or b.username
        if self.password and not user:
            user = "{device}"
        return broker_config(b, username=user, password=self.password)

    def __post_init__(self) -> None:
        self.broker()
        if self.devices < 1:
            raise BridgeConfigError(f"--devices must be >= 1, got {self.devices}")
        check_replay_options(self)
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
        self.broker = config.broker()
        self._errors: dict[str, BrokerConnectionError] = {}  #: TLS failures and refusals, per device
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
        broker = self.broker.for_device(device_id)
        c = mqtt_client(f"kmerl-device-{device_id}", broker)
        info = FrameEncoder(dev, first_seq=0).device_info(0)
        ready = self._connected.setdefault(device_id, threading.Event())
        c.will_set(link_topic(device_id), b"offline", qos=QOS_INFO, retain=True)

        def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            reason = refusal(rc)
            if reason is not None:
                self._errors[device_id] = refused_error(broker, reason)
            else:
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
        import ssl

        try:
            if first:
                c.connect(self.broker.host, self.broker.port, keepalive=10)
            else:
                c.reconnect()
        except ssl.SSLError as exc:
            self._errors[device_id] = BrokerConnectionError(
                f"TLS with the broker at {self.broker.display} failed for device {device_id}: "
                f"{getattr(exc, 'verify_message', None) or exc.reason or exc}")
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
            if self._errors:  # a TLS failure or a refusal does not go away by waiting
                err = next(iter(self._errors.values()))
                self.close()
                raise err
            if time.monotonic() > deadline:
                missing = [d for d, e in self._connected.items() if not e.is_set()]
                self.close()
                raise BrokerConnectionError(f"device {missing[0]} could not connect to {self.broker.display} "
                                            f"within {timeout:g} s")
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

