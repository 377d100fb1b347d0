"""``kmerl-edge fleet``: patches on an MQTT broker → gateway shards (in this process, or actors on Ray).

    kmerl-edge fleet --mqtt mqtt://broker:1883                       # one process serves every device
    kmerl-edge fleet --mqtt mqtt://broker:1883 --shard 0 --shards 4  # one of 4 shard processes
    kmerl-edge fleet --mqtt mqtt://broker:1883 --ray-address auto --shards 8
    KMERL_MQTT_PASSWORD=... kmerl-edge fleet --mqtt mqtts://kmerl-gateway@broker:8883 --mqtt-ca ca.pem

Results and events go back to the broker as JSON (``docs/fleet.md``); the summary goes to stdout on exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from kmerl_edge._errors import KmerlError

from ._errors import FleetConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kmerl-edge fleet",
                                description="serve patches publishing K-MERL frames on an MQTT broker")
    p.add_argument("--mqtt", required=True, metavar="URL",
                   help="the broker: mqtt://HOST[:PORT] (port 1883) or, with TLS, mqtts://[USER[:PW]@]HOST[:PORT] "
                        "(port 8883)")
    from firmware_bridge._mqtt import add_broker_args

    add_broker_args(p)
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="run the shards as actors on this Ray cluster ('auto': the one running here; "
                        "'local': start one in this process)")
    p.add_argument("--inference", choices=("actors", "serve"), default="actors",
                   help="with Ray: run the model in the shard actors (default: measured faster here, docs/fleet.md) "
                        "or in an autoscaled Ray Serve deployment with @serve.batch")
    p.add_argument("--serve-replicas", default="1:2", metavar="MIN:MAX",
                   help="with --inference serve: scorer replicas, autoscaled between MIN and MAX (default 1:2)")
    p.add_argument("--shards", type=int, default=None,
                   help="number of shards (default: 1 without Ray, 2 with Ray)")
    p.add_argument("--shard", type=int, default=0, help="without Ray: which shard this process serves")
    p.add_argument("--bundle", default=None, help="bundle directory (default: the bundle shipped in the package)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--hop", type=float, default=2.0, help="seconds between window results (default 2)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kmerl_edge._stream_types import StreamConfig

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stream = StreamConfig(hop_s=args.hop)
    summary: Any
    try:
        from firmware_bridge._mqtt import broker_config, broker_options

        broker = broker_config(args.mqtt, **broker_options(args))
        if args.ray_address is None:
            if args.inference != "actors":
                raise FleetConfigError("--inference serve needs Ray: --ray-address auto (or local)")
            import kmerl_edge

            from ._shard import FleetShard, ShardConfig

            n = args.shards or 1
            clf = kmerl_edge.load(args.bundle, backend=args.backend)
            shard = FleetShard(clf, ShardConfig(broker, shard=args.shard, n_shards=n, stream=stream)).start()
            print(f"kmerl-edge fleet: shard {args.shard} of {n} serving {broker.display}", file=sys.stderr,
                  flush=True)
            try:
                stop.wait(args.duration)
            except KeyboardInterrupt:
                pass
            shard.close()
            summary = shard.gateway_stats()
        else:
            from ._ray import RayFleet
            from ._serve import ServeConfig

            n = args.shards or 2
            address = None if args.ray_address == "local" else args.ray_address
            try:
                lo, hi = (int(v) for v in args.serve_replicas.split(":"))
            except ValueError:
                raise FleetConfigError(f"--serve-replicas is MIN:MAX, got {args.serve_replicas!r}") from None
            rf = RayFleet(broker, n, bundle=args.bundle, backend=args.backend, stream=stream, address=address,
                          inference=args.inference, serve=ServeConfig(min_replicas=lo, max_replicas=hi)).start()
            print(f"kmerl-edge fleet: {n} shards on Ray serving {broker.display}", file=sys.stderr, flush=True)
            try:
                stop.wait(args.duration)
            except KeyboardInterrupt:
                pass
            summary = rf.close()
    except KmerlError as exc:
        print(f"kmerl-edge fleet: error: {exc}", file=sys.stderr)
        return 2
    from kmerl_edge._jsonout import dumps

    print(dumps(summary) if args.json else json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
