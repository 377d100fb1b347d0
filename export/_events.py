"""AF events on Holter recordings: score a record the way a live session does, count false alarms, and
choose the event rule a bundle ships (``af_fusion.json`` → ``event_rule``) on training patients only.

Every CPSC-2021 Holter record (2 leads, 200 Hz, ``.atr`` rhythm annotations) is scored in 10-s windows
every ``hop_s`` seconds with the bundle's reported AF probability (fused with rhythm evidence when the
bundle has an AF fusion); the events come from the session's own :class:`kmerl_edge.stream.EventRule`
state machine (hysteresis, the rule's smoothing, and quality gating: a window whose beats could not be
found neither starts nor ends an event).

- A *false event* is an AF start whose time lies outside every annotated AF episode (with ``tolerance_s``
  on both sides); false events per hour are counted over the non-AF time of the records.
- *Episode sensitivity*: the share of AF episodes of at least ``min_episode_s`` that an event covers.

Rules are written in seconds (:data:`RULE_GRID_S`) so that a rule tuned at one hop means the same at
another (:meth:`kmerl_edge._af_fusion.AfFusion.stream_rule` turns seconds into windows).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["END_CONFIRM_S", "RULE_GRID_S", "Scored", "choose_event_rule", "count_events", "holter_records",
           "score_holter_record", "seconds_rule", "summarise_events"]

#: candidate rules: on threshold (off = on − 0.2), seconds to confirm a start, seconds of smoothing,
#: quality gating; the end of an event is confirmed after :data:`END_CONFIRM_S` below the off threshold
END_CONFIRM_S = 4.0
RULE_GRID_S: dict[str, tuple[Any, ...]] = {
    "on_threshold": (0.5, 0.6, 0.7, 0.8, 0.9),
    "min_on_s": (5.0, 10.0, 20.0, 30.0, 60.0),
    "smooth_s": (0.0, 10.0, 20.0),
    "quality_gating": (False, True),
}


@dataclass
class Scored:
    record: str
    patient: str
    t_start: np.ndarray  # (W,)
    t_end: np.ndarray
    p_af: np.ndarray
    rhythm_ok: np.ndarray
    episodes: list[tuple[float, float]]
    duration_s: float
    hop_s: float


def holter_records(data_root: str | Path) -> list[Path]:
    """Every CPSC-2021 Holter record (base paths) in ``cpsc2021/`` and ``cpsc2021_extra/``."""
    root = Path(data_root)
    return sorted(p.with_suffix("") for d in ("cpsc2021", "cpsc2021_extra") for p in (root / d).glob("*.hea"))


def _episodes(base: Path) -> tuple[list[tuple[float, float]], float]:
    import wfdb

    h = wfdb.rdheader(str(base))
    ann = wfdb.rdann(str(base), "atr")
    fs, n = float(h.fs), int(h.sig_len)
    out, start = [], None
    for s, note in zip(ann.sample, ann.aux_note):
        note = (note or "").strip().rstrip("\x00")
        if not note.startswith("("):
            continue
        if note.startswith("(AFIB") and start is None:
            start = int(s)
        elif not note.startswith("(AFIB") and start is not None:
            out.append((start / fs, int(s) / fs))
            start = None
    if start is not None:
        out.append((start / fs, n / fs))
    return out, n / fs


def score_holter_record(clf: Any, base: Path, leads: Sequence[str], hop_s: float) -> Scored:
    """AF probability (as the bundle reports it) and rhythm usability of every window of one record."""
    from dataclasses import replace

    from kmerl_edge import preprocess, read_record
    from kmerl_edge._af_fusion import RHYTHM_FEATURES, fusion_rhythm_lead, window_rhythm_features
    from kmerl_edge.rhythm import analyse

    rec = read_record(base)
    rows = [rec.leads.index(x) for x in leads]
    cfg = replace(clf.bundle.preprocess_config, hop_s=hop_s)
    pre = preprocess(rec.signal[rows], fs=rec.fs, leads=leads, config=cfg)
    _, index = clf.bundle.all_queries()
    col = index.index(("rhythm", "atrial fibrillation"))
    # the fusion's beats as predict and stream find them: each window of its lead at the device rate
    lead = fusion_rhythm_lead(pre.lead_ids)
    x = rec.signal[rec.leads.index(lead)]
    n = int(round(cfg.window_s * rec.fs))
    rhythm = [analyse(x[a : a + n], fs=rec.fs, lead=lead)
              for a in (int(round(s * rec.fs)) for s in pre.window_starts_s)]
    probs = np.concatenate([clf.run_windows(pre.windows[i : i + 64], pre.lead_ids, rhythm=rhythm[i : i + 64])[:, col]
                            for i in range(0, len(pre.windows), 64)])
    feats = window_rhythm_features(pre.windows, pre.lead_ids, fs=cfg.target_fs, rhythm=rhythm)
    ok = feats[:, RHYTHM_FEATURES.index("rhythm_ok")] > 0.5
    starts = np.asarray(pre.window_starts_s, dtype=np.float64)
    eps, dur = _episodes(base)
    patient = base.name.split("_")[1] if base.name.startswith("data_") else base.name
    return Scored(base.name, patient, starts, starts + cfg.window_s, probs, ok, eps, dur, hop_s)


def seconds_rule(on_threshold: float, min_on_s: float, smooth_s: float, quality_gating: bool) -> dict[str, Any]:
    """A rule of :data:`RULE_GRID_S` as stored in ``af_fusion.json`` (``event_rule``)."""
    return {"on_threshold": on_threshold, "off_threshold": round(on_threshold - 0.2, 2), "min_on_s": min_on_s,
            "min_off_s": END_CONFIRM_S, "smooth_s": smooth_s, "quality_gating": quality_gating}


def count_events(s: Scored, rule: Any, *, tolerance_s: float = 10.0, min_episode_s: float = 30.0
                 ) -> dict[str, float]:
    """Events of ``rule`` (an :class:`~kmerl_edge.stream.EventRule`, or a seconds rule as stored in a
    bundle) on one scored record: false starts, non-AF seconds, detected / total episodes."""
    from kmerl_edge._af_fusion import event_rule_from_seconds
    from kmerl_edge._stream_events import EventDetector

    if isinstance(rule, dict):
        rule = event_rule_from_seconds(rule, s.hop_s)
    det = EventDetector(rule, "rhythm", 0)
    starts: list[float] = []
    spans: list[tuple[float, float]] = []
    on_t: float | None = None
    for i in range(len(s.p_af)):
        ev = det.update(i, float(s.t_start[i]), float(s.t_end[i]), np.array([float(s.p_af[i])]),
                        rhythm_ok=bool(s.rhythm_ok[i]))
        if ev is None:
            continue
        if ev.kind == "started":
            starts.append(ev.t)
            on_t = ev.t
        elif on_t is not None:
            spans.append((on_t, ev.t))
            on_t = None
    if on_t is not None:
        spans.append((on_t, s.duration_s))
    false = sum(1 for t in starts if not any(a - tolerance_s <= t <= b + tolerance_s for a, b in s.episodes))
    af_s = sum(b - a for a, b in s.episodes)
    long_eps = [(a, b) for a, b in s.episodes if b - a >= min_episode_s]
    hit = sum(1 for a, b in long_eps if any(max(a, x) < min(b, y) for x, y in spans))
    return {"false_events": float(false), "non_af_s": max(s.duration_s - af_s, 0.0),
            "episodes": float(len(long_eps)), "detected": float(hit)}


def summarise_events(scored: Sequence[Scored], rule: Any) -> dict[str, float]:
    tot = {"false_events": 0.0, "non_af_s": 0.0, "episodes": 0.0, "detected": 0.0}
    for s in scored:
        for k, v in count_events(s, rule).items():
            tot[k] += v
    hours = tot["non_af_s"] / 3600.0
    return {**tot, "non_af_hours": round(hours, 3),
            "false_per_hour": round(tot["false_events"] / hours, 3) if hours > 0 else float("nan"),
            "sensitivity": round(tot["detected"] / tot["episodes"], 3) if tot["episodes"] else float("nan")}


def choose_event_rule(scored: Sequence[Scored], *, min_sensitivity: float = 0.8) -> tuple[dict[str, Any], dict[str, float]]:
    """The rule of :data:`RULE_GRID_S` with the fewest false events per hour on ``scored`` (training
    patients) among those detecting at least ``min_sensitivity`` of the episodes; among equals the one
    detecting the most episodes, then the most conservative (longest confirmation, most smoothing, highest
    threshold, gating), because training false alarms are rare and the permissive rules alarm on new
    patients."""
    grid = [seconds_rule(on, k, sm, g) for on, k, sm, g in itertools.product(*RULE_GRID_S.values())]
    results = [(r, summarise_events(scored, r)) for r in grid]
    ok = [x for x in results if x[1]["sensitivity"] >= min_sensitivity] or results
    return min(ok, key=lambda x: (x[1]["false_per_hour"], -x[1]["sensitivity"], -x[0]["min_on_s"],
                                  -x[0]["smooth_s"], -x[0]["on_threshold"], -int(x[0]["quality_gating"])))
