"""The fleet gateway on Ray: one actor per shard, placed by Ray across the cluster's nodes.

- **Device affinity.** A device belongs to shard ``shard_of(device_id, n_shards)`` and only that shard's
  actor subscribes to its frames, so every frame of a device reaches the same session. The MQTT
  subscription is sharded the same way: no process reads every device's traffic (each reads only the
  tiny retained ``info`` documents of the others).
- **Batched inference.** Each actor runs a :class:`kmerl_edge.stream.Gateway` whose worker batches windows
  across the shard's devices (windows with the same lead set go into one backend call). With
  ``inference="actors"`` (the default) the backend runs in the shard actor: no window crosses the network.
  With ``inference="serve"`` the backend call goes to a Ray Serve deployment (:mod:`kmerl_fleet._serve`:
  ``@serve.batch`` across shards, autoscaled replicas).
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
from kmerl_edge._errors import KmerlError
from kmerl_edge._stream_types import StreamConfig

from ._errors import FleetConfigError
from ._serve import INFERENCE_MODES, ServeConfig

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
                 stream: dict[str, Any], inference: str = "actors", request_timeout_s: float = 30.0) -> None:
        import kmerl_edge

        from ._shard import FleetShard, ShardConfig

        clf: Any = kmerl_edge.load(bundle, backend=backend)
        if inference == "serve":
            from ._serve import APP, DEPLOYMENT, ServeScoredClassifier, serve_module

            handle = serve_module().get_deployment_handle(DEPLOYMENT, app_name=APP)
            clf = ServeScoredClassifier(clf, handle, request_timeout_s)
        cfg = ShardConfig(url, shard=shard, n_shards=n_shards, stream=StreamConfig(**stream))
        self.started = time.time()
        self.error: Exception | None = None
        try:
            self.shard = FleetShard(clf, cfg).start()
        except KmerlError as exc:  # a refused login, a TLS mistake: kept and raised by where(), whose error
            self.error = exc  # carries the exception itself (a failed constructor only gives Ray a message)

    def where(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        ray = ray_module()
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "shard": self.shard.config.shard, "started": self.started}

    def cpu_s(self) -> float:
        """CPU seconds this shard's process has used (all its threads: MQTT, decoding, inference)."""
        return time.process_time()

    def scorer_stats(self) -> dict[str, Any]:
        from ._serve import APP, DEPLOYMENT, serve_module

        h = serve_module().get_deployment_handle(DEPLOYMENT, app_name=APP)
        return dict(h.stats.remote().result(timeout_s=30))

    def stats(self) -> dict[str, Any]:
        return {**self.shard.gateway_stats(), "shard": self.shard.config.shard, "devices_owned": self.shard.devices}

    def latencies(self) -> list[float]:
        return [x for s in self.shard.gateway.sessions.values() for x in s.latencies()]

    def close(self) -> dict[str, Any]:
        if self.error is not None:
            return {"shard": None, "error": str(self.error)}
        self.shard.close()
        return self.stats()


def _kmerl_cause(exc: BaseException) -> BaseException | None:
    """The project's error that made a Ray task fail, if any: Ray raises a ``RayTaskError`` that holds the
    original exception as ``cause``."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        cause = getattr(seen, "cause", None)
        if isinstance(cause, KmerlError):
            return cause
        if isinstance(seen, KmerlError) and cause is None:
            return seen
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    return None


class RayFleet:
    """``n_shards`` shard actors on the Ray cluster at ``address`` (``None``: a local one; ``"auto"``: the
    running cluster). ``start()`` waits until every shard is connected to the broker."""

    def __init__(self, url: str | BrokerConfig, n_shards: int, *, bundle: str | None = None, backend: str = "auto",
                 stream: StreamConfig | None = None, address: str | None = None, num_cpus: float = 1.0,
                 inference: str = "actors", serve: ServeConfig | None = None) -> None:
        if n_shards < 1:
            raise FleetConfigError(f"a fleet needs at least one shard, got {n_shards}")
        if inference not in INFERENCE_MODES:
            raise FleetConfigError(f"inference is one of {', '.join(INFERENCE_MODES)}, got {inference!r}")
        self.inference = inference
        self.serve = serve or ServeConfig()
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
        if self.inference == "serve":
            from ._serve import deploy_scorer

            deploy_scorer(self.bundle, self.backend, self.serve)
        actor = ray.remote(_ShardWorker).options(max_restarts=-1, max_task_retries=-1,
                                                 num_cpus=self.num_cpus, scheduling_strategy="SPREAD")
        stream = asdict(self.stream)
        self.actors = [actor.remote(self.url, k, self.n_shards, self.bundle, self.backend, stream, self.inference,
                                    self.serve.request_timeout_s)
                       for k in range(self.n_shards)]
        try:
            ray.get([a.where.remote() for a in self.actors], timeout=timeout)
        except Exception as exc:
            cause = _kmerl_cause(exc)
            try:
                self.close()
            except Exception:  # noqa: BLE001 - the start error is the one to report
                pass
            if cause is not None:  # a shard's named error (a refused login, a TLS mistake): say it as it is
                raise cause from None
            raise
        return self

    def scorer_stats(self) -> dict[str, float]:
        """With ``inference="serve"``: one replica's ``@serve.batch`` counters (batches, requests per batch)."""
        if self.inference != "serve" or not self.actors:
            return {}
        # asked from a shard actor: a handle in the driver would leave a router thread behind after shutdown
        ray = ray_module()
        return dict(ray.get(self.actors[0].scorer_stats.remote(), timeout=60))

    def replicas(self) -> dict[str, int]:
        """With ``inference="serve"``: the scorer's replicas by state."""
        from ._serve import replica_count

        return replica_count() if self.inference == "serve" else {}

    def placement(self) -> list[dict[str, Any]]:
        """Which node each shard runs on."""
        ray = ray_module()
        return list(ray.get([a.where.remote() for a in self.actors], timeout=60))

    def cpu_seconds(self) -> list[float]:
        """CPU seconds used so far by each shard actor's process."""
        ray = ray_module()
        return [float(x) for x in ray.get([a.cpu_s.remote() for a in self.actors], timeout=60)]

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
            if self.inference == "serve":
                from ._serve import APP, serve_module

                try:
                    serve_module().delete(APP)
                except Exception:  # noqa: BLE001 - closing must not fail
                    pass
            if self._own_ray:
                ray.shutdown()
        return out
