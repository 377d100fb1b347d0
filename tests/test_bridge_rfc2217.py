"""rfc2217:// through a real RFC 2217 server (pyserial's PortManager, tests/fixtures/bridge) serving a real pty:
a real record streamed by the virtual patch, baud-rate negotiation reaching the pty, and a dropped
connection mid-stream that the reader reconnects after, reporting exactly the lost samples as a gap."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

serial = pytest.importorskip("serial", reason="pyserial (the 'serial' extra) is not installed")

from firmware_bridge import (  # noqa: E402
    DeviceConfig,
    DeviceInfo,
    FrameEncoder,
    GapEvent,
    LinkEvent,
    SampleBlock,
    SimulateConfig,
    VirtualPatch,
    open_source,
)
from kmerl_edge import read_record  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "bridge"))
from bridge_events import collect  # noqa: E402
from rfc2217_server import Rfc2217Server, wait_until  # noqa: E402

PTBXL = Path(__file__).resolve().parent / "fixtures" / "records" / "00001_hr"  # committed real record


def read_master(master: int, n: int, timeout: float = 2.0) -> bytes:
    """Up to ``n`` bytes the served port wrote to the pty, waiting at most ``timeout`` (never blocks on read)."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n and (left := deadline - time.monotonic()) > 0:
        if select.select([master], [], [], left)[0]:
            got += os.read(master, n - len(got))
    return got


def links(events) -> list[bool]:
    return [e.connected for e in events if isinstance(e, LinkEvent)]


@pytest.fixture
def pty_port() -> Iterator[tuple[int, object]]:
    """A real pty: its master fd (the device side) and its slave opened with pyserial (the server's port)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    port = serial.serial_for_url(os.ttyname(slave), baudrate=9600)
    try:
        yield master, port
    finally:
        port.close()
        os.close(master)
        os.close(slave)


def test_virtual_patch_streams_a_real_record_through_an_rfc2217_server():
    """PTB-XL 00001 (500 Hz) at 250 Hz, leads I,II,V2: pty → RFC 2217 server → rfc2217:// → decoder, bit-exact."""
    from scipy.signal import resample_poly

    fs, lsb_pv = 250.0, 1_000_000
    patch = VirtualPatch(SimulateConfig(str(PTBXL), ("V2", "I", "II"), fs, speed=25.0, lsb_pv=lsb_pv,
                                        linger_s=2.0))
    # the reference, computed here independently of the simulator: read, resample, quantise to 1 µV counts
    rec = read_record(PTBXL, leads=("I", "II", "V2"))
    r = Fraction(fs / rec.fs).limit_denominator(1000)
    counts = np.rint(resample_poly(rec.signal.astype(np.float64), r.numerator, r.denominator, axis=1) * 1e3)
    assert np.abs(counts).max() < 2**15  # int16 on the wire, nothing clamped
    n_total = counts.shape[1]
    want = counts.astype(np.float32) * np.float32(lsb_pv * 1e-9)  # mV as the decoder computes them

    def streamed_to_the_end(evs) -> bool:
        return any(isinstance(e, SampleBlock) and e.tick + e.n_samples == n_total for e in evs)

    with patch:  # the pty exists from here; the patch writes nothing until start()
        with serial.serial_for_url(patch.path) as port, Rfc2217Server(port) as server:
            with open_source(server.url, reconnect=False) as src:
                assert server.wait_for_client(1, timeout=2.0)
                patch.start()  # after the client's open (and its PURGE) so no byte is lost
                events = collect(src, streamed_to_the_end, timeout=4.0)
    assert streamed_to_the_end(events), f"stream did not reach sample {n_total}"
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    assert all(b.leads == ("I", "II", "V2") and b.fs == fs for b in blocks)
    assert [b.tick for b in blocks] == list(range(0, n_total, 10))  # every frame, in order, none missing
    got = np.concatenate([b.data for b in blocks], axis=1)
    np.testing.assert_array_equal(got, want)  # the record's samples exactly, through Telnet escaping
    assert (counts.astype(np.int16).view(np.uint8) == 0xFF).any()  # ...which the stream did need (IAC)
    assert not any(isinstance(e, GapEvent) for e in events)
    assert links(events) == [True]
    assert any(isinstance(e, DeviceInfo) and e.model == "kmerl-virtual" for e in events)
    assert src.decoder.stats.faults == 0 and src.stats["lost_frames"] == 0 and src.stats["crc_errors"] == 0
    assert patch.stats["overflow_bytes"] == 0 and server.bytes_to_client == patch.stats["bytes_written"]


