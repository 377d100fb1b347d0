"""Fleet benchmark (``kmerl-bench fleet``): patches sustained in real time over MQTT on a local Ray cluster
with 1 and 2 worker nodes, against the in-process :class:`kmerl_edge.stream.Gateway` in the same run.

Every configuration uses the same signal (the demo recording, CPSC2021 data_101_8, lead I at 200 Hz, each
patch from its own offset, looped) and the same 2-s hop. The fleet runs are end to end: N virtual patches
(:class:`firmware_bridge._mqtt.MqttPatchFleet`, one MQTT client each, 50-sample frames) publish to a real
Mosquitto broker started for the run; shard actors on the Ray nodes decode, score and publish JSON results;
a listener receives them. The **latency** of a window is from the moment the frame holding its last sample
was published to the moment its result was received over MQTT. The first 8 s of every patch are sent at
once (as the gateway benchmark pre-pushes them), so the first window completes with the first paced frame;
patches start at random phases within one hop (as the gateway benchmark's do), so windows do not all
complete in the same instant.

N patches are **sustained** when every expected window arrived, none was dropped (ingest or inference
backlog) and the window latency p99 is ≤ 250 ms. Each configuration tries the sizes in ascending order until
one is not sustained. Patches, broker, listener and Ray nodes all share this machine's CPUs, so the numbers
are a lower bound of what a dedicated node does; the JSON records the machine and its load average.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bench_fleet_run", "run_fleet", "fleet_markdown"]

FS = 200.0
HOP_S = 2.0


@dataclass(frozen=True)
class Wire:
    """How each party reaches the broker: devices (``url`` with ``device_password``, ``{device}`` their id,
    and ``ca``), the shards (``gateway``) and the listener (``monitor``). Plain: everything is ``url``."""

    url: str
    gateway: Any = None
    monitor: Any = None
    device_password: str | None = None
    ca: str | None = None

    def shards(self) -> Any:
        return self.gateway or self.url

    def listener(self) -> Any:
        return self.monitor or self.url


def _wire(w: str | Wire) -> Wire:
    return w if isinstance(w, Wire) else Wire(w)


def _broker(tls_devices: Sequence[str] = ()) -> Any:
    """A Mosquitto on a free loopback port for the run (the same helper the tests use). With
    ``tls_devices``: TLS, a password per account and the per-device ACL of docs/fleet.md (``kmerl-gateway``
    for the shards, ``kmerl-monitor`` for the listener, each device as itself)."""
    import shutil
    import socket
    import subprocess
    import tempfile

    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        raise RuntimeError("kmerl-bench fleet needs Mosquitto (apt-get install mosquitto)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    d = Path(tempfile.mkdtemp(prefix="kmerl-bench-mosquitto-"))
    wire: str | Wire = f"mqtt://127.0.0.1:{port}"
    if tls_devices:
        from firmware_bridge._mqtt import broker_config

        from ._mqtt_security import make_pki, secure_broker_conf

        pki = make_pki(d)
        users = {"kmerl-gateway": "gw-bench", "kmerl-monitor": "mon-bench", **{x: f"pw-{x}" for x in tls_devices}}
        (d / "m.conf").write_text(secure_broker_conf(d, port, users, pki, extra="max_queued_messages 1000000\n"))
        url = f"mqtts://127.0.0.1:{port}"
        ca = str(pki["ca"])
        wire = Wire(url, broker_config(url, username="kmerl-gateway", password="gw-bench", ca_file=ca),
                    broker_config(url, username="kmerl-monitor", password="mon-bench", ca_file=ca), "pw-{device}", ca)
    else:
        (d / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                                  "log_dest none\nmax_queued_messages 1000000\n")
    proc = subprocess.Popen([exe, "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    return proc, wire, d


class _Listener:
    def __init__(self, url: Any) -> None:
        import json
        import threading

        from firmware_bridge._mqtt import mqtt_client, parse_mqtt_url

        host, port = parse_mqtt_url(url)
        self.got: dict[str, list[tuple[float, float, bool, str | None]]] = defaultdict(list)
        ready = threading.Event()
        c = mqtt_client(f"kmerl-bench-listener-{os.getpid()}", url)

        def on_connect(client: Any, *_: Any) -> None:
            client.subscribe("kmerl/v1/+/results", qos=1)
            ready.set()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if msg.retain:  # a device's latest result from an earlier run, kept by the broker
                return
            now = time.time()
            doc = json.loads(msg.payload)
            self.got[doc["device_id"]].append((now, float(doc["t_end"]), bool(doc["skipped"]), doc["reason"]))

        c.on_connect = on_connect
        c.on_message = on_message
        c.connect_async(host, port)
        c.loop_start()
        ready.wait(10)
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def bench_fleet_run(url: str | Wire, n_patches: int, duration_s: float, record: str,
                    cpu: Any = None) -> dict[str, Any]:
    """N patches publishing for ``duration_s`` wall seconds (after an 8-s burst) to fleet shards already
    serving ``url``; returns latency and completeness."""
    from firmware_bridge._mqtt import MqttFleetConfig, MqttPatchFleet

    cpu0 = cpu() if cpu is not None else None
    wire = _wire(url)
    lis = _Listener(wire.listener())
    burst = 10.0 - HOP_S
    seconds = burst + duration_s
    fleet = MqttPatchFleet(MqttFleetConfig(url=wire.url, password=wire.device_password, ca_file=wire.ca,
                                           record=record, leads=("I",), fs=FS, devices=n_patches,
                                           prefix=f"b{n_patches}", seconds=seconds, loop=True,
                                           frame_samples=50, burst_s=burst, lead_s=2.0, info_every_s=60.0,
                                           stagger_s=HOP_S))
    t0 = time.monotonic()
    fleet.start(timeout=60)
    fleet.wait(seconds + 60)
    time.sleep(1.5)  # the last windows' results
    wall = time.monotonic() - t0
    fleet.close()
    lis.close()
    cpu_use: dict[str, Any] = {}
    if cpu is not None and cpu0 is not None:  # CPU seconds used by each part during the run, not wall shares
        cpu1 = cpu()
        cpu_use = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1}
        shard_s = cpu_use.get("shards", 0.0)
        cpu_use["wall_s"] = round(wall, 2)
        # what one core fully given to shards would carry at this per-patch cost (the load generator, broker
        # and listener excluded: they are measured apart)
        cpu_use["patches_per_shard_core"] = round(n_patches * wall / shard_s, 1) if shard_s > 0 else None
    lat: list[float] = []
    missing = 0
    skipped: dict[str, int] = defaultdict(int)
    expected = int((seconds - 10.0) // HOP_S) + 1
    for d in fleet.device_ids:
        pub = fleet.publish_times[d]
        rows = lis.got.get(d, [])
        missing += max(0, expected - len(rows))
        for recv, t_end, was_skipped, reason in rows:
            if was_skipped:
                skipped[str(reason)] += 1
                continue
            sent = pub.get(int(round(t_end * FS)))
            if sent is not None and t_end > burst + 1e-6 + HOP_S:  # windows completed by paced frames
                lat.append((recv - sent) * 1e3)
    arr = np.asarray(lat) if lat else np.asarray([np.nan])
    p99 = float(np.percentile(arr, 99))
    ok = missing == 0 and not skipped and p99 <= 250.0 and fleet.stats["not_sent"] == 0
    return {
        "patches": n_patches,
        "wall_s": round(wall, 2),
        "windows_expected": expected * n_patches,
        "windows_received": sum(len(v) for v in lis.got.values()),
        "missing": missing,
        "skipped": dict(skipped),
        "latency_ms_median": round(float(np.median(arr)), 2),
        "latency_ms_p99": round(p99, 2),
        "latency_ms_max": round(float(np.max(arr)), 2),
        "frames_published": fleet.stats["published"],
        "frames_not_sent": fleet.stats["not_sent"],
        "real_time": bool(ok),
        **({"cpu_s": cpu_use} if cpu_use else {}),
    }


def _ascending(run: Any, patches: Sequence[int]) -> tuple[int, list[dict[str, Any]]]:
    best, runs = 0, []
    for n in sorted(patches):
        try:
            r = run(int(n))
        except Exception as exc:  # noqa: BLE001 - a size that cannot even start is not sustained
            r = {"patches": int(n), "real_time": False, "error": f"{type(exc).__name__}: {exc}"}
        runs.append(r)
        if not r["real_time"]:
            break
        best = max(best, int(n))
    return best, runs


def pin_plan(n_cpus: int | None = None) -> tuple[set[int], list[int]] | None:
    """``--pin``: the load side (patch simulator, listener, broker, Ray head) on core 0, worker nodes on the
    other cores in turn (on a 2-core machine every node shares core 1). ``None`` with fewer than 2 cores."""
    cores = sorted(os.sched_getaffinity(0)) if n_cpus is None else list(range(n_cpus))
    if len(cores) < 2:
        return None
    return {cores[0]}, cores[1:]


def _cluster(k: int, cpus_per_node: float, node_cores: list[int] | None = None) -> Any:
    """A head (no CPUs) and ``k`` worker nodes; with ``node_cores`` node ``i`` (its raylet and every worker it
    starts: they inherit the affinity of the process that spawned them) runs on core
    ``node_cores[i % len(node_cores)]`` only."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    mine = os.sched_getaffinity(0)
    try:
        for i in range(k):
            if node_cores:
                os.sched_setaffinity(0, {node_cores[i % len(node_cores)]})
            cluster.add_node(num_cpus=cpus_per_node)
    finally:
        os.sched_setaffinity(0, mine)
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def _serve_config(k: int) -> Any:
    from kmerl_fleet._serve import ServeConfig

    # one scorer replica per node at most; as many shards' calls as arrive within 5 ms batched together
    return ServeConfig(min_replicas=1, max_replicas=k, target_ongoing_requests=2.0, max_batch_size=16,
                       batch_wait_timeout_s=0.005, num_cpus=1.0)


