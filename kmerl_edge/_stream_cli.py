"""``kmerl-edge stream`` and ``kmerl-edge demo``.

``stream`` reads any :class:`~kmerl_edge.stream.Source` (a recording played at real time or ``--speed``
times faster, ``synthetic://``, or a serial port / pyserial URL through the ``serial`` source plugin of
the firmware bridge) into a :class:`StreamSession` and prints one line per window and one per rhythm event
(``--json-lines``: one JSON object per line). When the device's rate or leads change, the session ends
cleanly (its results and summary are printed) and the next one starts. The command ends with a summary
when the source ends, stays disconnected longer than ``--disconnect-timeout``, or ``--max-seconds`` of
signal have been streamed.

``demo`` is the whole chain on the package's own data: a virtual patch on a pty (the bridge's
``virtual-patch`` source) replays the shipped CPSC2021 recording (paroxysmal atrial fibrillation) as K-MERL
frames, the serial reader decodes them, the session scores them with the default bundle, and the AF events
are printed as they happen, then a summary (windows, latency median/p99, link and decoder faults), the
reference annotations and a "recording finished" line.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ._errors import InvalidArgumentError, KmerlError
from ._jsonout import dumps
from ._source import DeviceInfo, Gap, LeadStatus, LinkStatus, SampleBlock, Source, open_source, source_kind
from ._stream_errors import StreamConfigError, UnknownSourceError
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
    from ._errors import require

    wfdb: Any = require("wfdb", "io")  # MissingExtraError naming the extra on a device-only install

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


# ----------------------------------------------------------------------------------------------- output
def _hr_text(r: WindowResult) -> str:
    rh = r.rhythm
    if rh is None:
        return ""
    if rh.hr_bpm is None:
        return f"HR n/a ({rh.quality})"
    irr = f", RR irr {rh.rr_irregularity:.2f}" if rh.rr_irregularity is not None else ""
    return f"HR {rh.hr_bpm:.0f} bpm{irr}"


class _Printer:
    def __init__(self, json_lines: bool, out: TextIO | None = None) -> None:
        self.json = json_lines
        self.out = out or sys.stdout
        self.events: list[RhythmEvent] = []
        self.results: list[WindowResult] = []  # kept for --plot
        self._noted: set[str] = set()  # window notes already printed (each once)

    def _emit(self, obj: dict[str, Any] | None, text: str) -> None:
        if self.json:
            if obj is not None:
                print(dumps(obj), file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    def note(self, text: str, obj: dict[str, Any] | None = None) -> None:
        self._emit(obj, text)

    def result(self, r: WindowResult) -> None:
        self.results.append(r)
        span = f"{r.t_start:7.1f}–{r.t_end:7.1f} s"
        if r.skipped:
            hr = f"  {_hr_text(r)}" if r.rhythm is not None else ""
            self._emit(r.to_dict(), f"{span}  skipped ({r.reason}): {r.detail}{hr}")
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
        hr = f"  {_hr_text(r)}" if r.rhythm is not None else ""
        self._emit(
            r.to_dict(), f"{span}  {' | '.join(parts)}{hr}  quality {q} ({leads}){flags}  {r.latency_ms:.1f} ms"
        )
        for note in r.notes:  # once per session in words; the flag marks every window it applies to
            if note not in self._noted:
                self._noted.add(note)
                self._emit(None, f"note: {note} (from {r.t_start:.1f} s)")

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
            f">>> {e.t:7.1f} s  {e.label} {e.kind.upper()}  (confirmed at {e.t_confirmed:.1f} s, {e.evidence})",
        )

    def summary(self, st: StreamStats, faults: dict[str, int], extra: dict[str, Any] | None = None) -> None:
        obj = {**st.to_dict(), "faults": faults, **(extra or {})}
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(st.skipped.items())) or "none"
        fault_txt = ", ".join(f"{k} {v}" for k, v in faults.items() if v) or "none"
        lat = (
            f"window latency median {st.latency_ms_median:.1f} ms, p99 {st.latency_ms_p99:.1f} ms "
            "(last sample in → result out: queue + preprocessing + inference; first window, the warm-up, "
            "left out)"
            if st.scored > 1
            else "window latency: not enough scored windows"
        )
        late = f", late chunks dropped {st.late_chunks}" if st.late_chunks else ""
        lines = [
            f"summary: {st.windows} windows ({st.scored} scored; skipped: {skipped})",
            f"         {lat}",
            f"         gaps {st.gaps} ({st.gap_samples} samples), clock resets {st.clock_resets}{late}, "
            f"dropped for backlog {st.dropped}, rhythm events {st.events}, lead exclusions "
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
def _parse_leads(text: str | None) -> tuple[str, ...] | None:
    from ._leads import parse_leads

    return tuple(parse_leads(text)) if text else None


_FAULT_KEYS = (
    "garbage_bytes", "crc_errors", "resyncs", "truncated_frames", "invalid_frames", "implausible_frames",
    "duplicates", "stale_frames", "lost_frames", "gaps", "lost_samples", "restarts", "timestamp_errors",
    "clock_jumps", "queue_overflows", "overflow_samples", "dropped_events", "malformed_lines",
    "out_of_range_lines",
)


def _fault_counts(src: Source, links: dict[str, int]) -> dict[str, int]:
    stats = dict(src.stats or {})
    out = {k: int(stats[k]) for k in _FAULT_KEYS if k in stats}
    out.update(links)
    return out


class _Run:
    """Consume a source into sessions: one per device set-up (rate, leads), opened by its first samples."""

    def __init__(self, clf: Any, p: _Printer, hop: float, *, source: str, max_seconds: float | None = None,
                 disconnect_timeout: float | None = None, hangup_ends: bool = False) -> None:
        self.clf = clf
        self.p = p
        self.hop = hop
        self.source = source
        self.max_seconds = max_seconds
        self.disconnect_timeout = disconnect_timeout
        self.hangup_ends = hangup_ends
        self.session: StreamSession | None = None
        self.sessions = 0
        self.t_first: float | None = None
        self.lost_at: float | None = None
        self.links: dict[str, int] = {"disconnects": 0, "reconnects": 0}
        self.src: Source | None = None
        self.last: StreamStats | None = None
        self.streamed_s = 0.0

    # -- sessions
    def _open(self, fs: float, leads: Sequence[str], t0: float) -> StreamSession:
        if len(leads) > self.clf.max_leads:
            raise KmerlError(
                f"the device streams {len(leads)} leads but the bundle serves at most {self.clf.max_leads}; "
                "pick some with --leads"
            )
        clf = self.clf.for_leads(leads)  # a companion bundle scores more leads than the primary serves
        warmup(clf, fs=fs, leads=leads)
        self.session = clf.stream(fs=fs, leads=leads, hop_s=self.hop, device_id=self.source)
        self.sessions += 1
        _start_note(self.p, clf, fs, tuple(leads), self.source)
        if self.sessions == 1 and t0 > 0:
            self.p.note(
                f"note: the first sample received is at device time {t0:.3f} s: what the device sent "
                "before was not received",
                {"type": "note", "first_t0": t0},
            )
        return self.session

    def _end_session(self, why: str | None = None) -> None:
        s = self.session
        if s is None:
            return
        self.session = None
        self.p.drain(s, s.close())
        st = s.stats()
        self.streamed_s += st.samples / s.fs
        extra = {"session": self.sessions}
        if why:
            extra["ended"] = why  # type: ignore[assignment]
            self.p.note(f"--- session {self.sessions} ended: {why}", {"type": "session_end", "session": self.sessions,
                                                                      "reason": why})
        self.p.summary(st, _fault_counts(self.src, self.links) if self.src is not None else {}, extra)
        self.last = st

    # -- messages
    def handle(self, msg: Any) -> str | None:
        """Feed one message; a reason to stop, or None to go on."""
        if isinstance(msg, LinkStatus):
            if not msg.connected:
                if self.hangup_ends:
                    return "recording finished"
                self.links["disconnects"] += 1
                self.lost_at = time.monotonic()
                self.p.note(f"--- link lost: {msg.port} (device disconnected)",
                            {"type": "link", "connected": False, "port": msg.port, "detail": msg.detail})
            elif self.lost_at is not None:
                self.links["reconnects"] += 1
                self.lost_at = None
                self.p.note(f"--- link back: {msg.port}", {"type": "link", "connected": True, "port": msg.port})
            return None
        if isinstance(msg, DeviceInfo):
            s = self.session
            if s is not None and abs(msg.fs - s.fs) > 1e-6 * s.fs:
                self._end_session(f"the device now samples at {msg.fs:g} Hz (was {s.fs:g} Hz)")
            return None
        if isinstance(msg, SampleBlock):
            s = self.session
            if s is not None and (abs(msg.fs - s.fs) > 1e-6 * s.fs or tuple(msg.leads) != s.leads):
                self._end_session(f"the device now streams {','.join(msg.leads)} at {msg.fs:g} Hz "
                                  f"(was {','.join(s.leads)} at {s.fs:g} Hz)")
            if self.session is None:
                self._open(float(msg.fs), tuple(msg.leads), float(msg.t0))
            if self.t_first is None:
                self.t_first = float(msg.t0)
        elif not isinstance(msg, Gap | LeadStatus) or self.session is None:
            return None
        assert self.session is not None
        self.p.drain(self.session, self.session.feed(msg))
        if self.max_seconds is not None and self.t_first is not None:
            if self.session.t_now - self.t_first >= self.max_seconds:
                return f"--max-seconds {self.max_seconds:g} reached"
        return None

    def consume(self, src: Source) -> str:
        """Read ``src`` until it ends, stays disconnected too long, or a limit is reached; returns why."""
        self.src = src
        try:
            while True:
                msg = src.get(timeout=0.1)
                if msg is None:
                    if src.ended:
                        return "the source ended"
                    if (self.lost_at is not None and self.disconnect_timeout is not None
                            and time.monotonic() - self.lost_at > self.disconnect_timeout):
                        return f"disconnected for more than {self.disconnect_timeout:g} s"
                    continue
                why = self.handle(msg)
                if why is not None:
                    return why
        except KeyboardInterrupt:
            return "interrupted"
        finally:
            src.close()

    def finish(self, why: str, extra: dict[str, Any] | None = None) -> StreamStats | None:
        if self.session is None and self.sessions == 0:
            faults = _fault_counts(self.src, self.links) if self.src is not None else {}
            self.p.note(f"no samples arrived from the source ({why})",
                        {"type": "summary", "windows": 0, "faults": faults, "ended": why})
            return None
        if self.session is None:
            return self.last
        s = self.session
        self.session = None
        self.p.drain(s, s.close())
        st = s.stats()
        self.streamed_s += st.samples / s.fs
        self.p.note(f"--- end of stream: {why}", {"type": "end", "reason": why})
        self.p.summary(st, _fault_counts(self.src, self.links) if self.src is not None else {},
                       {"ended": why, "sessions": self.sessions, **(extra or {})})
        self.last = st
        return st


def _source_options(kind: str, a: Any) -> dict[str, Any]:
    leads = _parse_leads(a.leads)
    if kind == "recording":
        speed = float(a.speed)
        if not speed > 0:
            raise StreamConfigError(f"--speed must be positive, got {a.speed}")
        return {"fs": a.fs, "leads": leads, "speed": speed, "max_seconds": a.max_seconds,
                "lead_map": getattr(a, "lead_map", None)}
    if kind == "synthetic":
        return {"fs": a.fs, "leads": leads, "speed": float(a.speed)}
    opts: dict[str, Any] = {"fs": a.fs, "leads": leads}
    if kind == "serial":
        opts["protocol"] = a.protocol
    return opts


def run_stream_cli(a: Any) -> int:
    """``kmerl-edge stream --source SOURCE ...``: see the module docstring."""
    if not (isinstance(a.hop, (int, float)) and math.isfinite(a.hop) and a.hop > 0):
        raise StreamConfigError(f"--hop must be a positive number of seconds, got {a.hop}")
    timeout = getattr(a, "disconnect_timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise StreamConfigError(f"--disconnect-timeout must be a positive number of seconds, got {timeout}")
    if a.max_seconds is not None and not (math.isfinite(a.max_seconds) and a.max_seconds > 0):
        raise StreamConfigError(f"--max-seconds must be positive, got {a.max_seconds}")
    spec = str(a.source)
    if not spec.strip():
        raise InvalidArgumentError("--source is empty; pass a serial port, a pyserial URL or a recording file")
    p = _Printer(a.json_lines)
    try:
        kind = source_kind(spec)
    except UnknownSourceError:
        if "://" not in spec and not spec.startswith("/dev/"):
            raise UnknownSourceError(f"no such recording, serial port or URL: {spec}") from None
        raise
    opts = _source_options(kind, a)
    clf = _load(a.bundle, a.backend)
    src = open_source(spec, **opts)
    for note in getattr(src, "notes", ()):
        p.note(f"note: {note}", {"type": "note", "note": note})
    speed = opts.get("speed")
    label = spec
    if speed is not None:
        label += " as fast as it is read" if math.isinf(speed) else f" at {speed:g}x"
    run = _Run(clf, p, a.hop, source=label, max_seconds=a.max_seconds, disconnect_timeout=timeout)
    try:
        why = run.consume(src)
        run.finish(why)
    finally:
        _plot_if_asked(a, p)
    return 0


def _plot_if_asked(a: Any, p: _Printer) -> None:
    """``--plot PNG``: the stream's timeline (AF probability, heart rate, events, quality), on close."""
    out = getattr(a, "plot", None)
    if not out or not p.results:
        return
    from ._plot import plot_stream

    reference: list[tuple[float, float]] = []
    base = Path(str(a.source))
    base = base.with_suffix("") if base.suffix in _RECORD_SUFFIXES else base
    if base.with_suffix(".atr").exists():
        try:
            reference = [(s, e) for s, e, r in demo_reference_episodes(base) if r == "AFIB"]
        except (ImportError, ValueError, OSError):
            reference = []
    plot_stream(p.results, p.events, out, title=f"kmerl-edge stream {a.source}", reference=reference)
    p.note(f"plot: {out}", {"type": "plot", "path": str(out)})


