"""``kmerl-edge stream`` and ``kmerl-edge demo``.

``stream`` reads a serial patch (a port or pyserial URL, through :mod:`firmware_bridge`) or plays a
recording file at real time (or ``--speed`` times faster) into a :class:`StreamSession` and prints one
line per window and one per rhythm event (``--json-lines``: one JSON object per line).

``demo`` is the whole chain on the package's own data: a virtual patch on a pty replays the shipped
CPSC2021 recording (paroxysmal atrial fibrillation) as K-MERL frames, the serial bridge decodes them, the
session scores them with the default bundle, and the AF events are printed as they happen, then a
summary (windows, latency median/p99, link and decoder faults) and the reference annotations.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._errors import InvalidArgumentError, KmerlError, MissingExtraError
from ._jsonout import dumps
from ._stream_session import StreamSession
from ._stream_types import RhythmEvent, StreamStats, WindowResult
from ._stream_worker import warmup

__all__ = ["run_stream_cli", "run_demo_cli", "demo_record_path", "demo_reference_episodes"]

_DATA = Path(__file__).resolve().parent / "data"
DEMO_RECORD = "cpsc2021_data_101_8"
_RECORD_SUFFIXES = {".hea", ".dat", ".mat", ".npy", ".csv", ".atr"}


def demo_record_path() -> Path:
    """WFDB base path (no suffix) of the recording the demo replays."""
    return _DATA / DEMO_RECORD


def demo_reference_episodes(record: str | Path | None = None) -> list[tuple[float, float, str]]:
    """(start s, end s, rhythm) episodes from a WFDB record's ``.atr`` rhythm annotations."""
    import wfdb

    base = str(record or demo_record_path())
    ann = wfdb.rdann(base, "atr")
    fs = float(ann.fs or wfdb.rdheader(base).fs)
    n_total = wfdb.rdheader(base).sig_len
    marks = [(int(s), str(a).strip("(\x00 ")) for s, a in zip(ann.sample, ann.aux_note or []) if a and a.strip()]
    out = []
    for i, (s, rhythm) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else n_total
        if end > s:
            out.append((s / fs, end / fs, rhythm))
    return out


def _import_bridge() -> Any:
    try:
        import firmware_bridge
    except ImportError as exc:
        raise MissingExtraError(
            "the serial bridge (firmware_bridge, part of the kmerl-edge distribution) is not importable; "
            "reinstall kmerl-edge with: pip install 'kmerl-edge[serial]'"
        ) from exc
    return firmware_bridge


# ----------------------------------------------------------------------------------------------- output
class _Printer:
    def __init__(self, json_lines: bool, out: TextIO | None = None) -> None:
        self.json = json_lines
        self.out = out or sys.stdout
        self.events: list[RhythmEvent] = []

    def _emit(self, obj: dict[str, Any] | None, text: str) -> None:
        if self.json:
            if obj is not None:
                print(dumps(obj), file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    def note(self, text: str, obj: dict[str, Any] | None = None) -> None:
        self._emit(obj, text)

    def result(self, r: WindowResult) -> None:
        span = f"{r.t_start:7.1f}–{r.t_end:7.1f} s"
        if r.skipped:
            self._emit(r.to_dict(), f"{span}  skipped ({r.reason}): {r.detail}")
            return
        parts = []
        for ls, scores in r.by_label_set.items():
            top = sorted(scores.items(), key=lambda kv: -kv[1])[:2]
            parts.append(f"{ls}: " + ", ".join(f"{c} {p:.2f}" for c, p in top))
        q = r.quality.overall if r.quality is not None else "?"
        leads = ",".join(r.leads_used)
        if r.excluded_leads:
            leads += "; left out " + ", ".join(f"{k} ({v})" for k, v in r.excluded_leads.items())
        flags = f" [{','.join(r.flags)}]" if r.flags else ""
        self._emit(r.to_dict(), f"{span}  {' | '.join(parts)}  quality {q} ({leads}){flags}  {r.latency_ms:.1f} ms")

    def episodes(self) -> list[tuple[str, float, float | None]]:
        """(label, start, end or None if still on) of the rhythm events printed so far."""
        out: list[tuple[str, float, float | None]] = []
        open_: dict[str, float] = {}
        for e in self.events:
            if e.kind == "started":
                open_[e.label] = e.t
            elif e.label in open_:
                out.append((e.label, open_.pop(e.label), e.t))
        out += [(label, t, None) for label, t in open_.items()]
        return sorted(out, key=lambda x: x[1])

    def event(self, e: RhythmEvent) -> None:
        self.events.append(e)
        self._emit(
            e.to_dict(),
            f">>> {e.t:7.1f} s  {e.label} {e.kind.upper()}  (confirmed at {e.t_confirmed:.1f} s, p={e.probability:.2f})",
        )

    def summary(self, st: StreamStats, faults: dict[str, int], extra: dict[str, Any] | None = None) -> None:
        obj = {**st.to_dict(), "faults": faults, **(extra or {})}
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(st.skipped.items())) or "none"
        fault_txt = ", ".join(f"{k} {v}" for k, v in faults.items() if v) or "none"
        lines = [
            f"summary: {st.windows} windows ({st.scored} scored; skipped: {skipped}); "
            f"latency median {st.latency_ms_median:.1f} ms, p99 {st.latency_ms_p99:.1f} ms",
            f"         gaps {st.gaps} ({st.gap_samples} samples), dropped for backlog {st.dropped}, "
            f"rhythm events {st.events}, lead exclusions "
            + (", ".join(f"{k} {v}" for k, v in st.lead_exclusions.items()) or "none"),
            f"faults:  {fault_txt}",
        ]
        self._emit(obj, "\n".join(lines))

    def drain(self, session: StreamSession | None, results: Sequence[WindowResult]) -> None:
        for r in results:
            self.result(r)
        if session is not None:
            for e in session.events():
                self.event(e)


