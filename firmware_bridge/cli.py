"""``kmerl-bridge``: the virtual patch (``simulate``) and a frame dumper for firmware bring-up (``dump``).

Errors a user can cause print one line and exit with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from kmerl_edge._errors import KmerlError
from kmerl_edge._leads import parse_leads

from ._events import DeviceInfo, Event, GapEvent, LinkEvent, SampleBlock, StatusEvent
from ._transport import PROTOCOLS, open_source

__all__ = ["main", "format_event", "reader_message"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _build() -> argparse.ArgumentParser:
    p = _Parser(prog="kmerl-bridge", description="K-MERL patch firmware bridge")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("simulate", help="stream a real recording through a pty, as a patch would")
    s.add_argument("record", help="WFDB record or .mat/.hea (path without or with extension)")
    s.add_argument("--protocol", choices=PROTOCOLS, default="kmerl")
    s.add_argument("--leads", required=True, help="comma-separated leads, e.g. I,II,V2")
    s.add_argument("--lead-map", default=None,
                   help="which standard lead each ECG channel of unknown position is, e.g. 'ECG 1=I,MCL1=V1'")
    s.add_argument("--fs", type=float, required=True, help="the patch's sampling rate in Hz (record is resampled)")
    s.add_argument("--speed", type=float, default=1.0, help="real-time factor (default 1)")
    s.add_argument("--drop-rate", type=float, default=0.0, help="probability a frame/line is dropped")
    s.add_argument("--corrupt-rate", type=float, default=0.0, help="probability a frame/line gets a bit flip")
    s.add_argument("--unplug-after", type=float, default=None, metavar="S", help="pull the cable after S s")
    s.add_argument("--unplug-for", type=float, default=1.0, metavar="S", help="stay unplugged S s (default 1)")
    s.add_argument("--frame-samples", type=int, default=10, help="samples per lead per frame (default 10)")
    s.add_argument("--format", choices=("int16", "int24"), default="int16", dest="sample_format")
    s.add_argument("--lsb-uv", type=float, default=1.0, help="µV per LSB (default 1)")
    s.add_argument("--seconds", type=float, default=None, help="stream only the first S seconds of the record")
    s.add_argument("--loop", action="store_true", help="repeat the recording forever")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--link", default=None, help="path of the port symlink (default: a temp dir)")
    s.add_argument("--start-now", action="store_true",
                   help="stream at once instead of waiting for a reader (what is sent before one attaches is lost, "
                        "and reported)")
    s.add_argument("--mqtt", default=None, metavar="URL",
                   help="publish frames to an MQTT broker (mqtt://HOST:1883, or mqtts://[USER[:PW]@]HOST:8883 "
                        "for TLS) instead of a pty: kmerl/v1/<device>/frames (extra 'fleet'; docs/fleet.md). "
                        "A password without a user name: each device logs in as its own id; '{device}' in "
                        "either is replaced by the device id")
    s.add_argument("--devices", type=int, default=1, help="with --mqtt: this many patches, each from its own offset")
    s.add_argument("--prefix", default="patch", help="with --mqtt: device ids are PREFIX-0, PREFIX-1, ...")
    s.add_argument("--disconnect-after", type=float, default=None, metavar="S",
                   help="with --mqtt: the first --disconnect-devices devices leave the broker after S device seconds")
    s.add_argument("--disconnect-for", type=float, default=2.0, metavar="S",
                   help="with --mqtt: and stay away S device seconds, sampling on (default 2)")
    s.add_argument("--disconnect-devices", type=int, default=1, metavar="N")
    s.add_argument("--stagger", type=float, default=0.0, metavar="S",
                   help="with --mqtt: devices start at random times within S wall seconds (default 0)")
    from ._mqtt import add_broker_args

    add_broker_args(s)

    d = sub.add_parser("dump", help="print decoded frames and fault counters of a port")
    _common = (p, s, d)
    d.add_argument("port", help="device path or pyserial URL (loop://, socket://host:port, rfc2217://...)")
    d.add_argument("--protocol", choices=PROTOCOLS, default="kmerl")
    d.add_argument("--fs", type=float, default=None, help="sampling rate (required for ascii)")
    d.add_argument("--leads", default=None, help="leads (required for ascii)")
    d.add_argument("--baud", type=int, default=115200)
    d.add_argument("--mv-per-unit", type=float, default=1.0, help="ascii: mV per printed unit (default 1)")
    d.add_argument("--offset", type=float, default=0.0, help="ascii: value printed for 0 mV (default 0)")
    d.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    d.add_argument("--no-reconnect", action="store_true", help="exit when the port goes away")
    d.add_argument("--quiet", action="store_true", help="print only the counters")
    d.add_argument("--json", action="store_true", help="print the counters as JSON")
    from kmerl_edge._cli_common import add_common_args

    add_common_args(_common[0], prog="kmerl-bridge", subparsers=list(_common[1:]))
    return p


def format_event(ev: Event) -> str:
    """One line describing an event, as ``kmerl-bridge dump`` prints it."""
    if isinstance(ev, SampleBlock):
        lo = float(ev.data.min()) if ev.data.size else 0.0
        hi = float(ev.data.max()) if ev.data.size else 0.0
        return (f"SAMPLES seq={ev.seq} t0={ev.t0:.4f}s tick={ev.tick} leads={','.join(ev.leads)} "
                f"n={ev.n_samples} fs={ev.fs:g} range=[{lo:.3f}, {hi:.3f}] mV")
    if isinstance(ev, GapEvent):
        return f"GAP n={ev.n_samples} t0={ev.t0:.4f}s tick={ev.tick} reason={ev.reason}"
    if isinstance(ev, StatusEvent):
        batt = "?" if ev.battery_pct is None else f"{ev.battery_pct}%"
        flags = [n for n, v in (("saturated", ev.saturated), ("low-battery", ev.low_battery),
                                ("charging", ev.charging)) if v]
        return (f"STATUS seq={ev.seq} t0={ev.t0:.4f}s lead_off={','.join(ev.lead_off) or '-'} battery={batt}"
                + (f" flags={','.join(flags)}" if flags else ""))
    if isinstance(ev, DeviceInfo):
        dev = "?" if ev.device_id is None else f"0x{ev.device_id:08X}"
        return (f"INFO device={dev} model={ev.model or '?'} fw={ev.firmware or '?'} protocol={ev.protocol} "
                f"leads={','.join(ev.leads)} fs={ev.fs:g} lsb={ev.mv_per_lsb * 1000:g}uV format={ev.sample_format}"
                + (" (inferred)" if ev.inferred else ""))
    if isinstance(ev, LinkEvent):
        return f"LINK {'connected' if ev.connected else 'lost'} {ev.port} ({ev.detail})"
    return repr(ev)


def reader_message(tick: int, lost: int, fs: float) -> str:
    """What ``simulate`` prints when a reader attaches (and how many samples per lead it missed)."""
    msg = f"reader attached at device time {tick / fs:.2f} s: streaming"
    if lost:
        msg += f"; {lost} samples per lead sent before it were lost"
    return msg


def _simulate_mqtt(args: argparse.Namespace) -> int:
    from ._errors import BridgeConfigError
    from ._mqtt import MqttFleetConfig, MqttPatchFleet

    if args.protocol != "kmerl":
        raise BridgeConfigError("--mqtt publishes K-MERL frames: --protocol ascii is for serial lines only")
    cfg = MqttFleetConfig(
        url=args.mqtt, record=args.record, leads=parse_leads(args.leads), fs=args.fs, devices=args.devices,
        prefix=args.prefix, speed=args.speed, seconds=args.seconds, loop=args.loop,
        frame_samples=args.frame_samples, lsb_pv=int(round(args.lsb_uv * 1e6)), drop_rate=args.drop_rate,
        corrupt_rate=args.corrupt_rate, disconnect_after_s=args.disconnect_after,
        disconnect_for_s=args.disconnect_for, disconnect_devices=args.disconnect_devices, seed=args.seed,
        stagger_s=args.stagger, username=args.mqtt_username, password=args.mqtt_password, ca_file=args.mqtt_ca,
        cert_file=args.mqtt_cert, key_file=args.mqtt_key,
    )
    fleet = MqttPatchFleet(cfg)
    signal.signal(signal.SIGTERM, lambda *_: fleet.stop())
    fleet.start()
    print(f"{cfg.devices} patch(es) publishing to {fleet.broker.display} as {fleet.device_ids[0]}"
          + (f" .. {fleet.device_ids[-1]}" if cfg.devices > 1 else ""), flush=True)
    try:
        while not fleet.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fleet.close()
    print("simulate: " + " ".join(f"{k}={v}" for k, v in fleet.stats.items()), file=sys.stderr)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    if args.mqtt is not None:
        return _simulate_mqtt(args)
    from kmerl_edge._channels import parse_lead_map

    from ._simulate import SimulateConfig, VirtualPatch

    lead_map = tuple(parse_lead_map(args.lead_map).items()) if args.lead_map else None
    cfg = SimulateConfig(
        lead_map=lead_map,
        record=args.record, leads=parse_leads(args.leads), fs=args.fs, protocol=args.protocol, speed=args.speed,
        drop_rate=args.drop_rate, corrupt_rate=args.corrupt_rate, unplug_after_s=args.unplug_after,
        unplug_for_s=args.unplug_for, frame_samples=args.frame_samples, sample_format=args.sample_format,
        lsb_pv=int(round(args.lsb_uv * 1e6)), loop=args.loop, seconds=args.seconds, seed=args.seed, link=args.link,
        wait_for_reader=not args.start_now,
    )
    patch = VirtualPatch(cfg)
    path = patch.open()
    wait = "waiting for a reader (--start-now streams at once)" if cfg.wait_for_reader else "streaming now"
    print(f"listening on {path}  ({wait})", flush=True)

    patch.on_reader = lambda tick, lost: print(reader_message(tick, lost, cfg.fs), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: patch.stop())
    try:
        stats = patch.run()
    except KeyboardInterrupt:
        stats = patch.stats
    finally:
        patch.close()
    print("simulate: " + " ".join(f"{k}={v}" for k, v in stats.items()), file=sys.stderr)
    return 0


def _dump(args: argparse.Namespace) -> int:
    leads = parse_leads(args.leads) if args.leads else None
    src = open_source(args.port, args.protocol, fs=args.fs, leads=leads, baudrate=args.baud,
                      mv_per_unit=args.mv_per_unit, offset=args.offset, reconnect=not args.no_reconnect)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while deadline is None or time.monotonic() < deadline:
            ev = src.get(timeout=0.1)
            if ev is None:
                if not src.running:
                    break
                continue
            if not args.quiet:
                print(format_event(ev), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
    counters = src.stats
    if args.json:
        print(json.dumps(counters, sort_keys=True))
    else:
        print("counters: " + " ".join(f"{k}={v}" for k, v in counters.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build().parse_args(argv)
    from kmerl_edge._cli_common import configure

    configure(args)
    try:
        return _simulate(args) if args.cmd == "simulate" else _dump(args)
    except KmerlError as exc:
        print(f"kmerl-bridge: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
