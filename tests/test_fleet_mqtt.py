"""The fleet path end to end through a real Mosquitto broker: virtual patches replaying a real recording
publish binary frames over MQTT, a gateway shard scores them and publishes JSON results and events."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("paho.mqtt.client")

from _mosquitto import Broker  # noqa: E402

import kmerl_edge  # noqa: E402
from firmware_bridge._mqtt import MqttFleetConfig, MqttPatchFleet, mqtt_client, parse_mqtt_url  # noqa: E402
from kmerl_edge.stream import StreamConfig, demo_record_path  # noqa: E402
from kmerl_fleet import SCHEMA_EVENT, SCHEMA_RESULT, FleetShard, ShardConfig, shard_of  # noqa: E402
from kmerl_fleet._errors import FleetConfigError  # noqa: E402

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
FS = 200.0  # the demo recording's own rate (CPSC2021 data_101_8)


@pytest.fixture(scope="module")
def clf() -> Any:
    return kmerl_edge.load(BUNDLE, backend="onnxruntime")


@pytest.fixture()
def broker() -> Any:
    b = Broker().start()
    yield b
    b.close()


class Listener:
    """A consumer of the fleet's output (what a monitoring back end runs): every results/events document."""

    def __init__(self, url: Any) -> None:
        host, port = parse_mqtt_url(url)
        self.docs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.recv: dict[str, list[float]] = defaultdict(list)
        self.retained: dict[str, dict[str, Any]] = {}
        self._ready = threading.Event()
        c = mqtt_client(f"listener-{id(self):x}", url)  # TLS and credentials when the URL asks for them

        def on_connect(client: Any, *_: Any) -> None:
            client.subscribe([("kmerl/v1/+/results", 1), ("kmerl/v1/+/events", 1)])
            self._ready.set()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if msg.retain:  # the latest result kept by the broker (a late subscriber's first message)
                self.retained[msg.topic] = json.loads(msg.payload)
                return
            self.docs[msg.topic].append(json.loads(msg.payload))  # strict JSON or this raises
            self.recv[msg.topic].append(time.time())

        c.on_connect = on_connect
        c.on_message = on_message
        c.connect_async(host, port)
        c.loop_start()
        assert self._ready.wait(5)
        self.client = c

    def results(self, device: str) -> list[dict[str, Any]]:
        return list(self.docs[f"kmerl/v1/{device}/results"])

    def events(self, device: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.docs[f"kmerl/v1/{device}/events"] if type_ is None or d["type"] == type_]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _fleet(url: str, **kw: Any) -> MqttPatchFleet:
    args: dict[str, Any] = {"url": url, "record": str(demo_record_path()), "leads": ("I",), "fs": FS,
                            "speed": 20.0, "seconds": 30.0, "frame_samples": 50}
    args.update(kw)
    return MqttPatchFleet(MqttFleetConfig(**args))


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_frames_to_results_through_a_real_broker(broker: Broker, clf: Any) -> None:
    shard = FleetShard(clf, ShardConfig(broker.url, stream=StreamConfig(hop_s=2.0))).start()
    lis = Listener(broker.url)
    fleet = _fleet(broker.url, devices=2).start()
    try:
        assert fleet.wait(30)
        # 30 s of signal, 10-s windows every 2 s: windows end at 10, 12, ..., 30 s
        assert _wait(lambda: all(len(lis.results(d)) >= 11 for d in fleet.device_ids), 20), (
            [(r["t_end"], r["reason"]) for r in lis.results("patch-0")], shard.gateway_stats(), fleet.stats)
    finally:
        fleet.close()
        shard.close()
        lis.close()
    for d in fleet.device_ids:
        res = lis.results(d)
        assert [r["index"] for r in res] == list(range(len(res)))
        assert all(r["schema"] == SCHEMA_RESULT and r["device_id"] == d for r in res)
        assert [r["t_end"] for r in res][:3] == [10.0, 12.0, 14.0]
        scored = [r for r in res if not r["skipped"]]
        assert scored and all(scored[0]["scores"].values())
        assert not lis.events(d, "gap"), "nothing was lost, so no gap may be reported"
    st = shard.gateway_stats()
    assert st["devices"] == 2 and st["ingest_dropped"] == 0


