"""Classical ECG measurements (kmerl_edge._measure) on real PTB-XL records, from the runtime's own beats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kmerl_edge._io import read_record
from kmerl_edge._measure import GLOBAL, PER_LEAD, measure_window
from kmerl_edge._preprocess import PreprocessConfig, _model_band, normalize_window
from kmerl_edge.rhythm import analyse, choose_rhythm_lead

REC = Path(__file__).parent / "fixtures" / "records"
CFG = PreprocessConfig()


def _window(name: str) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    r = read_record(REC / name)
    y = _model_band(np.asarray(r.signal, np.float64), r.fs, CFG)[:, : CFG.window_samples]
    z = normalize_window(y.astype(np.float32), config=CFG)
    lead = choose_rhythm_lead(r.leads)
    beats = analyse(z[list(r.leads).index(lead)], fs=CFG.target_fs, lead=lead).r_peaks
    return y, tuple(r.leads), beats


def _g(glob: np.ndarray, name: str) -> float:
    return float(glob[GLOBAL.index(name)])


def _p(per: np.ndarray, leads: tuple[str, ...], lead: str, name: str) -> float:
    return float(per[leads.index(lead), PER_LEAD.index(name)])


def test_qrs_duration_wide_in_bundle_branch_block_narrow_in_normal() -> None:
    qrs = {}
    for name in ("00001_hr", "00256_hr", "00424_hr"):
        y, leads, beats = _window(name)
        per, glob = measure_window(y, leads, beats, fs=CFG.target_fs)
        assert _g(glob, "measured") == 1.0 and per.shape == (12, len(PER_LEAD))
        assert np.isfinite(per).all()
        qrs[name] = _g(glob, "qrs_ms")
        assert 50 <= _g(glob, "hr_bpm") <= 120
    assert 60 <= qrs["00001_hr"] <= 110  # normal ECG
    assert qrs["00256_hr"] >= 120 and qrs["00424_hr"] >= 120  # complete LBBB, complete RBBB


def test_axis_and_morphology_are_sane() -> None:
    y, leads, beats = _window("00001_hr")  # normal: axis between -30 and +90 degrees, upright T in II
    per, glob = measure_window(y, leads, beats, fs=CFG.target_fs)
    ang = math.degrees(math.atan2(_g(glob, "axis_sin"), _g(glob, "axis_cos")))
    assert _g(glob, "axis_ok") == 1.0 and -30 <= ang <= 90
    assert _p(per, leads, "II", "t_peak") > 0 and _p(per, leads, "aVR", "r_amp") < _p(per, leads, "II", "r_amp")
    y, leads, beats = _window("00424_hr")  # RBBB + left anterior fascicular block: left axis, tall R' in V1
    per, glob = measure_window(y, leads, beats, fs=CFG.target_fs)
    ang = math.degrees(math.atan2(_g(glob, "axis_sin"), _g(glob, "axis_cos")))
    assert ang < -30
    assert _p(per, leads, "V1", "r_amp") > _p(per, leads, "V1", "s_amp")


def test_lead_subsets_missing_beats_flat_and_nan_leads() -> None:
    y, leads, beats = _window("00256_hr")
    i = leads.index("I")
    per, glob = measure_window(y[[i]], ["I"], beats, fs=CFG.target_fs)  # one lead: no axis
    assert _g(glob, "measured") == 1.0 and _g(glob, "axis_ok") == 0.0 and math.isnan(_g(glob, "axis_cos"))
    assert np.isfinite(per).all() and _g(glob, "qrs_ms") >= 110
    per, glob = measure_window(y, leads, beats[:2], fs=CFG.target_fs)  # too few beats: nothing measured
    assert _g(glob, "measured") == 0.0 and np.isnan(per).all() and math.isnan(_g(glob, "qrs_ms"))
    per, glob = measure_window(y, leads, (), fs=CFG.target_fs)
    assert _g(glob, "measured") == 0.0
    bad = y.copy()
    bad[1] = 0.0  # flat lead II
    bad[7, beats[2] - 50 : beats[2] + 50] = np.nan  # a NaN stretch in V2, within a beat
    per, glob = measure_window(bad, leads, beats, fs=CFG.target_fs)
    assert np.isnan(per[[1, 7]]).all() and np.isfinite(np.delete(per, [1, 7], axis=0)).all()
    assert _g(glob, "measured") == 1.0 and _g(glob, "axis_ok") == 0.0  # no axis without lead II
    with pytest.raises(ValueError):
        measure_window(y, leads[:3], beats, fs=CFG.target_fs)