def run_demo_cli(a: Any) -> int:
    """``kmerl-edge demo``: virtual patch (pty) → pyserial → decoder → session → AF events."""
    from urllib.parse import quote

    speed = float(a.speed)
    if not speed > 0:
        raise StreamConfigError(f"--speed must be positive, got {a.speed}")
    clf = _load(a.bundle, a.backend)  # no default bundle: the named BundleError, printed by the CLI
    record = demo_record_path()
    if not record.with_suffix(".hea").exists():
        raise KmerlError(f"the demo recording is missing from this installation ({record}.hea)")
    leads = ("I", "II")[: max(1, clf.max_leads)]
    spec = f"virtual-patch://{quote(str(record))}?fs=200&leads={','.join(leads)}&speed={speed:g}&protocol=kmerl"
    try:
        source_kind(spec)
    except UnknownSourceError:
        from ._source import PLUGIN_ERRORS

        why = PLUGIN_ERRORS.get("serial")
        raise KmerlError(
            "the demo needs the firmware bridge's virtual patch (the 'serial' source plugin); "
            + (f"it is installed but failed to load: {why}" if why else "install it with: pip install 'kmerl-edge[serial]'")
        ) from None
    p = _Printer(a.json_lines)
    reference = [(s, e, r) for s, e, r in demo_reference_episodes(record) if r == "AFIB"]
    ref_txt = ", ".join(f"{s:.1f}–{e:.1f} s" for s, e, _ in reference)
    p.note(
        f"demo: virtual patch on a pty replaying {record.name} (CPSC2021, paroxysmal AF; "
        f"reference AF {ref_txt}) at {speed:g}x, leads {','.join(leads)}, 200 Hz, K-MERL frames",
        {"type": "demo", "record": record.name, "speed": speed, "reference_af": [[s, e] for s, e, _ in reference]},
    )
    warmup(clf, fs=200.0, leads=leads)
    t0 = time.monotonic()
    src = open_source(spec)
    run = _Run(clf, p, getattr(a, "hop", 2.0) or 2.0, source="virtual-patch", hangup_ends=True)
    why = run.consume(src)
    wall = time.monotonic() - t0
    st = run.finish(why, {"wall_s": round(wall, 2), "reference_af": [[s, e] for s, e, _ in reference]})
    if st is not None:
        found = [(lab, a, b) for lab, a, b in p.episodes() if lab == "atrial fibrillation"]
        found_txt = ", ".join(f"{a:.1f}–" + (f"{b:.1f} s" if b is not None else "(still on)") for _, a, b in found)
        p.note(f"detected atrial fibrillation: {found_txt or 'none'}")
        p.note(f"reference (CPSC2021 annotations): atrial fibrillation {ref_txt}")
        fusion = getattr(clf.for_leads(leads), "af_fusion", None)
        rule = fusion.event_rule if fusion is not None else None
        if rule and {"min_on_s", "smooth_s", "on_threshold", "min_off_s", "off_threshold"} <= set(rule):
            p.note(f"AF event rule (tuned on training patients): on after {rule['min_on_s']:g} s with the "
                   f"{rule['smooth_s']:g}-s mean AF probability >= {rule['on_threshold']:g}, off after "
                   f"{rule['min_off_s']:g} s <= {rule['off_threshold']:g}; a shorter episode, or one cut by the "
                   "end of the recording, raises no event")
        if why == "recording finished":
            p.note(f"recording finished: {run.streamed_s:.1f} s of signal streamed in {wall:.1f} s")
        else:
            p.note(f"demo ended: {why}")
    return 0
