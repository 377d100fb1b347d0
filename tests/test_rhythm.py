"""Rhythm analysis (kmerl_edge.rhythm) on real records with reference beats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kmerl_edge.rhythm import QUALITY_OK, BeatDetector, RhythmResult, analyse, detect_beats

FIX = Path(__file__).parent / "fixtures" / "records"


def _cpsc2021() -> tuple[np.ndarray, float, np.ndarray]:
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(FIX / "data_101_6"))
    ann = wfdb.rdann(str(FIX / "data_101_6"), "atr")
    beats = np.array([s for s, c in zip(ann.sample, ann.symbol) if c not in "+~|\"[]!x"])
    return rec.p_signal[:, 0].astype(np.float64), float(rec.fs), beats


def _match(ref: np.ndarray, det: np.ndarray, tol: int) -> tuple[int, int, int]:
    j = np.clip(np.searchsorted(det, ref), 1, max(1, len(det) - 1))
    tp = 0
    used: set[int] = set()
    for r, jj in zip(ref, j):
        for c in (jj - 1, jj):
            if 0 <= c < len(det) and c not in used and abs(int(det[c]) - int(r)) <= tol:
                used.add(c)
                tp += 1
                break
    return tp, len(ref) - tp, len(det) - tp


def test_analyse_api_on_real_record() -> None:
    x, fs, ref = _cpsc2021()
    r = analyse(x[: int(10 * fs)], fs=fs, lead="I")
    assert isinstance(r, RhythmResult)
    assert r.quality == QUALITY_OK and r.hr_bpm is not None
    inside = ref[ref < 10 * fs]
    ref_hr = 60.0 * fs / float(np.mean(np.diff(inside)))
    assert abs(r.hr_bpm - ref_hr) < 2.0
    assert len(r.rr_ms) == r.n_beats - 1 and r.rr_irregularity is not None
    d = r.to_dict()
    assert d["lead"] == "I" and isinstance(d["hr_bpm"], float)


def test_beats_match_reference() -> None:
    x, fs, ref = _cpsc2021()
    det = detect_beats(x, fs=fs)
    tp, fn, fp = _match(ref, det, int(0.15 * fs))
    assert tp / (tp + fn) >= 0.98 and tp / (tp + fp) >= 0.98


def test_stream_chunks_give_whole_record_beats() -> None:
    x, fs, _ = _cpsc2021()
    whole = detect_beats(x, fs=fs)
    rng = np.random.default_rng(0)
    det = BeatDetector(fs=fs)
    got: list[np.ndarray] = []
    i = 0
    while i < x.size:
        n = int(rng.integers(1, 700))
        got.append(det.push(x[i : i + n]))
        i += n
    got.append(det.finish())
    np.testing.assert_array_equal(np.concatenate(got), whole)
