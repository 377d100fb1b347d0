"""Real transport: pyserial loop:// and socket:// (a real TCP server), the pty virtual patch streaming real
recordings to the real reader (with unplug/replug), and the kmerl-bridge CLI as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("serial", reason="pyserial (the 'serial' extra) is not installed")

from firmware_bridge import (  # noqa: E402
    DeviceConfig,
    DeviceInfo,
    DeviceMismatchError,
    FrameEncoder,
    GapEvent,
    LinkEvent,
    PortError,
    SampleBlock,
    SimulateConfig,
    VirtualPatch,
    open_source,
)
from kmerl_edge import read_record  # noqa: E402
from kmerl_edge._errors import SamplingRateError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "bridge"))
from bridge_events import collect  # noqa: E402

RECORDS = Path(__file__).resolve().parent / "fixtures" / "records"  # committed real records
PTBXL = RECORDS / "00001_hr"
CPSC21 = RECORDS / "data_101_6"
ROOT = Path(__file__).resolve().parents[1]


def expected_signal(record: Path, leads, fs: float) -> np.ndarray:
    """The recording resampled to the patch rate, computed here independently of the simulator."""
    from scipy.signal import resample_poly

    rec = read_record(record, leads=leads)
    r = Fraction(fs / rec.fs).limit_denominator(1000)
    return resample_poly(rec.signal.astype(np.float64), r.numerator, r.denominator, axis=1)


def assert_blocks_match(events, expect: np.ndarray, lsb_mv: float) -> int:
    """Every block equals the recording at its tick within quantisation; blocks+gaps are contiguous."""
    n = 0
    tick = None
    for e in events:
        if isinstance(e, SampleBlock):
            ref = expect[:, e.tick:e.tick + e.n_samples]
            np.testing.assert_allclose(e.data, ref, atol=lsb_mv / 2 + 1e-6)
            n += e.n_samples
        if isinstance(e, SampleBlock | GapEvent) and e.n_samples:
            if tick is not None:
                assert e.tick == tick, "blocks and gaps must tile the device timeline"
            tick = e.tick + e.n_samples
    return n


def frames(n: int, start: int = 0):
    enc = FrameEncoder(DeviceConfig(("I", "II"), 500.0, 1_000_000))
    raw = np.arange(n * 20).reshape(n * 10, 2) % 2000 - 1000
    return enc, [enc.samples(start + 10 * k, raw[10 * k:10 * (k + 1)]) for k in range(n)]


def test_loop_url_round_trip_and_declared_rate_check():
    _, fr = frames(5)
    with open_source("loop://", leads="II") as src:
        src.write(b"".join(fr))
        events = collect(src, lambda ev: sum(isinstance(e, SampleBlock) for e in ev) == 5)
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    assert isinstance(events[0], LinkEvent) and events[0].connected
    assert [b.tick for b in blocks] == [0, 10, 20, 30, 40] and all(b.leads == ("II",) for b in blocks)
    assert not src.running  # clean shutdown: the reader thread has ended and the port is closed
    with open_source("loop://", fs=250.0) as src:
        src.write(fr[0])
        with pytest.raises(DeviceMismatchError):
            collect(src, lambda ev: any(isinstance(e, SampleBlock) for e in ev))


def test_queue_overflow_becomes_an_exact_gap():
    _, fr = frames(40)
    with open_source("loop://", queue_size=3) as src:
        src.write(b"".join(fr))
        time.sleep(0.5)  # the consumer falls behind; the reader must not block
        events = collect(src, lambda ev: sum(e.n_samples for e in ev if isinstance(e, SampleBlock | GapEvent)) >= 400)
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert gaps and all(g.reason == "queue overflow" for g in gaps)
    assert src.stats["overflow_samples"] == sum(g.n_samples for g in gaps) > 0
    covered = sum(e.n_samples for e in events if isinstance(e, SampleBlock | GapEvent))
    assert covered == 400


def test_socket_url_reconnects_after_the_peer_drops():
    """socket:// against a real TCP server that hangs up mid-stream and accepts again."""
    enc, _ = frames(0)
    raw = np.ones((10, 2), dtype=np.int64)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    sent_ticks: list[int] = []

    def serve():
        tick = 0
        for session in range(2):
            conn, _ = srv.accept()
            time.sleep(0.05)  # pyserial drains the socket while it opens
            with conn:
                for _ in range(20):
                    conn.sendall(enc.samples(tick, raw))
                    sent_ticks.append(tick)
                    tick += 10
                    time.sleep(0.002)
            if session == 0:
                tick += 70  # samples produced while the host was disconnected are lost
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    with open_source(f"socket://127.0.0.1:{port}", backoff_initial_s=0.02) as src:
        events = collect(src, lambda ev: any(isinstance(e, SampleBlock) and e.tick == 460 for e in ev))
    links = [e.connected for e in events if isinstance(e, LinkEvent)]
    assert links[:3] == [True, False, True]
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert [(g.tick, g.n_samples) for g in gaps] == [(200, 70)]
    assert src.stats["connects"] >= 2 and src.stats["disconnects"] >= 1


