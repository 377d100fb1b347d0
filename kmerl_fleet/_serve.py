"""Model inference as a Ray Serve deployment (``--inference serve``), the alternative to scoring inside the
shard actors (``--inference actors``, the default; ``docs/fleet.md`` has the measurement behind the choice).

With ``serve``, a shard still cuts, quality-checks and preprocesses its devices' windows (its
:class:`~kmerl_edge.stream.Gateway` worker batches them across the shard's devices), but the backend call,
``run_windows``, goes to the ``KmerlScorer`` deployment: its replicas gather the calls of every shard with
``@serve.batch`` (calls with the same lead set are stacked into one backend call) and are autoscaled by
Serve (``autoscaling_config``: min/max replicas, target ongoing requests per replica).

Ray Serve is the ``fleet`` extra (``ray[serve]``), imported here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import FleetConfigError

__all__ = ["APP", "DEPLOYMENT", "INFERENCE_MODES", "ServeConfig", "ServeScoredClassifier", "deploy_scorer",
           "serve_module", "replica_count"]

APP = "kmerl-inference"
DEPLOYMENT = "KmerlScorer"
INFERENCE_MODES = ("actors", "serve")


def serve_module() -> Any:
    try:
        from ray import serve
    except ImportError:  # pragma: no cover - depends on the install
        raise FleetConfigError("--inference serve needs Ray Serve: pip install 'kmerl-edge[fleet]' "
                               "(ray[serve])") from None
    return serve


@dataclass(frozen=True)
class ServeConfig:
    """The scorer deployment: replicas between ``min_replicas`` and ``max_replicas``, Serve aiming at
    ``target_ongoing_requests`` per replica (a request is one shard's batch of windows); ``@serve.batch``
    gathers up to ``max_batch_size`` requests, waiting at most ``batch_wait_timeout_s`` for more."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 2.0
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.005
    num_cpus: float = 1.0
    threads: int = 1
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 10.0
    metrics_interval_s: float = 0.5
    look_back_period_s: float = 2.0
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise FleetConfigError(f"Serve replicas need 0 <= min <= max and max >= 1, got "
                                   f"{self.min_replicas}..{self.max_replicas}")
        if not self.target_ongoing_requests > 0 or self.max_batch_size < 1:
            raise FleetConfigError("target_ongoing_requests must be > 0 and max_batch_size >= 1")

    def autoscaling(self) -> dict[str, Any]:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas),
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": self.metrics_interval_s, "look_back_period_s": self.look_back_period_s}


def _score_requests(clf: Any, reqs: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]]) -> list[np.ndarray]:
    """One backend call per lead set (and options) for a batch of requests, split back per request."""
    out: list[np.ndarray | None] = [None] * len(reqs)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (x, ids, kw) in enumerate(reqs):
        opts = tuple(sorted((k, v) for k, v in kw.items() if k != "rhythm"))  # rhythm: per window, joined below
        groups.setdefault((tuple(int(v) for v in ids), x.shape[1:], opts), []).append(i)
    for members in groups.values():
        x0, ids, kw = reqs[members[0]]
        kw = {k: v for k, v in kw.items() if k != "rhythm"}
        if any(reqs[i][2].get("rhythm") is not None for i in members):
            kw["rhythm"] = [r for i in members
                            for r in (reqs[i][2].get("rhythm") or [None] * len(reqs[i][0]))]
        probs = clf.run_windows(np.concatenate([reqs[i][0] for i in members]), ids, **kw)
        a = 0
        for i in members:
            n = len(reqs[i][0])
            out[i] = probs[a : a + n]
            a += n
    return [p if p is not None else np.empty((0, 0)) for p in out]


def deploy_scorer(bundle: str | None, backend: str, config: ServeConfig) -> Any:
    """Start Serve on the connected Ray cluster (no HTTP proxy: shards call it through handles) and deploy
    the scorer; returns its handle."""
    serve = serve_module()
    cfg = config

    @serve.deployment(name=DEPLOYMENT, autoscaling_config=cfg.autoscaling(),
                      ray_actor_options={"num_cpus": cfg.num_cpus},
                      max_ongoing_requests=max(4, cfg.max_batch_size * 2))
    class KmerlScorer:
        def __init__(self) -> None:
            import kmerl_edge

            self.clf = kmerl_edge.load(bundle, backend=backend, threads=cfg.threads)
            self.batches: list[int] = []

        @serve.batch(max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s)
        async def score(self, reqs: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]]) -> list[np.ndarray]:
            self.batches.append(len(reqs))
            del self.batches[:-1000]
            return _score_requests(self.clf, reqs)

        async def __call__(self, windows: np.ndarray, lead_ids: np.ndarray, kw: dict[str, Any]) -> np.ndarray:
            return await self.score((windows, lead_ids, kw))

        def stats(self) -> dict[str, float]:
            b = self.batches
            return {"batches": len(b), "mean_requests_per_batch": float(np.mean(b)) if b else 0.0}

    serve.start(proxy_location="Disabled")
    deployment: Any = KmerlScorer  # a serve.Deployment (the decorator's return type is not seen by mypy)
    return serve.run(deployment.bind(), name=APP, route_prefix=None)


def replica_count() -> dict[str, int]:
    """The scorer's replicas by state (``RUNNING``, ``STARTING``, ``STOPPING`` ...)."""
    serve = serve_module()
    st = serve.status().applications.get(APP)
    if st is None or DEPLOYMENT not in st.deployments:
        return {}
    return {str(k): int(v) for k, v in st.deployments[DEPLOYMENT].replica_states.items()}


class ServeScoredClassifier:
    """A classifier whose ``run_windows`` is answered by the scorer deployment; everything else (the bundle,
    lead checks, score dictionaries) comes from the local classifier it wraps."""

    def __init__(self, classifier: Any, handle: Any, timeout_s: float = 30.0) -> None:
        self._clf = classifier
        self._handle = handle
        self._timeout = timeout_s

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._clf, name)

    def run_windows(self, windows: np.ndarray, lead_ids: np.ndarray, **kw: Any) -> np.ndarray:
        return np.asarray(self._handle.remote(np.ascontiguousarray(windows), np.asarray(lead_ids), kw)
                          .result(timeout_s=self._timeout))
