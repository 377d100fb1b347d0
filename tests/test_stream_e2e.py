"""End to end over a real pty: virtual patch (the shipped CPSC2021 recording) → pyserial → decoder →
StreamSession → results, with injected frame drops, corruption, unplug/replug and a lead going flat;
and the ``kmerl-edge stream`` / ``kmerl-edge demo`` commands."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("serial", reason="pyserial (the 'serial' extra) is not installed")
fb = pytest.importorskip("firmware_bridge")

import kmerl_edge  # noqa: E402
from kmerl_edge.cli import main  # noqa: E402
from kmerl_edge.stream import SKIP_FRAGMENTED, SKIP_GAP, demo_record_path  # noqa: E402

BUNDLE = Path(__file__).parent / "fixtures" / "test_bundle"
RECORD = demo_record_path()
FS = 200.0
N_SAMPLES = 24244  # the demo recording: 121.22 s at 200 Hz


@pytest.fixture(scope="module")
def clf() -> Any:
    return kmerl_edge.load(BUNDLE, backend="onnxruntime")


def stream_patch(clf: Any, cfg: Any, timeout: float = 60.0, **session_kw: Any) -> dict[str, Any]:
    """Run a virtual patch to its end through the real reader into a session; collect everything."""
    patch = fb.VirtualPatch(cfg)
    port = patch.start()
    src = fb.open_source(port, protocol=cfg.protocol, fs=cfg.fs if cfg.protocol == "ascii" else None,
                         leads=cfg.leads if cfg.protocol == "ascii" else None,
                         reconnect=True, backoff_max_s=0.1)
    session = None
    results: list = []
    links: list = []
    gaps: list = []
    deadline = time.monotonic() + timeout
    idle: float | None = None
    try:
        while time.monotonic() < deadline:
            ev = src.get(timeout=0.05)
            if ev is None:
                if patch.done:
                    idle = idle or time.monotonic()
                    if time.monotonic() - idle > 0.5:
                        break
                continue
            idle = None
            if isinstance(ev, fb.LinkEvent):
                links.append(ev)
                continue
            if session is None and isinstance(ev, fb.DeviceInfo | fb.SampleBlock):
                session = clf.stream(fs=ev.fs, leads=ev.leads, hop_s=2.0, **session_kw)
            if isinstance(ev, fb.GapEvent):
                gaps.append(ev)
            if session is not None and not isinstance(ev, fb.DeviceInfo):
                results += session.feed(ev)
    finally:
        src.close()
        patch.close()
    assert session is not None, "no samples arrived"
    results += session.close()
    return {
        "results": results,
        "session": session,
        "stats": session.stats(),
        "decoder": src.stats,
        "patch": patch.stats,
        "links": links,
        "gaps": gaps,
    }


def test_pty_stream_matches_direct_session(clf: Any) -> None:
    cfg = fb.SimulateConfig(record=str(RECORD), leads=("I", "II"), fs=FS, speed=40.0)
    out = stream_patch(clf, cfg)
    res, st, dec = out["results"], out["stats"], out["decoder"]
    # exact accounting against the decoder: samples received and samples reported lost
    assert st.samples == dec["samples"] and st.gap_samples == dec["lost_samples"]
    if out["patch"]["overflow_bytes"] == 0:  # a loaded machine can overflow the pty at 40x: then a gap
        assert st.gaps == 0
    origin = res[0].t_end - 10.0  # the device tick of the first frame the host read
    assert 0.0 <= origin < 1.0 and (origin * FS) == pytest.approx(round(origin * FS))
    assert [r.index for r in res] == list(range(len(res))) and len(res) >= 54
    assert [r.t_end for r in res] == pytest.approx([origin + 10.0 + 2 * k for k in range(len(res))])
    # the same recording pushed directly (no serial, no quantisation) gives the same diagnoses
    rec = kmerl_edge.read_record(RECORD)
    direct = clf.stream(fs=FS, leads=["I", "II"], synchronous=True)
    a0 = int(round(origin * FS))
    ref = direct.push(rec.signal[:, a0:], t0=origin) + direct.close()
    clean = [r for r in res if not r.skipped and not r.flags]
    assert len(clean) >= 40
    for a in clean:
        b = ref[a.index]
        assert b.t_end == pytest.approx(a.t_end) and a.leads_used == b.leads_used == ("I", "II")
        np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=2e-3)


def test_pty_faults_drops_corruption_unplug_are_gaps_never_filled(clf: Any) -> None:
    cfg = fb.SimulateConfig(
        record=str(RECORD), leads=("I", "II"), fs=FS, speed=20.0, drop_rate=0.03, corrupt_rate=0.02,
        unplug_after_s=2.0, unplug_for_s=0.6, seed=7,
    )
    out = stream_patch(clf, cfg)
    res, st, dec = out["results"], out["stats"], out["decoder"]
    assert out["patch"]["dropped"] > 0 and out["patch"]["corrupted"] > 0 and out["patch"]["unplugs"] == 1
    assert dec["crc_errors"] > 0 and dec["lost_frames"] > 0
    # the link went down and came back, and the outage is a gap of the device time it lasted
    assert [lk.connected for lk in out["links"]][:3] == [True, False, True]
    assert max(g.n_samples for g in out["gaps"]) >= 0.5 * 0.6 * 20 * FS
    # exact accounting: every device sample slot is either a received sample or a reported gap
    assert st.samples == dec["samples"]
    assert st.gap_samples == sum(g.n_samples for g in out["gaps"]) == dec["lost_samples"]
    # received + reported lost covers the recording (only frames lost at its very start or end, which no
    # later frame can reveal, are unaccounted for), and device time follows the patch's own ticks
    assert N_SAMPLES - 100 <= st.samples + st.gap_samples <= N_SAMPLES
    assert res[0].t_end == pytest.approx(10.0, abs=0.5) and res[-1].t_end <= N_SAMPLES / FS
    assert [r.index for r in res] == list(range(len(res)))  # every window has a result
    skipped = [r for r in res if r.skipped]
    assert skipped and {r.reason for r in skipped} <= {SKIP_GAP, SKIP_FRAGMENTED}
    assert any(r.reason == SKIP_GAP and r.missing_fraction > 0.2 for r in skipped)  # the unplug
    scored = [r for r in res if not r.skipped]
    assert len(scored) >= 25
    # scored windows that overlap a gap say so; none hides missing data
    for r in scored:
        assert (r.missing_fraction > 0) == ("gap" in r.flags)
        assert r.missing_fraction <= 0.2
    assert sum(st.skipped.values()) + st.scored == st.windows == len(res)


def test_pty_lead_going_flat_is_dropped_and_reported(clf: Any, tmp_path: Path) -> None:
    import wfdb

    rec = kmerl_edge.read_record(RECORD)
    sig = rec.signal.astype(np.float64).T.copy()
    sig[int(40 * FS) : int(90 * FS), 1] = 4.2  # lead II goes flat (electrode dried out) for 50 s
    wfdb.wrsamp("flat_ii", fs=FS, units=["mV", "mV"], sig_name=["I", "II"], p_signal=sig, fmt=["16", "16"],
                write_dir=str(tmp_path))
    cfg = fb.SimulateConfig(record=str(tmp_path / "flat_ii"), leads=("I", "II"), fs=FS, speed=40.0)
    out = stream_patch(clf, cfg)
    res, st = out["results"], out["stats"]
    ok = [r for r in res if not r.skipped]  # (a loaded machine can overflow the pty: gaps, reported)
    inside = [r for r in ok if r.t_start >= 40.0 and r.t_end <= 90.0]
    outside = [r for r in ok if r.t_end <= 40.0 or r.t_start >= 90.0]
    assert len(inside) >= 18 and len(outside) >= 15
    for r in inside:
        assert not r.skipped and r.leads_used == ("I",) and r.excluded_leads == {"II": "flat"}
        assert r.quality is not None and r.quality["II"].flat and r.quality.overall == "degraded"
    for r in outside:
        assert r.leads_used == ("I", "II") and not r.excluded_leads
    assert st.lead_exclusions.get("II", 0) >= len(inside)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_demo_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    t = time.monotonic()
    assert main(["demo", "--bundle", str(BUNDLE), "--backend", "onnxruntime", "--speed", "40", "--json-lines"]) == 0
    wall = time.monotonic() - t
    lines = _json_lines(capsys.readouterr().out)
    kinds = [d["type"] for d in lines]
    assert kinds[0] == "demo" and "start" in kinds and kinds[-1] == "summary"
    assert lines[0]["reference_af"] == [[18.25, 71.12], [95.47, 119.53]]
    windows = [d for d in lines if d["type"] == "window"]
    assert len(windows) >= 54  # 121 s of signal, a result every 2 s from 10 s
    assert [w["index"] for w in windows] == list(range(len(windows)))
    summary = lines[-1]
    assert summary["windows"] == len(windows) and summary["dropped"] == 0
    assert summary["scored"] == sum(not w["skipped"] for w in windows) >= 50
    assert summary["latency_ms_p99"] > 0 and summary["faults"]["crc_errors"] == 0
    assert summary["ended"] == "recording finished"
    assert wall < 30


def test_cli_demo_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--bundle", str(BUNDLE), "--speed", "60"]) == 0
    out = capsys.readouterr().out
    assert "randomly initialised test bundle" in out
    assert re.search(r"summary: 5[4-6] windows \(5[0-6] scored", out), out[-800:]
    assert "latency median" in out and "p99" in out
    assert "queue + preprocessing + inference; first window, the warm-up, left out" in out
    assert "detected atrial fibrillation: none" in out  # random weights: no AF episode, none invented
    assert "reference (CPSC2021 annotations): atrial fibrillation 18.2–71.1 s, 95.5–119.5 s" in out
    # a normal ending, not pyserial's raw text about a vanished device
    assert out.strip().splitlines()[-1].startswith("recording finished: 121.2 s of signal streamed in")
    assert "disconnected" not in out and "multiple access" not in out


def test_cli_demo_says_when_an_af_event_is_raised(capsys: pytest.CaptureFixture[str]) -> None:
    """With the default bundle, the demo names the bundle's AF event rule, so AF probabilities above the
    threshold that raise no event (an episode cut short by the end of the recording) are explained."""
    assert main(["demo", "--speed", "60"]) == 0
    out = capsys.readouterr().out
    rule = re.search(r"AF event rule \(tuned on training patients\): on after (\d+) s", out)
    assert rule and int(rule.group(1)) >= 20, out[-1500:]
    found = re.search(r"detected atrial fibrillation: (\d+\.\d)–(\d+\.\d) s", out)
    assert found and 18.2 < float(found.group(1)) < 71.1 < float(found.group(2)), out[-1500:]


def test_cli_demo_without_default_bundle(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kmerl_edge._classifier as classifier

    # an installation without the default bundle (e.g. a slim device build): point the path at nothing
    monkeypatch.setattr(classifier, "_DEFAULT_BUNDLE", tmp_path / "no-default-bundle")
    with pytest.raises(kmerl_edge.BundleError):
        kmerl_edge.default_bundle_path()
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kmerl-edge: error: this installation ships no default bundle")


def test_cli_stream_recording_file(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["stream", "--source", str(RECORD), "--leads", "II", "--bundle", str(BUNDLE), "--speed", "500",
            "--max-seconds", "30", "--hop", "5", "--json-lines"]
    assert main(argv) == 0
    lines = _json_lines(capsys.readouterr().out)
    windows = [d for d in lines if d["type"] == "window"]
    assert [w["t_end"] for w in windows] == [10.0, 15.0, 20.0, 25.0, 30.0]
    assert all(w["leads_used"] == ["II"] for w in windows)
    assert lines[-1]["type"] == "summary" and lines[-1]["windows"] == 5


def test_cli_stream_ascii_serial(capsys: pytest.CaptureFixture[str]) -> None:
    patch = fb.VirtualPatch(fb.SimulateConfig(record=str(RECORD), leads=("I", "II"), fs=FS, protocol="ascii",
                                              speed=40.0))
    port = patch.start()
    try:
        rc = main(["stream", "--source", port, "--protocol", "ascii", "--leads", "I,II", "--fs", "200",
                   "--bundle", str(BUNDLE), "--max-seconds", "30"])
    finally:
        patch.close()
    assert rc == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().endswith("ms") and "–" in line]
    assert len(rows) >= 10 and "quality good (I,II)" in rows[0]
    assert "summary:" in out


def test_cli_stream_missing_source(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["stream", "--source", str(tmp_path / "nope"), "--bundle", str(BUNDLE)]) == 1
    assert "kmerl-edge: error:" in capsys.readouterr().err


def test_cli_stream_device_change_starts_a_new_session_and_a_lost_device_ends_with_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A patch streams I,II at 200 Hz for 14 s, then restarts as II at 250 Hz for 14 s, then its port
    vanishes: two sessions, each with its results and summary, and an exit after --disconnect-timeout."""
    import os
    import threading
    import tty

    rec = kmerl_edge.read_record(RECORD)
    enc_a = fb.FrameEncoder(fb.DeviceConfig(("I", "II"), 200.0, 1_000_000))
    a = fb.quantise(rec.signal[:, : int(14 * 200)], 1_000_000)
    data = enc_a.device_info(0) + b"".join(enc_a.samples(k, a[:, k : k + 10].T) for k in range(0, a.shape[1], 10))
    enc_b = fb.FrameEncoder(fb.DeviceConfig(("II",), 250.0, 1_000_000))  # the same real samples, read at 250 Hz
    b = fb.quantise(rec.signal[1:, : int(14 * 250)], 1_000_000)
    data += enc_b.device_info(0) + b"".join(enc_b.samples(k, b[:, k : k + 10].T) for k in range(0, b.shape[1], 10))
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)

    def device() -> None:
        import fcntl
        import struct
        import termios

        time.sleep(0.5)
        os.write(master, data)  # blocking: the reader drains it
        deadline = time.monotonic() + 60
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:  # until the reader has taken every byte
            time.sleep(0.1)
            unread = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            quiet = quiet + 1 if unread == 0 else 0
        os.close(master)  # unplugged for good
        os.close(slave)

    th = threading.Thread(target=device, daemon=True)
    th.start()
    rc = main(["stream", "--source", path, "--bundle", str(BUNDLE), "--json-lines", "--disconnect-timeout", "1"])
    th.join(10)
    assert rc == 0
    lines = _json_lines(capsys.readouterr().out)
    starts = [(d["fs"], d["leads"]) for d in lines if d["type"] == "start"]
    assert starts == [(200.0, ["I", "II"]), (250.0, ["II"])]
    ends = [d for d in lines if d["type"] == "session_end"]
    assert len(ends) == 1 and "250 Hz" in ends[0]["reason"]
    summaries = [d for d in lines if d["type"] == "summary"]
    assert len(summaries) == 2 and [s["windows"] for s in summaries] == [3, 3]
    assert summaries[-1]["ended"] == "disconnected for more than 1 s" and summaries[-1]["sessions"] == 2
    windows = [d for d in lines if d["type"] == "window"]
    assert len(windows) == 6 and all(not w["skipped"] for w in windows)
    assert lines[-1]["type"] == "summary"


def test_cli_stream_says_when_it_joined_a_patch_that_started_before_it(capsys: pytest.CaptureFixture[str]) -> None:
    patch = fb.VirtualPatch(fb.SimulateConfig(record=str(RECORD), leads=("I", "II"), fs=FS, speed=20.0,
                                              wait_for_reader=False))
    port = patch.start()
    try:
        time.sleep(0.5)  # streaming into a port no one reads: lost, and the patch counts it
        rc = main(["stream", "--source", port, "--bundle", str(BUNDLE), "--max-seconds", "12", "--json-lines"])
    finally:
        patch.close()
    assert rc == 0
    lines = _json_lines(capsys.readouterr().out)
    note = next(d for d in lines if d["type"] == "note" and "first_t0" in d)
    lost = patch.stats["lost_before_reader"]
    assert lost > 0 and note["first_t0"] == pytest.approx(lost / FS, abs=0.2)
    assert lines[-1]["type"] == "summary" and lines[-1]["ended"] == "--max-seconds 12 reached"
