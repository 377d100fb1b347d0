"""The fleet gateway on Ray: one actor per shard, placed by Ray across the cluster's nodes.

- **Device affinity.** A device belongs to shard ``shard_of(device_id, n_shards)`` and only that shard's
  actor subscribes to its frames, so every frame of a device reaches the same session. The MQTT
  subscription is sharded the same way: no process reads every device's traffic (each reads only the
  tiny retained ``info`` documents of the others).
- **Batched inference.** Each actor runs a :class:`kmerl_edge.stream.Gateway` whose worker batches windows
  across the shard's devices (windows with the same lead set go into one backend call). Windows stay in the
  process that cut them: no window crosses the network.
- **Failure.** Actors are restartable (``max_restarts=-1``): when a node dies, Ray recreates its shard
  actors on the nodes left; a new actor reads each device's retained last result and reports the span
  nobody scored as a gap (``reason: "gateway restarted"``); nothing is scored twice.

Ray is the ``fleet`` extra, imported here only.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from firmware_bridge._mqtt import BrokerConfig
from kmerl_edge._stream_types import StreamConfig

from ._errors import FleetConfigError

__all__ = ["RayFleet", "ray_module"]


def ray_module() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the install
        raise FleetConfigError("the Ray fleet needs Ray: pip install 'kmerl-edge[fleet]'") from None
    return ray


class _ShardWorker:
    """What runs inside a shard actor."""

    def __init__(self, url: str | BrokerConfig, shard: int, n_shards: int, bundle: str | None, backend: str,
                 stream: dict[str, Any]) -> None:
        import kmerl_edge

        from ._shard import FleetShard, ShardConfig

        clf = kmerl_edge.load(bundle, backend=backend)
        cfg = ShardConfig(url, shard=shard, n_shards=n_shards, stream=StreamConfig(**stream))
        self.shard = FleetShard(clf, cfg).start()
        self.started = time.time()

    def where(self) -> dict[str, Any]:
        ray = ray_module()
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "shard": self.shard.config.shard, "started": self.started}

    def stats(self) -> dict[str, Any]:
        return {**self.shard.gateway_stats(), "shard": self.shard.config.shard, "devices_owned": self.shard.devices}

    def latencies(self) -> list[float]:
        return [x for s in self.shard.gateway.sessions.values() for x in s.latencies()]

    def close(self) -> dict[str, Any]:
        self.shard.close()
        return self.stats()


class RayFleet:
    """``n_shards`` shard actors on the Ray cluster at ``address`` (``None``: a local one; ``"auto"``: the
    running cluster). ``start()`` waits until every shard is connected to the broker."""

    def __init__(self, url: str | BrokerConfig, n_shards: int, *, bundle: str | None = None, backend: str = "auto",
                 stream: StreamConfig | None = None, address: str | None = None, num_cpus: float = 1.0) -> None:
        if n_shards < 1:
            raise FleetConfigError(f"a fleet needs at least one shard, got {n_shards}")
        self.url = url
        self.n_shards = n_shards
        self.bundle = bundle
        self.backend = backend
        self.stream = stream or StreamConfig()
        self.address = address
        self.num_cpus = num_cpus
        self.actors: list[Any] = []
        self._own_ray = False

    def start(self, timeout: float = 120.0) -> RayFleet:
        ray = ray_module()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            self._own_ray = True
        actor = ray.remote(_ShardWorker).options(max_restarts=-1, max_task_retries=-1,
                                                 num_cpus=self.num_cpus, scheduling_strategy="SPREAD")
        stream = asdict(self.stream)
        self.actors = [actor.remote(self.url, k, self.n_shards, self.bundle, self.backend, stream)
                       for k in range(self.n_shards)]
        ray.get([a.where.remote() for a in self.actors], timeout=timeout)
        return self

    def placement(self) -> list[dict[str, Any]]:
        """Which node each shard runs on."""
        ray = ray_module()
        return list(ray.get([a.where.remote() for a in self.actors], timeout=60))

    def stats(self) -> list[dict[str, Any]]:
        ray = ray_module()
        return list(ray.get([a.stats.remote() for a in self.actors], timeout=60))

    def latencies(self) -> list[float]:
        ray = ray_module()
        return [x for part in ray.get([a.latencies.remote() for a in self.actors], timeout=60) for x in part]

    def kill_shard(self, k: int) -> None:
        """Kill shard ``k``'s actor as a dying node would (Ray restarts it)."""
        ray = ray_module()
        ray.kill(self.actors[k], no_restart=False)

    def close(self) -> list[dict[str, Any]]:
        ray = ray_module()
        out: list[dict[str, Any]] = []
        try:
            out = list(ray.get([a.close.remote() for a in self.actors], timeout=60))
        finally:
            for a in self.actors:
                ray.kill(a, no_restart=True)
            self.actors = []
            if self._own_ray:
                ray.shutdown()
        return out