def _load(bundle: str | None, backend: str) -> Any:
    from ._classifier import load

    return load(bundle, backend=backend)


def _start_note(p: _Printer, clf: Any, fs: float, leads: Sequence[str], source: str) -> None:
    p.note(
        f"streaming {source}: {','.join(leads)} at {fs:g} Hz, bundle {clf.bundle_path.name} "
        f"(backend {clf.backend_name}), window {clf.bundle.preprocess_config.window_s:g} s",
        {
            "type": "start",
            "source": source,
            "leads": list(leads),
            "fs": fs,
            "bundle": str(clf.bundle_path),
            "backend": clf.backend_name,
            "trained_model": bool(clf.bundle.trained),
        },
    )
    if not clf.bundle.trained:
        p.note("note: randomly initialised test bundle: scores are meaningless")


# ------------------------------------------------------------------------------------------ sources
def _is_serial(source: str) -> bool:
    if "://" in source:
        return True
    try:
        st = os.stat(source)
    except OSError:
        return source.startswith("/dev/") or source.upper().startswith("COM")
    return stat.S_ISCHR(st.st_mode)


def _parse_leads(text: str | None) -> tuple[str, ...] | None:
    from ._leads import parse_leads

    return tuple(parse_leads(text)) if text else None


def _play_recording(a: Any, p: _Printer) -> int:
    from ._channels import parse_lead_map
    from ._io import open_record

    leads = _parse_leads(a.leads)
    speed = float(a.speed)
    if not speed > 0:
        raise KmerlError(f"--speed must be positive, got {a.speed}")
    lead_map = parse_lead_map(getattr(a, "lead_map", None))
    with open_record(a.source, fs=a.fs, leads=leads, lead_map=lead_map) as rec:
        clf = _load(a.bundle, a.backend)
        if len(rec.leads) > clf.max_leads:
            raise KmerlError(
                f"{rec.name} has {len(rec.leads)} leads but the bundle serves at most {clf.max_leads}; "
                f"pick some with --leads"
            )
        warmup(clf, fs=rec.fs, leads=rec.leads)
        session = clf.stream(fs=rec.fs, leads=rec.leads, hop_s=a.hop, device_id=rec.name or None)
        _start_note(p, clf, rec.fs, rec.leads, f"{a.source} at {speed:g}x")
        for note in rec.notes:
            p.note(f"note: {note}", {"type": "note", "note": note})
        n = rec.n_samples
        if a.max_seconds is not None:
            n = min(n, int(round(a.max_seconds * rec.fs)))
        step = max(1, int(round(0.1 * rec.fs)))
        block = step * 100  # read 10 s at a time; push 0.1 s at a time; missing samples are gaps
        t_wall0 = time.monotonic()
        gap: list[int] = []  # [start, length] of the gap being read: one push_gap per gap, however long

        def flush_gap() -> None:
            if gap:
                p.drain(session, session.push_gap(gap[1], t0=gap[0] / rec.fs))
                gap.clear()

        try:
            for b0 in range(0, n, block):
                x = rec.read(b0, min(n, b0 + block))
                for k in range(0, x.shape[1], step):
                    stop = min(x.shape[1], k + step)
                    delay = t_wall0 + (b0 + stop) / rec.fs / speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    part = x[:, k:stop]
                    miss = np.isnan(part).any(axis=0)
                    cuts = [0, *(np.flatnonzero(np.diff(miss.astype(np.int8))) + 1).tolist(), part.shape[1]]
                    for s0, s1 in zip(cuts[:-1], cuts[1:]):
                        if miss[s0]:
                            if gap:
                                gap[1] += s1 - s0
                            else:
                                gap.extend((b0 + k + s0, s1 - s0))
                        else:
                            flush_gap()
                            p.drain(session, session.push(part[:, s0:s1], t0=(b0 + k + s0) / rec.fs))
            flush_gap()
        finally:
            p.drain(session, session.close())
    p.summary(session.stats(), {})
    return 0


