"""Pictures: ECG strips with per-window scores (``classify --plot``) and a stream timeline (``stream --plot``).

Strips are drawn at true paper scale — 25 mm/s and 10 mm/mV on a 1 mm / 5 mm grid — so a PNG printed
at its stated DPI measures like a standard ECG. The trace is shown with a 0.5 Hz high-pass for display
only (the model sees the shared preprocessing, not this). matplotlib is imported lazily (pip extra
``plot``); the Agg backend is used, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import KmerlError, require

__all__ = ["plot_classification", "plot_stream", "beats_for"]

MM = 1 / 25.4  # inches per millimetre
PAPER_SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
_GRID_MINOR = "#f4c2c2"
_GRID_MAJOR = "#e08080"
_TRACE = "#111111"
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _plt() -> Any:
    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg")  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    return plt


def _save_png(plt: Any, fig: Any, out: Path, dpi: int) -> Path:
    """Write ``fig`` to ``out`` as PNG through a ``.part`` file (no partial picture is ever left)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out


def _display_filter(x: np.ndarray, fs: float) -> np.ndarray:
    """0.5 Hz high-pass (zero-phase) to take out baseline wander for display."""
    from scipy.signal import butter, sosfiltfilt

    if x.shape[-1] < 3 * int(fs):
        return x - np.median(x, axis=-1, keepdims=True)
    sos = butter(2, 0.5, btype="highpass", fs=fs, output="sos")
    return np.asarray(sosfiltfilt(sos, x.astype(np.float64), axis=-1))


def beats_for(signal: np.ndarray, fs: float, leads: Sequence[str]) -> dict[str, Any] | None:
    """Beat times (s) and heart rate from :func:`kmerl_edge.rhythm.analyse`, when this runtime has it.

    Returns ``{"beats_s": array, "heart_rate_bpm": float | None, "lead": name}`` or ``None`` when the
    rhythm module is not available or finds no beats.
    """
    try:
        from . import rhythm  # type: ignore[attr-defined]
    except ImportError:
        return None
    analyse = getattr(rhythm, "analyse", None)
    if analyse is None:
        return None
    lead = "II" if "II" in leads else leads[0]
    try:
        res = analyse(signal[list(leads).index(lead)], fs=fs, lead=lead)
    except KmerlError:
        return None
    beats = _first_attr(res, ("beats_s", "beat_times_s", "r_peaks_s", "beats"))
    if beats is None:
        samples = _first_attr(res, ("r_peaks", "beat_samples", "peaks"))
        beats = None if samples is None else np.asarray(samples, dtype=np.float64) / fs
    if beats is None:
        return None
    hr = _first_attr(res, ("heart_rate_bpm", "hr_bpm", "heart_rate"))
    return {"beats_s": np.asarray(beats, dtype=np.float64), "heart_rate_bpm": hr, "lead": lead}


def _first_attr(obj: Any, names: Sequence[str]) -> Any:
    for n in names:
        v = obj.get(n) if isinstance(obj, Mapping) else getattr(obj, n, None)
        if v is not None:
            return v
    return None


def _grid(ax: Any, t0: float, t1: float, y0: float, y1: float) -> None:
    """ECG paper: 1 mm (0.04 s, 0.1 mV) minor and 5 mm (0.2 s, 0.5 mV) major lines."""
    for tstep, vstep, color, lw in ((0.04, 0.1, _GRID_MINOR, 0.3), (0.2, 0.5, _GRID_MAJOR, 0.6)):
        xs = np.arange(np.ceil(t0 / tstep - 1e-6) * tstep, t1 + 1e-9, tstep)
        ys = np.arange(np.ceil(y0 / vstep - 1e-6) * vstep, y1 + 1e-9, vstep)
        ax.vlines(xs, y0, y1, colors=color, lw=lw, zorder=0)
        ax.hlines(ys, t0, t1, colors=color, lw=lw, zorder=0)


def _row_range(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [0.1, 99.9]) if x.size else (-1.0, 1.0)
    lo = min(-1.0, float(np.floor(lo * 2) / 2) - 0.5)
    hi = max(1.0, float(np.ceil(hi * 2) / 2) + 0.5)
    return max(lo, -4.0), min(hi, 4.0)