def test_device_that_reconnects_reports_its_gap(broker: Broker, clf: Any) -> None:
    shard = FleetShard(clf, ShardConfig(broker.url)).start()
    lis = Listener(broker.url)
    # patch-0 leaves the broker at 14 s for 4 s of device time (it keeps sampling), then comes back
    fleet = _fleet(broker.url, devices=2, disconnect_after_s=14.0, disconnect_for_s=4.0).start()
    try:
        assert fleet.wait(30)
        assert _wait(lambda: any(r["t_end"] >= 30.0 for r in lis.results("patch-0")), 20)
        time.sleep(0.3)
    finally:
        fleet.close()
        shard.close()
        lis.close()
    gaps = lis.events("patch-0", "gap")
    assert gaps and all(g["schema"] == SCHEMA_EVENT for g in gaps)
    lost = sum(g["n_samples"] for g in gaps)
    assert lost >= 4.0 * FS  # at least the time it was away; not sent while reconnecting counts too
    assert gaps[0]["reason"] == "lost frames" and 13.0 <= gaps[0]["t0"] <= 14.5
    # every sample is either delivered or reported lost: nothing silently missing
    dec = shard._devices["patch-0"].decoder.stats
    assert dec.samples + lost == 30 * FS
    assert [g for g in lis.events("patch-0", "link")], "the link state (retained, last will) is reported"
    assert not lis.events("patch-1", "gap")
    r0 = lis.results("patch-0")
    skipped = [r for r in r0 if r["skipped"]]
    assert skipped and all(r["reason"] in ("gap", "fragmented") for r in skipped)
    assert r0[-1]["t_end"] == 30.0 and not r0[-1]["skipped"]


def test_broker_restart_resumes_with_the_gap_reported(broker: Broker, clf: Any) -> None:
    shard = FleetShard(clf, ShardConfig(broker.url)).start()
    fleet = _fleet(broker.url, devices=1, seconds=40.0).start()
    got: list[dict[str, Any]] = []
    try:
        time.sleep(0.75)  # 15 s of device time
        broker.restart(down_s=0.3)
        lis = Listener(broker.url)
        assert fleet.wait(30)
        assert _wait(lambda: any(r["t_end"] >= 40.0 for r in lis.results("patch-0")), 20)
        got = lis.events("patch-0", "gap")
        lis.close()
    finally:
        fleet.close()
        shard.close()
    assert shard.stats["reconnects"] >= 1
    late = Listener(broker.url)  # a consumer connecting now gets each device's latest result, retained
    assert _wait(lambda: "kmerl/v1/patch-0/results" in late.retained, 5)
    assert late.retained["kmerl/v1/patch-0/results"]["t_end"] >= 38.0
    late.close()
    assert got and sum(g["n_samples"] for g in got) >= 0.3 * 20 * FS
    assert all(g["reason"] in ("lost frames", "device skipped samples") for g in got)


def test_gateway_killed_midstream_resumes_elsewhere_with_the_lost_span(broker: Broker, clf: Any) -> None:
    first = FleetShard(clf, ShardConfig(broker.url)).start()
    lis = Listener(broker.url)
    fleet = _fleet(broker.url, devices=1, seconds=40.0).start()
    try:
        assert _wait(lambda: any(r["t_end"] >= 14.0 for r in lis.results("patch-0")), 20)
        first.kill()  # no flush, no goodbye
        time.sleep(0.25)  # 5 s of device time nobody scores
        second = FleetShard(clf, ShardConfig(broker.url)).start()
        assert fleet.wait(30)
        # the new session's windows run from its first sample: the last one ends within a hop of 40 s
        assert _wait(lambda: any(r["t_end"] > 38.0 for r in lis.results("patch-0")), 20), lis.results("patch-0")
        second.close()
    finally:
        fleet.close()
        lis.close()
    res = lis.results("patch-0")
    ends = [r["t_end"] for r in res]
    assert len(ends) == len(set(ends)), "a window was scored twice"
    gaps = [g for g in lis.events("patch-0", "gap") if g["reason"] == "gateway restarted"]
    assert len(gaps) == 1
    g = gaps[0]
    before = max(e for e in ends if e <= g["t0"] + 1e-6)
    assert g["t0"] == before  # the span starts where the last published result ended
    after = min(e for e in ends if e > g["t0"])
    assert after >= g["t0"] + g["seconds"] + 10.0 - 1e-6  # the new session starts at the first new sample


def test_sharding_is_stable_and_bad_urls_are_named() -> None:
    assert shard_of("patch-17", 4) == shard_of("patch-17", 4)
    counts = [0, 0, 0, 0]
    for i in range(4000):
        counts[shard_of(f"patch-{i}", 4)] += 1
    assert min(counts) > 800
    with pytest.raises(FleetConfigError):
        ShardConfig("mqtt://127.0.0.1:1883", shard=2, n_shards=2)
    from firmware_bridge._errors import BridgeConfigError

    with pytest.raises(BridgeConfigError, match="mqtt://HOST"):
        ShardConfig("http://x")