class _BridgeRun:
    """Consume a firmware-bridge source into a session created from the first device data."""

    def __init__(
        self, clf: Any, p: _Printer, hop: float, max_seconds: float | None, source: str, hangup_ends: bool = False
    ) -> None:
        self.clf = clf
        self.hangup_ends = hangup_ends
        self.p = p
        self.hop = hop
        self.max_seconds = max_seconds
        self.source = source
        self.session: StreamSession | None = None
        self.t_first: float | None = None
        self.links: dict[str, int] = {"disconnects": 0, "reconnects": 0}

    def _open(self, fs: float, leads: Sequence[str]) -> StreamSession:
        warmup(self.clf, fs=fs, leads=leads)
        self.session = self.clf.stream(fs=fs, leads=leads, hop_s=self.hop, device_id=self.source)
        _start_note(self.p, self.clf, fs, tuple(leads), self.source)
        return self.session

    def handle(self, ev: Any) -> bool:
        """Feed one event; False when ``max_seconds`` of signal has been streamed."""
        kind = type(ev).__name__
        if kind == "LinkEvent":
            if not ev.connected and self.hangup_ends:
                self.p.note(f"--- the patch hung up ({ev.detail})", {"type": "link", "connected": False,
                                                                     "port": ev.port, "detail": ev.detail})
            elif not ev.connected:
                self.links["disconnects"] += 1
                self.p.note(f"--- link lost: {ev.port} ({ev.detail})", {"type": "link", "connected": False,
                                                                       "port": ev.port, "detail": ev.detail})
            elif self.session is not None:
                self.links["reconnects"] += 1
                self.p.note(f"--- link back: {ev.port}", {"type": "link", "connected": True, "port": ev.port})
            return True
        if self.session is None:
            if kind == "SampleBlock":  # its leads are the selected ones (--leads), in device order
                leads = ev.leads
                if len(leads) > self.clf.max_leads:
                    raise KmerlError(
                        f"the device streams {len(leads)} leads but the bundle serves at most "
                        f"{self.clf.max_leads}; pick some with --leads"
                    )
                self._open(float(ev.fs), leads)
            else:
                return True
        assert self.session is not None
        if kind == "DeviceInfo":
            return True
        if self.t_first is None and hasattr(ev, "t0"):
            self.t_first = float(ev.t0)
        self.p.drain(self.session, self.session.feed(ev))
        if self.max_seconds is not None and self.t_first is not None:
            return self.session.t_now - self.t_first < self.max_seconds
        return True

    def finish(self, faults: dict[str, int], extra: dict[str, Any] | None = None) -> StreamStats | None:
        if self.session is None:
            self.p.note("no samples arrived from the device", {"type": "summary", "windows": 0, "faults": faults})
            return None
        self.p.drain(self.session, self.session.close())
        st = self.session.stats()
        self.p.summary(st, faults, extra)
        return st