def plot_classification(
    rec: Any,
    pred: Any,
    windows: Sequence[Mapping[str, Any]],
    out: str | Path,
    *,
    label_sets: Mapping[str, Sequence[str]],
    beats: Mapping[str, Any] | None = None,
    max_strip_s: float = 60.0,
    dpi: int = 150,
    top_k: int = 3,
) -> Path:
    """Write a PNG: ECG strips (10 s per row, every lead, at 25 mm/s and 10 mm/mV) and per-window scores.

    ``windows`` are :func:`kmerl_edge.cli._window_rows` rows ({start_s, end_s, scores}); ``beats`` a
    :func:`beats_for` result (``None``: computed here when the rhythm module is available).
    """
    plt = _plt()
    out = Path(out)
    fs = float(rec.fs)
    leads = list(pred.leads) if getattr(pred, "leads", None) else list(rec.leads)
    rows_idx = [list(rec.leads).index(lead) for lead in leads]
    x = _display_filter(np.asarray(rec.signal, dtype=np.float64)[rows_idx], fs)
    dur = x.shape[1] / fs
    shown = min(dur, max_strip_s)
    rh = getattr(pred, "rhythm", None)
    if beats is None and rh is not None and getattr(rh, "beat_times_s", None) is not None:
        beats = {"beats_s": np.asarray(rh.beat_times_s, dtype=np.float64), "heart_rate_bpm": rh.hr_bpm,
                 "lead": rh.lead}
    if beats is None:
        beats = beats_for(np.asarray(rec.signal, dtype=np.float64), fs, tuple(rec.leads))
    seg_s = 10.0
    segments = [(s, min(s + seg_s, shown)) for s in np.arange(0.0, shown - 1e-9, seg_s)]
    strip_rows = [(s, e, i, lead) for s, e in segments for i, lead in enumerate(leads)]
    ranges = [_row_range(x[i, int(s * fs): int(e * fs)]) for s, e, i, _ in strip_rows]

    left, right, top, gap, bottom = 22.0, 8.0, 18.0, 7.0, 14.0  # mm
    strip_w = seg_s * PAPER_SPEED_MM_S
    score_h = 38.0
    n_sets = len(windows[0]["scores"]) if windows else 0
    heights = [(hi - lo) * GAIN_MM_MV for lo, hi in ranges]
    total_h = top + sum(heights) + gap * len(heights) + n_sets * (score_h + gap + 8.0) + bottom
    total_w = left + strip_w + right
    fig = plt.figure(figsize=(total_w * MM, total_h * MM), dpi=dpi)
    y = total_h - top
    title = f"{rec.name or 'recording'} — {len(leads)} lead(s), {fs:g} Hz, {dur:.1f} s"
    if shown < dur:
        title += f" (first {shown:.0f} s drawn)"
    fig.text(left / total_w, 1 - 6.0 / total_h, title, fontsize=9, weight="bold", va="center")
    fig.text(
        left / total_w, 1 - 12.0 / total_h,
        "25 mm/s, 10 mm/mV; grid 1 mm (0.04 s, 0.1 mV) and 5 mm; 0.5 Hz high-pass for display"
        + (f"; ▼ beats detected on lead {beats['lead']}" if beats else "")
        + (f" (mean heart rate {float(beats['heart_rate_bpm']):.0f} bpm)" if beats and beats.get("heart_rate_bpm") else ""),
        fontsize=6.5, color="#555555", va="center",
    )
    for (s, e, i, lead), (lo, hi), h in zip(strip_rows, ranges, heights):
        y -= h
        w = (e - s) * PAPER_SPEED_MM_S
        ax = fig.add_axes((left / total_w, y / total_h, w / total_w, h / total_h))
        _grid(ax, s, e, lo, hi)
        seg = x[i, int(round(s * fs)): int(round(e * fs))]
        ax.plot(s + np.arange(seg.size) / fs, seg, color=_TRACE, lw=0.6, zorder=2)
        if beats is not None:
            b = beats["beats_s"]
            b = b[(b >= s) & (b < e)]
            ax.plot(b, np.full(b.shape, hi - 0.15), "v", color="#1f4e9c", ms=3, zorder=3)
        ax.set_xlim(s, e)
        ax.set_ylim(lo, hi)
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
        ax.text(-2.0 / w, 0.5, lead, transform=ax.transAxes, ha="right", va="center", fontsize=8, weight="bold")
        if i == 0:
            ax.text(0.0, 1.0 + 1.0 / h, f"{s:.0f}–{e:.0f} s", transform=ax.transAxes, fontsize=6, va="bottom")
        y -= gap
    if windows:
        centres = np.asarray([(float(w["start_s"]) + float(w["end_s"])) / 2 for w in windows])
        for ls in list(windows[0]["scores"]):
            y -= score_h + 4.0
            ax = fig.add_axes((left / total_w, y / total_h, strip_w / total_w, score_h / total_h))
            classes = list(label_sets.get(ls, windows[0]["scores"][ls].keys()))
            if len(windows) == 1:  # one window: every class as a bar
                probs = [float(windows[0]["scores"][ls].get(c, 0.0)) for c in classes]
                ax.barh(range(len(classes)), probs, color="#1f77b4", alpha=0.75)
                for k, (c, prob) in enumerate(zip(classes, probs)):
                    ax.text(0.005, k, f" {c}  {prob:.2f}", va="center", fontsize=6.5)
                ax.set_xlim(0, 1)
                ax.set_yticks([])
                ax.invert_yaxis()
                ax.set_title(f"{ls}: scores of the one 10-s window", fontsize=7, loc="left")
                ax.tick_params(labelsize=6)
                ax.set_xlabel("probability", fontsize=7)
                y -= gap + 4.0
                continue
            peak = {c: max(float(w["scores"][ls].get(c, 0.0)) for w in windows) for c in classes}
            for k, c in enumerate(sorted(classes, key=lambda c: -peak[c])[:top_k]):
                p = [float(w["scores"][ls].get(c, np.nan)) for w in windows]
                ax.plot(centres, p, "o-", color=_COLORS[k % len(_COLORS)], ms=3, lw=1.2, label=f"{c}")
            for w in windows:
                ax.axvspan(float(w["start_s"]), float(w["end_s"]), color="#000000", alpha=0.025, lw=0)
            ax.set_xlim(0, max(dur, 1e-3))
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability", fontsize=7)
            ax.set_title(
                f"{ls}: per-window scores ({len(windows)} windows of "
                f"{float(windows[0]['end_s']) - float(windows[0]['start_s']):g} s, plotted at window centres)",
                fontsize=7, loc="left",
            )
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper right", ncol=min(3, top_k), framealpha=0.8)
            y -= gap
        if len(windows) > 1:
            ax.set_xlabel("time (s)", fontsize=7)
    return _save_png(plt, fig, out, dpi)


