"""The fleet over TLS with authentication and per-device ACLs, through a real Mosquitto (a throw-away CA
and server certificate made in the test): results flow end to end; a wrong password or a TLS mistake is a
named error at once (no hang, no traceback); a device cannot publish another device's frames."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("paho.mqtt.client")
pytest.importorskip("cryptography")

from _mosquitto import SecureBroker  # noqa: E402
from test_fleet_mqtt import BUNDLE, FS, Listener, _fleet, _wait  # noqa: E402

from firmware_bridge._errors import BridgeConfigError, BrokerAuthError, BrokerConnectionError  # noqa: E402
from firmware_bridge._mqtt import BrokerConfig, broker_config, connect_client, mqtt_client  # noqa: E402
from firmware_bridge._protocol import DeviceConfig, FrameEncoder  # noqa: E402
from kmerl_edge.stream import StreamConfig, demo_record_path  # noqa: E402
from kmerl_fleet import FleetShard, ShardConfig  # noqa: E402

USERS = {"kmerl-gateway": "gw-secret", "kmerl-monitor": "mon-secret", "patch-0": "pw-patch-0",
         "patch-1": "pw-patch-1", "patch-9": "pw-patch-9"}


@pytest.fixture(scope="module")
def clf() -> Any:
    import kmerl_edge

    return kmerl_edge.load(BUNDLE, backend="onnxruntime")


@pytest.fixture(scope="module")
def secure() -> Any:
    b = SecureBroker(USERS, cert_clients=("kmerl-gateway",)).start()
    yield b
    b.close()


def _as(b: SecureBroker, user: str, password: str | None = None) -> BrokerConfig:
    return broker_config(b.url, username=user, password=USERS[user] if password is None else password,
                         ca_file=str(b.pki["ca"]))


def _client(broker: BrokerConfig, name: str) -> Any:
    c = mqtt_client(name, broker)
    connect_client(c, broker, timeout=5)
    return c


def test_tls_password_and_acl_end_to_end(secure: SecureBroker, clf: Any) -> None:
    from kmerl_edge._source import DeviceInfo, Gap, SampleBlock, open_source
    from kmerl_fleet._source import register

    ca = str(secure.pki["ca"])
    shard = FleetShard(clf, ShardConfig(_as(secure, "kmerl-gateway"), stream=StreamConfig(hop_s=2.0))).start()
    lis = Listener(_as(secure, "kmerl-monitor"))
    # a spy with the gateway's rights sees what the broker lets through on the frames topics
    spied: dict[str, list[bytes]] = {"patch-1": [], "patch-9": []}
    spy = mqtt_client("spy", _as(secure, "kmerl-gateway"))
    spy.on_message = lambda _c, _u, m: spied[m.topic.split("/")[2]].append(bytes(m.payload))
    connect_client(spy, _as(secure, "kmerl-gateway"))
    spy.subscribe([("kmerl/v1/patch-1/frames", 0), ("kmerl/v1/patch-9/frames", 0)])
    # a consumer of one device's frames over the client-certificate listener (identity = the gateway account)
    register()
    src = open_source(f"{secure.cert_url}/patch-0?ca={ca}&cert={secure.pki['kmerl-gateway_cert']}"
                      f"&key={secure.pki['kmerl-gateway_key']}")
    # patch-9 is a genuine device account that tries to inject another patch's frames (a different rate and
    # leads: if they reached patch-1's session it would see a device change, foreign samples or a gap)
    intruder = _client(_as(secure, "patch-9"), "kmerl-device-patch-9")
    bogus_dev = DeviceConfig(("I", "II"), 500.0, 1_000_000, "int16", 50, 9, (0, 1, 0), "evil")
    enc = FrameEncoder(bogus_dev, first_seq=1)
    bogus = enc.device_info(0) + enc.samples(0, np.zeros((50, 2), dtype=np.int16))
    # every device logs in as its own id with its own password ('{device}' is replaced per device)
    fleet = _fleet(secure.url, devices=2, password="pw-{device}", ca_file=ca).start()
    stop = threading.Event()

    def inject() -> None:
        while not stop.wait(0.02):
            intruder.publish("kmerl/v1/patch-1/frames", bogus, qos=0)
            intruder.publish("kmerl/v1/patch-1/info", bogus[: len(enc.device_info(0))], qos=1, retain=True)
            intruder.publish("kmerl/v1/patch-9/frames", bogus, qos=0)  # its own topic: allowed (control)

    t = threading.Thread(target=inject, daemon=True)
    t.start()
    blocks: list[Any] = []
    try:
        assert fleet.wait(30)
        assert _wait(lambda: all(len(lis.results(d)) >= 11 for d in fleet.device_ids), 20), shard.gateway_stats()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(getattr(b, "n_samples", 0) for b in blocks) < 30 * FS:
            m = src.get(timeout=0.2)
            if m is not None:
                blocks.append(m)
    finally:
        stop.set()
        t.join(5)
        fleet.close()
        shard.close()
        lis.close()
        src.close()
        for c in (spy, intruder):
            c.disconnect()
            c.loop_stop()
    for d in fleet.device_ids:  # end to end over TLS with authentication
        res = lis.results(d)
        assert [r["t_end"] for r in res][:3] == [10.0, 12.0, 14.0]
        assert not lis.events(d, "gap") and not lis.events(d, "device_changed") and not lis.events(d, "error")
    assert spied["patch-9"], "the control: the intruder's publishes to its own topic arrive"
    assert bogus not in spied["patch-1"], "the broker let a device publish another device's frames"
    dec = shard._devices["patch-1"].decoder.stats
    assert dec.samples == 30 * FS and shard._devices["patch-1"].info is not None
    assert shard._devices["patch-1"].info.fs == FS and shard.stats["device_changed"] == 0
    assert any(isinstance(m, DeviceInfo) and m.fs == FS for m in blocks)
    samples = [m for m in blocks if isinstance(m, SampleBlock)]
    assert sum(m.n_samples for m in samples) == 30 * FS and not any(isinstance(m, Gap) for m in blocks)


def test_wrong_password_and_tls_mistakes_are_named_errors(secure: SecureBroker, clf: Any, capsys: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(BrokerAuthError, match="refused the connection") as exc:
        FleetShard(clf, ShardConfig(_as(secure, "kmerl-gateway", "wrong"))).start()
    assert "wrong" not in str(exc.value) and "kmerl-gateway@" in str(exc.value)
    with pytest.raises(BrokerAuthError, match="refused"):
        _fleet(secure.url, devices=1, password="not-{device}", ca_file=str(secure.pki["ca"])).start()
    with pytest.raises(BrokerConnectionError, match="certificate"):  # no CA given: the system's do not know it
        FleetShard(clf, ShardConfig(broker_config(secure.url, username="kmerl-gateway", password="gw-secret"))).start()
    with pytest.raises(BrokerConnectionError, match="client certificate"):  # the cert listener, without one
        FleetShard(clf, ShardConfig(broker_config(secure.cert_url, ca_file=str(secure.pki["ca"])))).start()
    assert time.monotonic() - t0 < 5.0, "named errors come at once, not after a connect timeout"

    from firmware_bridge.cli import main as bridge_main
    from kmerl_fleet.cli import main as fleet_main

    ca = str(secure.pki["ca"])
    rc = fleet_main(["--mqtt", secure.url.replace("mqtts://", "mqtts://kmerl-gateway:bad@"), "--mqtt-ca", ca,
                     "--bundle", str(BUNDLE), "--backend", "onnxruntime", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused the connection" in err and "Traceback" not in err and ":bad@" not in err
    rc = bridge_main(["simulate", str(demo_record_path()), "--mqtt", secure.url, "--mqtt-password", "bad",
                      "--mqtt-ca", ca, "--fs", "200", "--leads", "I", "--seconds", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused the connection" in err and "patch-0@" in err


def test_broker_urls_and_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    b = broker_config(f"mqtts://dev%2F1:p%40ss@broker.example?ca={ca}")
    assert (b.host, b.port, b.tls, b.username, b.password, b.ca_file) == (
        "broker.example", 8883, True, "dev/1", "p@ss", str(ca))
    assert b.display == "mqtts://dev/1@broker.example:8883" and "p@ss" not in repr(b)
    assert broker_config("mqtt://h").port == 1883 and not broker_config("mqtt://h").tls
    monkeypatch.setenv("KMERL_MQTT_PASSWORD", "from-env")
    assert broker_config("mqtts://gw@h").password == "from-env"
    assert broker_config("mqtts://h", username="gw", password="opt").password == "opt"
    assert broker_config("mqtts://h").password is None  # no user name: no password from the environment
    assert broker_config("mqtts://{device}:pw-{device}@h").for_device("patch-3").password == "pw-patch-3"
    with pytest.raises(BridgeConfigError, match="unknown MQTT URL parameter"):
        broker_config("mqtts://h?cafile=x")
    with pytest.raises(BridgeConfigError, match="not found"):
        broker_config("mqtts://h", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(BridgeConfigError, match="needs its certificate"):
        broker_config("mqtts://h", key_file=str(ca))
    with pytest.raises(BridgeConfigError, match="use an mqtts:// URL"):
        broker_config("mqtt://h", ca_file=str(ca))
    with pytest.raises(BridgeConfigError, match=r"mqtts://HOST") as exc:
        broker_config("https://u:secret@h")
    assert "secret" not in str(exc.value)


def test_the_documented_acl_is_the_tested_one() -> None:
    """docs/fleet.md's ACL (comments aside) is exactly the one the broker in these tests enforces."""
    import re
    from pathlib import Path

    from _mosquitto import FLEET_ACL

    doc = (Path(__file__).resolve().parents[1] / "docs" / "fleet.md").read_text()
    block = re.search(r"```\n# /etc/mosquitto/kmerl\.acl.*?\n(.*?)```", doc, re.S)
    assert block is not None

    def rules(text: str) -> list[str]:
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    assert rules(block.group(1)) == rules(FLEET_ACL)


