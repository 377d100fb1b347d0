"""AF events on Holter recordings: tune the event rule on training patients, count false alarms on held-out ones.

The scoring, counting and rule choice live in :mod:`export._events` (the exporter tunes the rule a bundle
ships with the same code). This benchmark scores every CPSC-2021 Holter record at the session's default
hop (2 s), chooses a rule on the patients outside the bundle's held-out list, and reports false events per
hour and episode sensitivity on the held-out patients for that rule, for the rule the bundle ships
(``af_fusion.json`` → ``event_rule``) and for the session's plain default rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export._events import Scored, choose_event_rule, holter_records, score_holter_record, summarise_events
from export._events import count_events as _count_seconds_or_rule

__all__ = ["RuleCandidate", "count_events", "run_af_events"]


@dataclass(frozen=True)
class RuleCandidate:
    """A rule in windows of the benchmark's hop (as :class:`kmerl_edge.stream.EventRule` counts them)."""

    on_threshold: float
    off_threshold: float
    min_on_windows: int
    min_off_windows: int
    smooth: int
    quality_gating: bool

    def event_rule(self) -> Any:
        from kmerl_edge._stream_types import EventRule

        return EventRule(on_threshold=self.on_threshold, off_threshold=self.off_threshold,
                         min_on_windows=self.min_on_windows, min_off_windows=self.min_off_windows,
                         smooth_windows=self.smooth, quality_gating=self.quality_gating)


_Scored = Scored


def count_events(s: Scored, rule: RuleCandidate | dict[str, Any], **kw: Any) -> dict[str, float]:
    return _count_seconds_or_rule(s, rule.event_rule() if isinstance(rule, RuleCandidate) else rule, **kw)


def run_af_events(
    *, bundle: str | Path, data_root: str | Path, heldout: str | Path | None = None, leads: Sequence[str] = ("I",),
    hop_s: float = 2.0, min_sensitivity: float = 0.8, threads: int = 1,
) -> dict[str, Any]:
    """Score every Holter record; tune a rule on the patients outside the held-out list; count its false
    events (and the bundle's own tuned rule's, and the session default's) on the held-out patients."""
    from kmerl_edge import read_record
    from kmerl_edge._stream_types import EventRule

    from .accuracy import load_with_heldout

    clf, spec = load_with_heldout(bundle, heldout, threads=threads)
    scored = [score_holter_record(clf, b, leads, hop_s) for b in holter_records(data_root)]
    test = [s for s in scored if f"cpsc2021:{s.record}" in spec["test_records"]
            and f"cpsc2021:{s.patient}" not in spec["train_patients"]]
    test_patients = {s.patient for s in test}
    train = [s for s in scored if s.patient not in test_patients]
    best, best_train = choose_event_rule(train, min_sensitivity=min_sensitivity)
    d = EventRule()
    default = RuleCandidate(d.on_threshold, d.off_threshold, d.min_on_windows, d.min_off_windows, 1, False)
    out: dict[str, Any] = {
        "kind": "af_events",
        "bundle": str(clf.bundle.path),
        "leads": list(leads),
        "hop_s": hop_s,
        "train_patients": sorted({s.patient for s in train}),
        "test_patients": sorted(test_patients),
        "chosen_rule": best,
        "chosen_on_train": best_train,
        "chosen_on_test": summarise_events(test, best),
        "default_rule": asdict(default),
        "default_on_train": summarise_events(train, default.event_rule()),
        "default_on_test": summarise_events(test, default.event_rule()),
        "selection": f"fewest false events/h on training patients with episode sensitivity >= {min_sensitivity}",
    }
    shipped = clf.af_fusion.event_rule if clf.af_fusion is not None else None
    if shipped is not None:
        out["bundle_rule"] = shipped
        out["bundle_on_train"] = summarise_events(train, shipped)
        out["bundle_on_test"] = summarise_events(test, shipped)
    # normal rhythm from a source nothing was fitted on: MIT-BIH 100 (30 min, MLII = lead II), when the
    # lead set is there; every AF start on it is a false one
    ext = []
    for base in (Path(data_root) / "wfdb_samples" / "100",):
        if base.with_suffix(".hea").is_file() and set(leads) <= set(read_record(base).leads):
            ext.append(score_holter_record(clf, base, leads, hop_s))
    if ext:
        out["external_normal"] = {"records": [s.record for s in ext], "default": summarise_events(ext, default.event_rule()),
                                  "chosen": summarise_events(ext, best)}
        if shipped is not None:
            out["external_normal"]["bundle"] = summarise_events(ext, shipped)
    out["p_af_windows"] = int(sum(len(s.p_af) for s in scored))
    out["mean_p_af_test"] = float(np.mean(np.concatenate([s.p_af for s in test]))) if test else None
    return out