def _fault_counts(src: Any, links: dict[str, int]) -> dict[str, int]:
    stats = dict(getattr(src, "stats", {}) or {})
    keys = (
        "garbage_bytes", "crc_errors", "resyncs", "truncated_frames", "invalid_frames", "duplicates",
        "stale_frames", "lost_frames", "gaps", "lost_samples", "restarts", "timestamp_errors",
        "queue_overflows", "overflow_samples", "dropped_events", "malformed_lines",
    )
    out = {k: int(stats[k]) for k in keys if k in stats}
    out.update(links)
    return out


def _stream_serial(a: Any, p: _Printer) -> int:
    fb = _import_bridge()
    leads = _parse_leads(a.leads)
    clf = _load(a.bundle, a.backend)
    run = _BridgeRun(clf, p, a.hop, a.max_seconds, a.source)
    src = fb.open_source(a.source, protocol=a.protocol, fs=a.fs, leads=leads)
    try:
        for ev in src:
            if not run.handle(ev):
                break
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
    run.finish(_fault_counts(src, run.links))
    return 0


def run_stream_cli(a: Any) -> int:
    """``kmerl-edge stream --source SOURCE ...``: see the module docstring."""
    if not (isinstance(a.hop, (int, float)) and math.isfinite(a.hop) and a.hop > 0):
        raise KmerlError(f"--hop must be a positive number of seconds, got {a.hop}")
    src = str(a.source)
    if not src.strip():
        raise InvalidArgumentError("--source is empty; pass a serial port, a pyserial URL or a recording file")
    p = _Printer(a.json_lines)
    if _is_serial(src):
        return _stream_serial(a, p)
    base = Path(src)
    if not (base.exists() or base.with_suffix(".hea").exists() or Path(src + ".hea").exists()):
        raise FileNotFoundError(2, "no such recording, serial port or URL", src)
    return _play_recording(a, p)


def run_demo_cli(a: Any) -> int:
    """``kmerl-edge demo``: virtual patch (pty) → pyserial → decoder → session → AF events."""
    speed = float(a.speed)
    if not speed > 0:
        raise KmerlError(f"--speed must be positive, got {a.speed}")
    clf = _load(a.bundle, a.backend)  # no default bundle: the named BundleError, printed by the CLI
    fb = _import_bridge()
    record = demo_record_path()
    if not record.with_suffix(".hea").exists():
        raise KmerlError(f"the demo recording is missing from this installation ({record}.hea)")
    leads = ("I", "II")[: max(1, clf.max_leads)]
    p = _Printer(a.json_lines)
    reference = [(s, e, r) for s, e, r in demo_reference_episodes(record) if r == "AFIB"]
    ref_txt = ", ".join(f"{s:.1f}–{e:.1f} s" for s, e, _ in reference)
    p.note(
        f"demo: virtual patch on a pty replaying {record.name} (CPSC2021, paroxysmal AF; "
        f"reference AF {ref_txt}) at {speed:g}x, leads {','.join(leads)}, 200 Hz, K-MERL frames",
        {"type": "demo", "record": record.name, "speed": speed, "reference_af": [[s, e] for s, e, _ in reference]},
    )
    warmup(clf, fs=200.0, leads=leads)
    patch = fb.VirtualPatch(
        fb.SimulateConfig(record=str(record), leads=leads, fs=200.0, protocol="kmerl", speed=speed)
    )
    port = patch.start()
    run = _BridgeRun(clf, p, getattr(a, "hop", 2.0) or 2.0, None, "virtual-patch", hangup_ends=True)
    t0 = time.monotonic()
    src = fb.open_source(port, protocol="kmerl", reconnect=False)
    try:
        for ev in src:
            run.handle(ev)
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
        patch.close()
    faults = _fault_counts(src, run.links)
    st = run.finish(faults, {"wall_s": round(time.monotonic() - t0, 2), "reference_af": [[s, e] for s, e, _ in reference]})
    if st is not None:
        found = [(lab, a, b) for lab, a, b in p.episodes() if lab == "atrial fibrillation"]
        found_txt = ", ".join(f"{a:.1f}–" + (f"{b:.1f} s" if b is not None else "(still on)") for _, a, b in found)
        p.note(f"detected atrial fibrillation: {found_txt or 'none'}")
        p.note(f"reference (CPSC2021 annotations): atrial fibrillation {ref_txt}; wall time {time.monotonic() - t0:.1f} s")
    return 0