def test_baud_rate_is_negotiated_onto_the_served_port(pty_port):
    """SET_BAUDRATE from the client reaches the pty's termios; data flows both ways, IAC bytes included."""
    master, port = pty_port
    assert port.baudrate == 9600
    with Rfc2217Server(port) as server:
        with open_source(server.url, baudrate=230400, reconnect=False) as src:
            assert port.baudrate == 230400  # the open returned only after the server acknowledged it
            ispeed, ospeed = termios.tcgetattr(port.fd)[4:6]
            assert ispeed == ospeed == termios.B230400
            command = b"\xffSTART\x00\xff\xff\r\n"  # IAC bytes: escaped by the client, unescaped by the server
            assert src.write(command) == len(command)
            assert read_master(master, len(command)) == command
        assert wait_until(lambda: server.sessions_ended == 1, timeout=2.0)  # the client hung up on close
        with open_source(server.url, baudrate=57600, reconnect=False):
            assert port.baudrate == 57600 and termios.tcgetattr(port.fd)[4] == termios.B57600
    assert server.clients == 2 and not server.errors


def test_dropped_connection_reconnects_and_reports_the_outage_as_an_exact_gap(pty_port):
    """The server hangs up with half a frame delivered; the reader reconnects and the lost ticks are one gap."""
    master, port = pty_port
    enc = FrameEncoder(DeviceConfig(("I", "II"), 500.0, 1_000_000))
    raw = np.arange(20).reshape(10, 2) - 10  # negative counts: 0xFF bytes, escaped as Telnet IAC IAC
    first = b"".join(enc.samples(tick, raw) for tick in range(0, 200, 10))
    cut = enc.samples(200, raw)  # the frame the drop cuts in half
    unsent = [enc.samples(tick, raw) for tick in range(210, 270, 10)]  # sampled while disconnected: lost
    assert len(unsent) == 6 and enc.seq == 27  # the device's sequence numbers go on during the outage
    second = b"".join(enc.samples(tick, raw) for tick in range(270, 470, 10))

    with Rfc2217Server(port) as server:
        with open_source(server.url, backoff_initial_s=0.02, backoff_max_s=0.1) as src:
            assert server.wait_for_client(1, timeout=2.0)
            os.write(master, first + cut[: len(cut) // 2])
            events = collect(src, lambda ev: any(isinstance(e, SampleBlock) and e.tick == 190 for e in ev))
            sent = len(first) + len(cut) // 2
            assert wait_until(lambda: src.stats["bytes_read"] == sent, timeout=2.0), src.stats["bytes_read"]
            server.drop_client()  # mid-stream: half of frame 200 is in the decoder's buffer
            events += collect(src, lambda ev: links(events + ev)[:3] == [True, False, True])
            assert links(events) == [True, False, True] and server.wait_for_client(2, timeout=2.0)
            os.write(master, second)  # after the reconnect's PURGE: all of it must arrive
            events += collect(src, lambda ev: any(isinstance(e, SampleBlock) and e.tick == 460 for e in ev))
    assert links(events)[:3] == [True, False, True]
    gaps = [(g.tick, g.n_samples, g.reason) for g in events if isinstance(g, GapEvent)]
    assert gaps == [(200, 70, "lost frames")]
    blocks = [e for e in events if isinstance(e, SampleBlock)]
    assert [b.tick for b in blocks] == list(range(0, 200, 10)) + list(range(270, 470, 10))
    assert all(np.array_equal(b.data, raw.T.astype(np.float32) * np.float32(1e-3)) for b in blocks)
    assert src.stats["lost_frames"] == 7 and src.stats["truncated_frames"] == 1 and src.stats["crc_errors"] == 0
    assert src.stats["connects"] == 2 and src.stats["disconnects"] == 1 and src.stats["open_failures"] == 0
    assert server.clients == 2 and server.drops == 1 and not server.errors
