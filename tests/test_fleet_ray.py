"""The fleet on a local Ray cluster (a head and two worker nodes) with a real Mosquitto broker: shards
placed on different nodes, and a worker node killed mid-stream (its shard restarts on the other node and
reports the span nobody scored as a gap; nothing is scored twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("paho.mqtt.client")
ray = pytest.importorskip("ray")

from _mosquitto import Broker  # noqa: E402
from test_fleet_mqtt import FS, Listener, _fleet, _wait  # noqa: E402

from kmerl_fleet import shard_of  # noqa: E402
from kmerl_fleet._ray import RayFleet  # noqa: E402

BUNDLE = str((Path(__file__).parent / "fixtures" / "test_bundle").resolve())



def _close(*parts: Any) -> None:
    """Close what a test started (``None`` where it did not get that far), newest first."""
    for p in parts:
        if p is not None:
            p.close()

@pytest.mark.slow
def test_ray_fleet_survives_a_worker_node_killed_midstream() -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=2), cluster.add_node(num_cpus=2)]
    ray.init(address=cluster.address, log_to_driver=False)
    broker = Broker().start()
    fleet = rf = lis = None
    try:
        rf = RayFleet(broker.url, 2, bundle=BUNDLE, backend="onnxruntime").start()
        where = rf.placement()
        assert len({w["node_id"] for w in where}) == 2, "SPREAD puts the two shards on two nodes"
        lis = Listener(broker.url)
        fleet = _fleet(broker.url, devices=6, seconds=50.0, speed=10.0).start()
        owned = {k: [d for d in fleet.device_ids if shard_of(d, 2) == k] for k in (0, 1)}
        assert owned[0] and owned[1]
        victim = owned[0][0]
        assert _wait(lambda: any(r["t_end"] >= 16.0 for r in lis.results(victim)), 30)
        node = next(n for n in nodes if n.node_id == where[0]["node_id"])
        cluster.remove_node(node)  # the node dies with its raylet and the shard actor on it
        assert _wait(lambda: any(g["reason"] == "gateway restarted" for g in lis.events(victim, "gap")), 60)
        assert fleet.wait(60)
        assert _wait(lambda: all(any(r["t_end"] > 48.0 for r in lis.results(d)) for d in fleet.device_ids), 30)
        moved = rf.placement()[0]
        assert moved["node_id"] == where[1]["node_id"], "shard 0 restarted on the node left"
    finally:
        _close(fleet, rf, lis, broker)
        ray.shutdown()
        cluster.shutdown()
    for d in owned[0]:
        ends = [r["t_end"] for r in lis.results(d)]
        assert len(ends) == len(set(ends)), f"{d}: a window was scored twice"
        gaps = [g for g in lis.events(d, "gap") if g["reason"] == "gateway restarted"]
        assert len(gaps) == 1 and gaps[0]["n_samples"] > 0 and gaps[0]["seconds"] == gaps[0]["n_samples"] / FS
    for d in owned[1]:  # the other shard's devices never noticed
        assert not lis.events(d, "gap")
        res = lis.results(d)
        assert [r["index"] for r in res] == list(range(len(res)))


@pytest.mark.slow
def test_ray_fleet_scores_through_a_serve_deployment() -> None:
    """``inference="serve"``: shards preprocess, the autoscaled KmerlScorer deployment (``@serve.batch``)
    runs the model; results are the same windows, scored, as with in-actor inference."""
    pytest.importorskip("ray.serve")
    from ray.cluster_utils import Cluster

    from kmerl_fleet._serve import ServeConfig

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, log_to_driver=False)
    broker = Broker().start()
    fleet = rf = lis = None
    try:
        rf = RayFleet(broker.url, 2, bundle=BUNDLE, backend="onnxruntime", inference="serve",
                      serve=ServeConfig(min_replicas=1, max_replicas=2, num_cpus=1)).start()
        assert rf.replicas().get("RUNNING", 0) >= 1
        lis = Listener(broker.url)
        fleet = _fleet(broker.url, devices=4, seconds=30.0, speed=10.0).start()
        assert fleet.wait(30)
        assert _wait(lambda: all(any(r["t_end"] >= 30.0 for r in lis.results(d)) for d in fleet.device_ids), 30)
        assert rf.scorer_stats()["batches"] > 0, "the windows were scored by the Serve deployment"
    finally:
        _close(fleet, rf, lis, broker)
        ray.shutdown()
        cluster.shutdown()
    for d in fleet.device_ids:
        res = lis.results(d)
        assert [r["t_end"] for r in res] == [10.0 + 2.0 * k for k in range(11)]
        assert all(not r["skipped"] and r["scores"] for r in res), [r["reason"] for r in res if r["skipped"]]


def test_serve_batch_scores_each_request_as_a_direct_call_would(capsys: pytest.CaptureFixture[str]) -> None:
    """What a scorer replica does with one ``@serve.batch`` of requests from several shards: one backend call
    per lead set, each request's rows back in its order, equal to scoring each request alone."""
    import numpy as np

    import kmerl_edge
    from kmerl_edge._leads import lead_ids
    from kmerl_fleet._errors import FleetConfigError
    from kmerl_fleet._serve import ServeConfig, ServeScoredClassifier, _score_requests

    clf = kmerl_edge.load(BUNDLE, backend="onnxruntime")
    win = clf.bundle.preprocess_config.window_samples
    rng = np.random.default_rng(0)
    reqs = [(rng.standard_normal((n, len(leads), win)).astype(np.float32), lead_ids(leads), {})
            for n, leads in ((3, ("I",)), (2, ("I", "II")), (1, ("I",)), (4, ("II",)))]
    calls: list[int] = []
    run = clf.run_windows

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(clf, name)

        def run_windows(self, x: np.ndarray, ids: np.ndarray, **kw: object) -> np.ndarray:
            calls.append(len(x))
            return run(x, ids, **kw)

    out = _score_requests(Counting(), reqs)
    assert sorted(calls) == [2, 4, 4], "the two one-lead-I requests share one backend call"
    for (x, ids, _), got in zip(reqs, out):
        assert np.allclose(got, run(x, ids), atol=1e-6)

    class Handle:  # what a DeploymentHandle call returns: .result(timeout_s=...)
        def remote(self, x: np.ndarray, ids: np.ndarray, kw: dict[str, object]) -> object:
            res = _score_requests(clf, [(x, ids, kw)])[0]
            return type("R", (), {"result": lambda self, timeout_s=None: res})()

    proxy = ServeScoredClassifier(clf, Handle())
    assert proxy.bundle is clf.bundle
    assert np.allclose(proxy.run_windows(reqs[0][0], reqs[0][1]), run(reqs[0][0], reqs[0][1]), atol=1e-6)
    with pytest.raises(FleetConfigError):
        ServeConfig(min_replicas=3, max_replicas=2)
    with pytest.raises(FleetConfigError, match="inference"):
        RayFleet("mqtt://127.0.0.1:1883", 1, inference="gpu")
    from kmerl_fleet.cli import main

    assert main(["--mqtt", "mqtt://127.0.0.1:1", "--inference", "serve"]) == 2
    assert "needs Ray" in capsys.readouterr().err
    assert main(["--mqtt", "mqtt://127.0.0.1:1", "--ray-address", "auto", "--inference", "serve",
                 "--serve-replicas", "2"]) == 2
    assert "MIN:MAX" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_fleet_with_a_wrong_password_raises_the_named_error() -> None:
    """A shard actor whose broker login is refused: ``RayFleet.start`` raises the shard's own
    ``BrokerAuthError`` (not Ray's wrapper, not a timeout)."""
    pytest.importorskip("cryptography")
    from _mosquitto import SecureBroker

    from firmware_bridge._errors import BrokerAuthError
    from firmware_bridge._mqtt import broker_config

    b = SecureBroker({"kmerl-gateway": "gw"}).start()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        bad = broker_config(b.url, username="kmerl-gateway", password="bad", ca_file=str(b.pki["ca"]))
        with pytest.raises(BrokerAuthError, match="refused the connection") as exc:
            RayFleet(bad, 1, bundle=BUNDLE, backend="onnxruntime").start(timeout=60)
        assert type(exc.value) is BrokerAuthError and "bad" not in str(exc.value)
    finally:
        ray.shutdown()
        b.close()
