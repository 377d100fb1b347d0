"""Stream a patch into the runtime: a virtual patch on a pseudo-terminal sends K-MERL frames of a real
recording, the serial bridge decodes them, and a streaming session prints a result per hop and the
rhythm events as they are confirmed. Replace the virtual patch with your port (e.g. /dev/ttyACM0).

    pip install "kmerl-edge[device,io]"
    python examples/stream_patch.py --seconds 40 --speed 10
"""

from __future__ import annotations

import argparse

import firmware_bridge as fb
import kmerl_edge
from kmerl_edge._stream_cli import demo_record_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", default=None, help="a real port or pyserial URL (default: a virtual patch)")
    ap.add_argument("--record", default=str(demo_record_path()), help="recording the virtual patch replays")
    ap.add_argument("--seconds", type=float, default=40.0, help="seconds of the recording to send")
    ap.add_argument("--speed", type=float, default=10.0, help="replay speed (x real time)")
    ap.add_argument("--backend", default="onnxruntime-int8")
    a = ap.parse_args()

    clf = kmerl_edge.load(backend=a.backend)
    patch = None
    port = a.port
    if port is None:
        patch = fb.VirtualPatch(fb.SimulateConfig(record=a.record, leads=("I", "II"), fs=200.0,
                                                  speed=a.speed, seconds=a.seconds))
        port = patch.start()
    session = None
    src = fb.open_source(port, protocol="kmerl", reconnect=False)
    try:
        for ev in src:
            if type(ev).__name__ == "LinkEvent" and not ev.connected:
                break  # the patch hung up: the recording is over
            if session is None:
                if type(ev).__name__ != "SampleBlock":
                    continue  # device info frames come first; the first samples say rate and leads
                session = clf.stream(fs=float(ev.fs), leads=ev.leads, hop_s=2.0)
            for r in session.feed(ev):
                print(f"{r.t_start:6.1f}–{r.t_end:6.1f} s", r.top(1, label_set="rhythm"))
            for e in session.events():
                print(">>>", e)
    finally:
        src.close()
        if patch is not None:
            patch.close()
    if session is not None:
        for r in session.close():
            print(f"{r.t_start:6.1f}–{r.t_end:6.1f} s", r.top(1, label_set="rhythm"))
        for e in session.events():
            print(">>>", e)
        print(session.stats().to_dict())


if __name__ == "__main__":
    main()