def test_open_errors_are_named():
    with pytest.raises(PortError):
        open_source("/dev/does-not-exist-kmerl")
    with pytest.raises(SamplingRateError):
        open_source("loop://", protocol="ascii", leads="I")


def test_virtual_patch_streams_a_real_record_through_a_pty():
    """PTB-XL 00001 (500 Hz) resampled to 250 Hz, leads I,II,V2, through a pty to the real serial reader."""
    cfg = SimulateConfig(str(PTBXL), ("V2", "I", "II"), 250.0, speed=25.0, linger_s=3.0)
    patch = VirtualPatch(cfg)
    expect = expected_signal(PTBXL, ("I", "II", "V2"), 250.0)
    with patch:
        with open_source(patch.path, reconnect=False) as src:
            patch.start()
            events = collect(src, lambda ev: False, timeout=15.0)  # until the patch hangs up
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    assert blocks and blocks[-1].tick + blocks[-1].n_samples == expect.shape[1]  # streamed to the end
    assert all(b.leads == ("I", "II", "V2") and b.fs == 250.0 for b in blocks)
    n = assert_blocks_match(events, expect, 1e-3)
    assert n >= 0.9 * expect.shape[1]
    assert any(isinstance(e, DeviceInfo) and e.model == "kmerl-virtual" for e in events)
    assert src.stats["crc_errors"] == 0 and src.stats["lost_frames"] == 0