def run_fleet(bundle: Path, *, backend: str, threads: int, patches: Sequence[int], duration_s: float,
              nodes: Sequence[int] = (1, 2), inference: Sequence[str] = ("actors", "serve"),
              gateway: bool = True, autoscale: bool = False, autoscale_patches: int = 200,
              pin: bool = False, tls: bool = False) -> dict[str, Any]:
    """The in-process gateway, then the MQTT + Ray fleet on a local cluster of 1 and 2 worker nodes (one
    shard each), for each way of running the model: ``actors`` (in the shard actor) and ``serve`` (a Ray Serve
    deployment with ``@serve.batch``, at most one replica per node). With ``autoscale``: the Serve scorer's
    replica count over time, idle → ``autoscale_patches`` patches → idle. With ``pin`` (:func:`pin_plan`): the
    load side on core 0, the nodes (and the in-process gateway) on the other cores."""
    import kmerl_edge
    from kmerl_edge.stream import demo_record_path

    from ._stats import machine_info
    from .stream_gateway import bench_gateway

    out: dict[str, Any] = {"kind": "fleet", "machine": machine_info(threads), "bundle": str(bundle),
                           "load_average_at_start": list(os.getloadavg()), "niceness": os.nice(0),
                           "criterion": "all windows arrived, none dropped, window latency p99 <= 250 ms"}
    plan = pin_plan() if pin else None
    if pin:
        out["pinning"] = ({"load_cores": sorted(plan[0]), "node_cores": plan[1]} if plan
                          else "not pinned: fewer than 2 cores")
    mine = os.sched_getaffinity(0)
    if gateway:
        clf = kmerl_edge.load(bundle, backend=backend, threads=threads)
        if plan:  # the gateway process on the nodes' cores: the same compute as one node
            os.sched_setaffinity(0, set(plan[1]))
        try:
            best, runs = _ascending(lambda n: bench_gateway(clf, n, duration_s), patches)
        finally:
            os.sched_setaffinity(0, mine)
        out["gateway"] = {"max_sustained": best, "runs": runs, "load_average_after": list(os.getloadavg())}
    if plan:
        os.sched_setaffinity(0, plan[0])  # this process is the load side: simulator and listener

    try:
        import ray
    except ImportError:
        out["status"] = "partial"
        out["reason"] = "Ray is not installed (pip install 'kmerl-edge[fleet]')"
        return out
    from kmerl_edge._stream_types import StreamConfig
    from kmerl_fleet._ray import RayFleet

    record = str(demo_record_path())
    sizes = sorted({*patches, 10, autoscale_patches})
    proc, url, tmp = _broker([f"b{n}-{i}" for n in sizes for i in range(n)] if tls else ())
    out["wire"] = ("TLS 1.2+ with a password per account and the per-device ACL (docs/fleet.md)" if tls
                   else "plain TCP, anonymous")
    if plan:
        os.sched_setaffinity(proc.pid, plan[0])
    try:
        for mode in inference:
            for k in nodes:
                # logical CPUs: a shard and a scorer replica per node
                cluster = _cluster(k, 2.0, plan[1] if plan else None)
                rf = RayFleet(_wire(url).shards(), k, bundle=str(bundle), backend=backend, inference=mode,
                              serve=_serve_config(k),
                              stream=StreamConfig(hop_s=HOP_S, queue_size=4096, max_batch=128)).start()

                def cpu(rf: Any = rf) -> dict[str, float]:
                    return {"shards": sum(rf.cpu_seconds()), "broker": _proc_cpu_s(proc.pid),
                            "simulator_and_listener": time.process_time()}

                try:
                    # a short run first, discarded: the shards' first windows pay imports and backend warm-up
                    out.setdefault("warmups", {})[f"{mode}_{k}"] = bench_fleet_run(url, 10, 2.0, record)["real_time"]
                    best, runs = _ascending(lambda n: bench_fleet_run(url, n, duration_s, record, cpu), patches)
                    shard_stats = rf.stats()
                    scorer = rf.scorer_stats()
                    replicas = rf.replicas()
                finally:
                    rf.close()
                    ray.shutdown()
                    cluster.shutdown()
                key = f"ray_{k}_node" + ("" if mode == "actors" else f"_{mode}")
                out[key] = {"inference": mode, "nodes": k, "max_sustained": best, "runs": runs,
                            "load_average_after": list(os.getloadavg()),
                            "shards": [{k2: s[k2] for k2 in ("shard", "devices", "mean_batch", "frames",
                                                              "ingest_dropped", "worker_busy_s")}
                                       for s in shard_stats]}
                if mode == "serve":
                    out[key]["scorer"] = scorer
                    out[key]["replicas_at_end"] = replicas
        if autoscale:
            out["autoscale"] = autoscale_timeline(url, bundle, backend, record, autoscale_patches, duration_s)
    finally:
        os.sched_setaffinity(0, mine)
        proc.terminate()
        proc.wait(10)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    g = out.get("gateway", {}).get("max_sustained", 0)
    ratios: dict[str, float | None] = {}
    for mode in inference:
        suffix = "" if mode == "actors" else f"_{mode}"
        one = out.get(f"ray_1_node{suffix}", {}).get("max_sustained", 0)
        two = out.get(f"ray_2_node{suffix}", {}).get("max_sustained", 0)
        ratios[f"ray_1_node{suffix}_over_gateway"] = round(one / g, 3) if g and one else None
        ratios[f"scaling_2_over_1_node{suffix}"] = round(two / one, 3) if one and two else None
    out["ratios"] = ratios
    out["load_average_at_end"] = list(os.getloadavg())
    out["status"] = "ok"
    return out