def test_fleet_and_simulate_command_lines(broker: Broker) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    lis = Listener(broker.url)
    gw = subprocess.Popen([sys.executable, "-m", "kmerl_fleet.cli", "--mqtt", broker.url, "--bundle", str(BUNDLE),
                           "--backend", "onnxruntime", "--duration", "12", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        sim = subprocess.run([sys.executable, "-m", "firmware_bridge.cli", "simulate", str(demo_record_path()),
                              "--mqtt", broker.url, "--devices", "2", "--fs", "200", "--leads", "I",
                              "--speed", "20", "--seconds", "20", "--frame-samples", "50"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert sim.returncode == 0, sim.stderr
        assert "2 patch(es) publishing" in sim.stdout and "published=" in sim.stderr
        assert _wait(lambda: all(len(lis.results(d)) >= 6 for d in ("patch-0", "patch-1")), 15)
        gw.send_signal(15)  # SIGTERM: flush, publish and print the summary
        out, err = gw.communicate(timeout=30)
    finally:
        if gw.poll() is None:
            gw.kill()
        lis.close()
    assert gw.returncode == 0, err
    summary = json.loads(out)
    assert summary["devices"] == 2 and summary["results"] >= 12 and summary["ingest_dropped"] == 0


def test_mqtt_source_for_one_device_reports_its_gap(broker: Broker) -> None:
    from kmerl_edge._source import DeviceInfo, Gap, LinkStatus, SampleBlock, open_source
    from kmerl_fleet._source import register

    register()  # what the kmerl_edge.sources entry point does in an installed package
    fleet = _fleet(broker.url, devices=1, seconds=10.0, disconnect_after_s=4.0, disconnect_for_s=2.0)
    fleet.start()
    src = open_source(f"{broker.url}/patch-0")
    msgs: list[Any] = []
    try:
        assert fleet.wait(20)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            m = src.get(timeout=0.2)
            if m is None and msgs and isinstance(msgs[-1], SampleBlock) and msgs[-1].t0 >= 9.7:
                break
            if m is not None:
                msgs.append(m)
    finally:
        src.close()
        fleet.close()
    assert src.ended
    assert isinstance(msgs[0], LinkStatus) and msgs[0].connected
    assert any(isinstance(m, DeviceInfo) and m.fs == FS and m.leads == ("I",) for m in msgs)
    blocks = [m for m in msgs if isinstance(m, SampleBlock)]
    gaps = [m for m in msgs if isinstance(m, Gap)]
    assert blocks[0].t0 == 0.0 and blocks[-1].t0 + blocks[-1].n_samples / FS == 10.0
    assert len(gaps) == 1 and gaps[0].reason == "lost frames" and gaps[0].n_samples >= 2.0 * FS
    assert sum(b.n_samples for b in blocks) + gaps[0].n_samples == 10 * FS
    with pytest.raises(FleetConfigError, match="DEVICE_ID"):
        open_source(f"{broker.url}/a/b")


def test_slow_shard_drops_oldest_frames_with_counts_and_reports_the_gap(broker: Broker, clf: Any) -> None:
    shard = FleetShard(clf, ShardConfig(broker.url, ingest_queue=20)).start()
    handle = shard._handle

    def slow(topic: str, payload: bytes) -> None:  # a consumer that cannot keep up
        if topic.endswith("/frames"):
            time.sleep(0.004)
        handle(topic, payload)

    shard._handle = slow  # type: ignore[method-assign]
    lis = Listener(broker.url)
    fleet = _fleet(broker.url, devices=1, seconds=20.0, speed=200.0).start()  # 80 frames in 0.1 s
    try:
        assert fleet.wait(20)
        assert _wait(lambda: not shard._q, 10)
        time.sleep(0.3)
    finally:
        fleet.close()
        shard.close()
        lis.close()
    dropped = shard.stats["ingest_dropped"]
    assert dropped > 0
    lost = sum(g["n_samples"] for g in lis.events("patch-0", "gap"))
    dec = shard._devices["patch-0"].decoder.stats
    assert lost == dropped * 50  # the samples of every dropped frame are reported as lost
    # drop-oldest keeps the newest frames, so the stream's end arrives and nothing goes missing unreported
    assert dec.samples + lost == 20 * FS