def test_unplug_and_replug_reports_the_outage_as_an_exact_gap():
    """cpsc2021 data_101_6 (200 Hz, leads I and II, AF), streamed at 500 Hz; the cable is pulled for 0.4 s."""
    cfg = SimulateConfig(str(CPSC21), ("I", "II"), 500.0, speed=10.0, seconds=30.0, unplug_after_s=0.8,
                         unplug_for_s=0.4, linger_s=3.0)
    patch = VirtualPatch(cfg)
    expect = expected_signal(CPSC21, ("I", "II"), 500.0)
    with patch:
        with open_source(patch.path, backoff_initial_s=0.02, backoff_max_s=0.1) as src:
            patch.start()
            events = collect(src, lambda ev: [e.connected for e in ev if isinstance(e, LinkEvent)].count(False) >= 2,
                             timeout=20.0)
    links = [e.connected for e in events if isinstance(e, LinkEvent)]
    assert links[:3] == [True, False, True]
    gaps = [e for e in events if isinstance(e, GapEvent)]
    unplugged_samples = 0.4 * 10.0 * 500.0
    assert gaps and gaps[0].reason == "lost frames"
    assert unplugged_samples * 0.8 <= sum(g.n_samples for g in gaps) <= unplugged_samples * 3
    assert_blocks_match(events, expect, 1e-3)
    assert patch.stats["unplugs"] == 1


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "firmware_bridge", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def start_simulator(*args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge", "simulate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line + (proc.stderr.read() if proc.stderr else "")
    path = line[len("listening on "):].split("  (")[0]
    assert os.path.exists(path)
    return proc, path


def test_cli_simulate_and_dump_with_injected_faults():
    proc, path = start_simulator(str(PTBXL), "--leads", "I,II,V2", "--fs", "500", "--speed", "20", "--loop",
                                 "--drop-rate", "0.05", "--corrupt-rate", "0.05", "--seed", "3")
    try:
        res = run_cli("dump", path, "--json", "--duration", "2")
    finally:
        proc.terminate()  # SIGTERM: the simulator stops cleanly and prints its counters
        proc.wait(timeout=20)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    counters = json.loads(lines[-1])
    assert any(line.startswith("INFO device=0x4B4D0001") for line in lines)
    assert sum(line.startswith("SAMPLES") for line in lines) > 300
    assert any(line.startswith("GAP") for line in lines) and any(line.startswith("STATUS") for line in lines)
    assert counters["crc_errors"] + counters["truncated_frames"] > 0 and counters["gaps"] > 0
    assert counters["lost_frames"] > 0
    sim = dict(kv.split("=") for kv in proc.stderr.read().split(":", 1)[1].split()) if proc.stderr else {}
    assert int(sim["dropped"]) > 0 and int(sim["corrupted"]) > 0


def test_cli_simulate_ascii_to_the_ascii_reader():
    proc, path = start_simulator(str(CPSC21), "--protocol", "ascii", "--leads", "II", "--fs", "250",
                                 "--speed", "20", "--seconds", "8")
    try:
        with open_source(path, "ascii", fs=250.0, leads="II", reconnect=False) as src:
            events = collect(src, lambda ev: False, timeout=15.0)
    finally:
        proc.wait(timeout=20)
    got = np.concatenate([e.data for e in events if isinstance(e, SampleBlock)], axis=1)[0]
    expect = expected_signal(CPSC21, ("II",), 250.0)[0, :2000]
    # ASCII has no timestamps: align on the first samples (the port opens mid-stream), then compare all
    k = next(k for k in range(len(expect) - 50) if np.allclose(got[:50], expect[k:k + 50], atol=6e-4))
    m = min(len(got), len(expect) - k)
    assert m > 1000
    np.testing.assert_allclose(got[:m], expect[k:k + m], atol=5e-4 + 1e-6)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("dump", "/dev/does-not-exist-kmerl"), "cannot open"),
        (("dump", "loop://", "--protocol", "ascii", "--leads", "I"), "sampling rate"),
        (("simulate", str(PTBXL), "--leads", "I,XX", "--fs", "500"), "unknown lead"),
        (("simulate", str(PTBXL), "--leads", "I", "--fs", "-5"), "positive"),
        (("simulate", "/no/such/record", "--leads", "I", "--fs", "500"), "no such record"),
        (("simulate", str(PTBXL), "--leads", "I"), "--fs"),
    ],
)
def test_cli_user_errors_are_one_line(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr and "Traceback" not in res.stderr


def _first_block(events):
    return next(e for e in events if isinstance(e, SampleBlock))


def test_cli_simulate_listens_at_once_and_waits_for_a_reader():
    proc, path = start_simulator(str(CPSC21), "--leads", "II", "--fs", "250", "--speed", "10", "--seconds", "20")
    try:
        time.sleep(1.0)  # nobody reads yet: a waiting patch sends nothing, so nothing is lost
        with open_source(path, reconnect=False) as src:
            events = collect(src, lambda ev: sum(isinstance(e, SampleBlock) for e in ev) >= 5, timeout=15.0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert _first_block(events).tick == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "reader attached at device time 0.00 s: streaming" in out and "lost" not in out


def test_cli_simulate_start_now_reports_the_samples_no_reader_got():
    proc, path = start_simulator(str(CPSC21), "--leads", "II", "--fs", "250", "--speed", "10", "--seconds", "20",
                                 "--start-now")
    try:
        time.sleep(1.0)  # streaming into a port no one reads
        with open_source(path, reconnect=False) as src:
            events = collect(src, lambda ev: sum(isinstance(e, SampleBlock) for e in ev) >= 5, timeout=15.0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = proc.stdout.read() if proc.stdout else ""
    import re

    m = re.search(r"reader attached at device time ([\d.]+) s: streaming; (\d+) samples per lead sent before it "
                  r"were lost", out)
    assert m, out
    lost = int(m.group(2))
    assert lost > 0 and float(m.group(1)) == pytest.approx(lost / 250.0, abs=0.05)
    # the host sees it too: the first sample it receives is not the device's first
    assert _first_block(events).tick >= lost
