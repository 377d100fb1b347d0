"""The fleet on a local Ray cluster (a head and two worker nodes) with a real Mosquitto broker: shards
placed on different nodes, and a worker node killed mid-stream (its shard restarts on the other node and
reports the span nobody scored as a gap; nothing is scored twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt.client")
ray = pytest.importorskip("ray")

from _mosquitto import Broker  # noqa: E402
from test_fleet_mqtt import FS, Listener, _fleet, _wait  # noqa: E402

from kmerl_fleet import shard_of  # noqa: E402
from kmerl_fleet._ray import RayFleet  # noqa: E402

BUNDLE = str((Path(__file__).parent / "fixtures" / "test_bundle").resolve())


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
        if fleet is not None:
            fleet.close()
        if rf is not None:
            rf.close()
        if lis is not None:
            lis.close()
        broker.close()
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
        if fleet is not None:
            fleet.close()
        if rf is not None:
            rf.close()
        if lis is not None:
            lis.close()
        broker.close()
        ray.shutdown()
        cluster.shutdown()
    for d in fleet.device_ids:
        res = lis.results(d)
        assert [r["t_end"] for r in res] == [10.0 + 2.0 * k for k in range(11)]
        assert all(not r["skipped"] and r["scores"] for r in res), [r["reason"] for r in res if r["skipped"]]