def autoscale_timeline(url: str | Wire, bundle: Path, backend: str, record: str, n_patches: int, load_s: float,
                       idle_s: float = 25.0, n_shards: int = 4, max_replicas: int = 3) -> dict[str, Any]:
    """The Serve scorer's replicas, sampled every 0.5 s: idle, then ``n_patches`` patches for ``load_s`` wall
    seconds (plus the 8-s burst), then idle for ``idle_s``. ``n_shards`` shards (each at most one request in
    flight) and a low ``target_ongoing_requests`` so that one machine's load is enough to ask for replicas."""
    import threading

    import ray

    from kmerl_edge._stream_types import StreamConfig
    from kmerl_fleet._ray import RayFleet
    from kmerl_fleet._serve import ServeConfig

    cfg = ServeConfig(min_replicas=1, max_replicas=max_replicas, target_ongoing_requests=0.25, max_batch_size=16,
                      batch_wait_timeout_s=0.005, num_cpus=1.0, upscale_delay_s=2.0, downscale_delay_s=8.0,
                      metrics_interval_s=0.5, look_back_period_s=2.0)
    cluster = _cluster(1, float(max_replicas + 1))
    rf = RayFleet(_wire(url).shards(), n_shards, bundle=str(bundle), backend=backend, inference="serve", serve=cfg,
                  num_cpus=1.0 / n_shards, stream=StreamConfig(hop_s=HOP_S, queue_size=4096, max_batch=128)).start()
    timeline: list[dict[str, Any]] = []
    phase = {"now": "idle"}
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(0.5):
            try:
                reps = rf.replicas()
            except Exception as exc:  # noqa: BLE001 - a failed sample is recorded, not fatal
                reps = {"error": 1}
                _ = exc
            timeline.append({"t": round(time.monotonic() - t0, 1), "phase": phase["now"],
                             "running": reps.get("RUNNING", 0), "states": reps})

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    run: dict[str, Any] = {}
    try:
        time.sleep(3.0)
        phase["now"] = "load"
        run = bench_fleet_run(url, n_patches, load_s, record)
        phase["now"] = "idle after"
        time.sleep(idle_s)
    finally:
        stop.set()
        th.join(5)
        scorer = rf.scorer_stats()
        rf.close()
        ray.shutdown()
        cluster.shutdown()

    def running(ph: str) -> list[int]:
        return [int(r["running"]) for r in timeline if r["phase"] == ph]

    peak: dict[str, Any] = (max(timeline, key=lambda r: int(r["running"])) if timeline
                            else {"t": None, "phase": None, "running": 0})
    load_t = [r["t"] for r in timeline if r["phase"] == "load"]
    return {"config": {**cfg.autoscaling(), "shards": n_shards, "patches": n_patches, "load_s": load_s,
                       "idle_s": idle_s},
            "replicas_idle_before": max(running("idle") or [0]),
            "replicas_max_under_load": max(running("load") or [0]),
            "replicas_at_end": (running("idle after") or [0])[-1],
            "replicas_peak": int(peak["running"]), "peak_at_s": peak["t"], "peak_phase": peak["phase"],
            "load_from_s": load_t[0] if load_t else None, "load_to_s": load_t[-1] if load_t else None,
            "run": run, "scorer": scorer, "timeline": timeline,
            "load_average_after": list(os.getloadavg())}