def test_the_documented_broker_config_starts_and_enforces_logins(tmp_path: Any) -> None:
    """docs/fleet.md's Mosquitto configuration, its paths and ports pointed at a temporary directory, starts
    a broker that takes a password login over TLS on one listener and a client certificate on the other, and
    refuses a wrong password."""
    import os
    import pwd
    import re
    import socket
    import subprocess
    from pathlib import Path

    from _mosquitto import _free_port, make_pki, mosquitto_binary

    from benchmarks._mqtt_security import mosquitto_password_line

    exe = mosquitto_binary()
    if exe is None:
        pytest.skip("mosquitto is not installed")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "fleet.md").read_text()
    conf = re.search(r"```\n# /etc/mosquitto/conf\.d/kmerl\.conf\n(.*?)```", doc, re.S).group(1)
    acl = re.search(r"```\n# /etc/mosquitto/kmerl\.acl.*?\n(.*?)```", doc, re.S).group(1)
    pki = make_pki(tmp_path, ("patch-0",))
    (tmp_path / "kmerl.acl").write_text(acl)
    (tmp_path / "kmerl.passwd").write_text(mosquitto_password_line("kmerl-gateway", "gw") + "\n")
    p1, p2 = _free_port(), _free_port()
    files = {"/etc/mosquitto/kmerl.passwd": tmp_path / "kmerl.passwd", "/etc/mosquitto/kmerl.acl": tmp_path / "kmerl.acl",
             "/etc/mosquitto/certs/ca.pem": pki["ca"], "/etc/mosquitto/certs/broker.pem": pki["server_cert"],
             "/etc/mosquitto/certs/broker.key": pki["server_key"]}
    for doc_path, real in files.items():
        conf = conf.replace(doc_path, str(real))
    conf = conf.replace("listener 8883", f"listener {p1} 127.0.0.1").replace("listener 8884", f"listener {p2} 127.0.0.1")
    assert "/etc/" not in conf
    (tmp_path / "m.conf").write_text(f"user {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest none\n{conf}")
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", p2), timeout=0.2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        ca = str(pki["ca"])
        ok = broker_config(f"mqtts://127.0.0.1:{p1}", username="kmerl-gateway", password="gw", ca_file=ca)
        _client(ok, "gw").disconnect()
        cert = broker_config(f"mqtts://127.0.0.1:{p2}", ca_file=ca, cert_file=str(pki["patch-0_cert"]),
                             key_file=str(pki["patch-0_key"]))
        _client(cert, "kmerl-device-patch-0").disconnect()
        with pytest.raises(BrokerAuthError):
            _client(broker_config(f"mqtts://127.0.0.1:{p1}", username="kmerl-gateway", password="no", ca_file=ca),
                    "gw2")
    finally:
        proc.terminate()
        proc.wait(5)