_QUALITY_COLOR = {"good": "#2ca02c", "degraded": "#ff9f1c", "unusable": "#d62728", "skipped": "#7f7f7f"}


def plot_stream(
    results: Sequence[Any],
    events: Sequence[Any],
    out: str | Path,
    *,
    label: str = "atrial fibrillation",
    title: str = "",
    reference: Sequence[tuple[float, float]] = (),
    dpi: int = 130,
) -> Path:
    """Write a PNG timeline of a stream: ``label`` probability per window (raw and smoothed) with its
    events, heart rate (when the results carry it), and per-window signal quality and gaps."""
    plt = _plt()
    out = Path(out)
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.4), sharex=True, height_ratios=[3, 2, 1.1], dpi=dpi)
    ax_p, ax_hr, ax_q = axes
    t_end = np.asarray([float(r.t_end) for r in results])
    # values are drawn at window centres, the time the session gives its events
    t_mid = np.asarray([(float(r.t_start) + float(r.t_end)) / 2 for r in results])
    raw = np.asarray([float(r.scores.get(label, np.nan)) if not r.skipped else np.nan for r in results])
    smooth = np.asarray([float(r.smoothed.get(label, np.nan)) if not r.skipped else np.nan for r in results])
    for s, e in reference:
        ax_p.axvspan(s, e, ymin=0.0, ymax=0.06, color="#444444", alpha=0.8, lw=0)
    spans: list[tuple[float, float | None]] = []
    start: float | None = None
    for ev in sorted((e for e in events if e.label == label), key=lambda e: e.t):
        if ev.kind == "started":
            start = ev.t
        elif ev.kind == "ended" and start is not None:
            spans.append((start, ev.t))
            start = None
    if start is not None:
        spans.append((start, None))
    t_max = float(t_end.max()) if t_end.size else 1.0
    for span_start, span_end in spans:
        ax_p.axvspan(span_start, span_end if span_end is not None else t_max, color="#d62728", alpha=0.12, lw=0)
    for ev in events:
        if ev.label == label:
            ax_p.axvline(ev.t, color="#d62728", lw=0.8, ls="--")
            ax_p.text(ev.t, 0.97, f" {ev.kind} {ev.t:.0f} s", fontsize=6.5, color="#d62728", rotation=90,
                      ha="right" if ev.kind == "started" else "left", va="top",
                      transform=ax_p.get_xaxis_transform())
    ax_p.plot(t_mid, raw, "o", color="#1f77b4", ms=2.5, alpha=0.6, label="window")
    ax_p.plot(t_mid, smooth, "-", color="#1f77b4", lw=1.6, label="smoothed")
    ax_p.set_ylim(0, 1)
    ax_p.set_ylabel(f"P({label})", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color="#d62728", alpha=0.2)]
    ax_p.legend(
        ax_p.get_legend_handles_labels()[0] + handles + ([plt.Rectangle((0, 0), 1, 1, color="#444444")] if reference else []),
        ["window", "smoothed", "event (detected)"] + (["reference annotation"] if reference else []),
        fontsize=7, loc="upper left", framealpha=0.85,
    )
    ax_p.grid(alpha=0.3)
    if title:
        ax_p.set_title(title, fontsize=9, loc="left", pad=14)

    hr = np.asarray([_hr_of(r) for r in results], dtype=np.float64)
    if np.isfinite(hr).any():
        ax_hr.plot(t_mid, hr, "-", color="#9467bd", lw=1.4)
        lo, hi = np.nanmin(hr), np.nanmax(hr)
        ax_hr.set_ylim(max(0, lo - 15), hi + 15)
    else:
        ax_hr.text(0.5, 0.5, "heart rate not reported by this stream", ha="center", va="center",
                   transform=ax_hr.transAxes, fontsize=8, color="#777777")
        ax_hr.set_yticks([])
    for ev in events:  # heart-rate events (bradycardia, tachycardia, pause) and other labels
        if ev.label != label:
            ax_hr.axvline(ev.t, color="#9467bd", lw=0.7, ls=":")
            ax_hr.text(ev.t, 0.97, f" {ev.label} {ev.kind}", fontsize=6, color="#6a3d9a", rotation=90,
                       ha="right" if ev.kind == "started" else "left", va="top",
                       transform=ax_hr.get_xaxis_transform())
    ax_hr.set_ylabel("heart rate (bpm)", fontsize=8)
    ax_hr.grid(alpha=0.3)

    # Windows overlap (10 s every hop): each window's quality is drawn over one hop around its centre.
    hop = float(np.median(np.diff(t_end))) if t_end.size > 1 else 0.0
    for r, mid in zip(results, t_mid):
        q = "skipped" if r.skipped else (r.quality.overall if r.quality is not None else "skipped")
        width = min(hop, float(r.t_end) - float(r.t_start)) if hop > 0 else float(r.t_end) - float(r.t_start)
        ax_q.barh(0, width, left=mid - width / 2, height=0.8,
                  color=_QUALITY_COLOR.get(q, "#7f7f7f"), alpha=0.6, lw=0)
        if getattr(r, "missing_fraction", 0.0) > 0 or "gap" in getattr(r, "flags", ()):
            ax_q.plot([mid], [0], "x", color="#000000", ms=4)
    ax_q.set_yticks([])
    ax_q.set_ylabel("quality", fontsize=8)
    ax_q.legend(
        [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.5) for c in _QUALITY_COLOR.values()]
        + [plt.Line2D([], [], marker="x", color="#000000", ls="")],
        list(_QUALITY_COLOR) + ["gap"], fontsize=6.5, ncol=5, loc="upper left", bbox_to_anchor=(0, -0.35),
        frameon=False,
    )
    ax_q.set_xlabel("device time (s); each 10-s window drawn at its centre", fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=7)
    ax_q.set_xlim(0, t_max)
    fig.tight_layout()
    return _save_png(plt, fig, out, dpi)


def _hr_of(r: Any) -> float:
    """Heart rate of a window result, if the runtime reports one (``heart_rate_bpm`` or ``rhythm``)."""
    v = getattr(r, "heart_rate_bpm", None)
    if v is None:
        rh = getattr(r, "rhythm", None)
        v = _first_attr(rh, ("heart_rate_bpm", "hr_bpm")) if rh is not None else None
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")