def fleet_markdown(res: dict[str, Any]) -> str:
    """A table: configuration × patches → sustained, latency median / p99, windows."""
    lines = ["## Fleet: patches sustained in real time (1 lead, 200 Hz, 2-s hop)", "",
             f"criterion: {res.get('criterion', '')}; load average at start "
             f"{res.get('load_average_at_start')}, niceness {res.get('niceness')}; wire: {res.get('wire', '?')}; "
             f"pinning: {res.get('pinning', 'none')}", "",
             "| configuration | patches | real time | latency median ms | p99 ms | windows | dropped/missing |",
             "| --- | ---: | :---: | ---: | ---: | ---: | ---: |"]
    keys = ["gateway"] + sorted(k for k in res if k.startswith("ray_") and isinstance(res[k], dict))
    for key in keys:
        part = res.get(key)
        if not part:
            continue
        for r in part["runs"]:
            lost = r.get("dropped", r.get("missing", 0))
            windows = r.get("windows", r.get("windows_received"))
            lines.append(f"| {key} | {r['patches']} | {'yes' if r['real_time'] else 'no'} | "
                         f"{r.get('latency_ms_median', r.get('error', ''))} | {r.get('latency_ms_p99', '')} | "
                         f"{windows} | {lost} |")
        lines.append(f"| **{key} max sustained** | **{part['max_sustained']}** | | | | | |")
    for key in keys:
        if res.get(key, {}).get("scorer"):
            lines += ["", f"{key}: Serve scorer {res[key]['scorer']}, replicas at end {res[key].get('replicas_at_end')}"]
    if "ratios" in res:
        lines += ["", f"ratios: {res['ratios']}"]
    a = res.get("autoscale")
    if a:
        lines += ["", "### Serve autoscaling (replicas sampled every 0.5 s)", "",
                  f"config: {a['config']}", "",
                  f"replicas idle before: {a['replicas_idle_before']}, max under load: "
                  f"{a['replicas_max_under_load']}, peak {a.get('replicas_peak')} at {a.get('peak_at_s')} s "
                  f"(load from {a.get('load_from_s')} to {a.get('load_to_s')} s), at the end of the idle period after: {a['replicas_at_end']}; "
                  f"the load run: real time {a['run'].get('real_time')}, p99 {a['run'].get('latency_ms_p99')} ms", "",
                  "timeline (s: phase running): " + ", ".join(
                      f"{r['t']}: {r['phase']} {r['running']}" for r in a["timeline"][::4])]
    if res.get("reason"):
        lines += ["", f"note: {res['reason']}"]
    return "\n".join(lines) + "\n"
