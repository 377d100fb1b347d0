"""The fast measurement path (kmerl_edge._measure.measure_window and the per-window glue of
kmerl_edge._superclass_stack.stack_measurements) gives bit for bit what the straightforward implementation it
replaced gave (kept below as the reference, unchanged), on real windows at 1, 2, 3 and 12 leads, at the
model rate (z-scored model windows, the runtime's own beats) and at the records' own rates (100, 200, 360,
500 and 1000 Hz, mV), and on the awkward cases: NaN and flat leads, too few / unsorted / out-of-window
beats, even and odd beat counts, an empty T search, float64 / strided / integer windows."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge._leads import LEADS, canonical_lead
from kmerl_edge._measure import BEAT_S, GLOBAL, MIN_BEATS, PER_LEAD, T_END_S, measure_window
from kmerl_edge._superclass_stack import stack_measurements
from kmerl_edge.rhythm import analyse, choose_rhythm_lead

REC = Path(__file__).parent / "fixtures" / "records"


# ---- the reference: measure_window as it was before the fast path (commit be6f335), unchanged ----------
@lru_cache(maxsize=16)
def _ref_plan(fs: float) -> tuple[int, int, np.ndarray, np.ndarray, int, int, int, int, int, int, int, int]:
    a, b = round(BEAT_S[0] * fs), round(BEAT_S[1] * fs)
    k = max(1, round(0.02 * fs))
    offsets = np.arange(-a, b)[:, None]
    offsets.setflags(write=False)
    kernel = np.ones(k) / k
    kernel.setflags(write=False)
    return (a, b, offsets, kernel, a - round(0.12 * fs), a + round(0.16 * fs),
            round(0.05 * fs), round(0.02 * fs), round(0.004 * fs), round(0.06 * fs), round(0.08 * fs),
            round(T_END_S * fs))


def reference_measure_window(window: np.ndarray, leads: Sequence[str], r_peaks: Sequence[int] | np.ndarray, *,
                             fs: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(window)
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ValueError(f"window {x.shape} does not match {len(leads)} leads")
    n_leads, n = x.shape
    per = np.full((n_leads, len(PER_LEAD)), np.nan)
    glob = np.full(len(GLOBAL), np.nan)
    glob[GLOBAL.index("measured")] = 0.0
    glob[GLOBAL.index("axis_ok")] = 0.0
    a, b, offsets, kernel, lo, hi, core, pr0, pr1, d60, d80, dt = _ref_plan(float(fs))
    rp = np.asarray(r_peaks, dtype=np.int64).reshape(-1)
    rp = rp[(rp >= a) & (rp <= n - b)]
    if rp.size < MIN_BEATS or n_leads == 0:
        return per, glob
    segs = np.take(x, offsets + rp, axis=1).astype(np.float64)  # (L, a + b, B)
    good: np.ndarray = np.isfinite(np.add.reduce(segs.reshape(n_leads, -1), axis=1))
    if not good.all():
        segs[~good] = 0.0
    nb = segs.shape[2]
    segs.partition([nb // 2 - 1, nb // 2] if nb % 2 == 0 else nb // 2, axis=2)
    med = segs[:, :, nb // 2] if nb % 2 else (segs[:, :, nb // 2 - 1] + segs[:, :, nb // 2]) / 2.0
    ptp = med.max(axis=1) - med.min(axis=1)
    good &= ptp > 1e-6
    if not good.any():
        return per, glob
    unit = med[good] / ptp[good][:, None]
    d = unit[:, 1:] - unit[:, :-1]
    vel = np.convolve(np.sqrt(np.add.reduce(d * d, axis=0)), kernel, mode="same")
    ipk = a - core + int(vel[a - core:a + core].argmax())
    thr = 0.12 * float(vel[ipk])
    below = (vel[lo:ipk] < thr).nonzero()[0]
    on = lo + int(below[-1]) + 1 if below.size else lo
    above = (vel[ipk:hi] < thr).nonzero()[0]
    off = min(ipk + int(above[0]) if above.size else hi, med.shape[1] - 1)
    b0, b1 = max(0, on - pr0), max(1, on - pr1)
    m = med - med[:, b0:b1].mean(axis=1, keepdims=True)
    qrs = m[:, on:off + 1]
    ir = qrs.argmax(axis=1)[:, None]
    cols = np.arange(qrs.shape[1])
    vals = np.empty((n_leads, len(PER_LEAD)))
    vals[:, 0] = -np.where(cols <= ir, qrs, np.inf).min(axis=1)
    vals[:, 1] = qrs.max(axis=1)
    vals[:, 2] = -np.where(cols >= ir, qrs, np.inf).min(axis=1)
    np.maximum(vals[:, :3], 0.0, out=vals[:, :3])
    area = vals[:, 3] = qrs.sum(axis=1) / fs
    vals[:, 4] = m[:, off]
    vals[:, 5] = m[:, min(off + d60, m.shape[1] - 1)]
    rr = np.sort(rp[1:] - rp[:-1])
    rr_med = (float(rr[rr.size // 2]) if rr.size % 2 else float(rr[rr.size // 2 - 1] + rr[rr.size // 2]) / 2.0)
    t0 = off + d80
    t1 = min(off + dt, m.shape[1], a + int(rr_med) - (a - lo))
    if t1 - t0 >= 2:
        tw = m[:, t0:t1]
        vals[:, 6] = tw[np.arange(n_leads), np.abs(tw).argmax(axis=1)]
        vals[:, 7] = tw.mean(axis=1)
    else:
        vals[:, 6:] = np.nan
    per[good] = vals[good]
    glob[GLOBAL.index("measured")] = 1.0
    glob[GLOBAL.index("qrs_ms")] = (off - on) / fs * 1000.0
    glob[GLOBAL.index("hr_bpm")] = 60.0 * fs / rr_med if rr_med > 0 else np.nan
    names = leads if "I" in leads and "II" in leads else [canonical_lead(name) for name in leads]
    if "I" in names and "II" in names:
        i1, i2 = list(names).index("I"), list(names).index("II")
        if good[i1] and good[i2]:
            ax_i = float(area[i1])
            ax_f = float(area[i2]) - ax_i / 2.0
            r = math.hypot(ax_i, ax_f)
            if r > 0:
                glob[GLOBAL.index("axis_ok")] = 1.0
                glob[GLOBAL.index("axis_cos")] = ax_i / r
                glob[GLOBAL.index("axis_sin")] = ax_f / r
    return per, glob
# ---- end of the reference --------------------------------------------------------------------------------


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Bit for bit: values, NaNs, signs of zero, shapes and dtypes."""
    return all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b))


_SUBSETS = (("I",), ("II",), ("V2",), ("I", "II"), ("I", "II", "V2"), ("II", "V1", "V5"), None)  # None: all


def _records() -> Iterator[kmerl_edge.Record]:
    for hea in sorted(REC.glob("*.hea")):
        yield kmerl_edge.read_record(REC / hea.stem)


def _cases() -> Iterator[tuple[np.ndarray, tuple[str, ...], np.ndarray, float]]:
    """(window, leads, beats, fs) of the fixture records: model windows (500 Hz, z-scored, float32, beats of
    the runtime's analysis of the rhythm lead) and windows at the record's own rate (mV), 10 s every 2 s."""
    cfg = kmerl_edge.PreprocessConfig()
    for r in _records():
        n = int(round(10 * r.fs))
        starts = range(0, max(1, r.signal.shape[1] - n + 1), int(round(2 * r.fs)))
        for a in starts:
            x = r.signal[:, a : a + n]
            for subset in _SUBSETS:
                leads = r.leads if subset is None else subset
                if not set(leads) <= set(r.leads):
                    continue
                rows = [r.leads.index(lead) for lead in leads]
                lead = choose_rhythm_lead(leads)
                pre = kmerl_edge.preprocess(x[rows], fs=r.fs, leads=leads, config=cfg)
                for w in pre.windows:
                    beats = np.asarray(analyse(w[leads.index(lead)], fs=cfg.target_fs, lead=lead).r_peaks)
                    yield w, tuple(leads), beats, cfg.target_fs
                if x.shape[1] >= n and r.fs >= 200:
                    y = np.ascontiguousarray(x[rows], dtype=np.float64)
                    beats = np.asarray(analyse(y[leads.index(lead)], fs=r.fs, lead=lead).r_peaks)
                    yield y, tuple(leads), beats, r.fs


@pytest.fixture(scope="module")
def cases() -> list[tuple[np.ndarray, tuple[str, ...], np.ndarray, float]]:
    return list(_cases())


def test_real_windows_are_measured_bit_for_bit_as_before(cases) -> None:
    rates: dict[float, int] = {}
    n_leads: dict[int, int] = {}
    measured = 0
    for w, leads, beats, fs in cases:
        got = measure_window(w, leads, beats, fs=fs)
        assert _same(got, reference_measure_window(w, leads, beats, fs=fs)), (leads, fs)
        rates[fs] = rates.get(fs, 0) + 1
        n_leads[len(leads)] = n_leads.get(len(leads), 0) + 1
        measured += int(got[1][GLOBAL.index("measured")] == 1.0)
    assert len(cases) >= 600 and measured >= 500
    assert {200.0, 360.0, 500.0, 1000.0} <= set(rates) and {1, 2, 3, 12} <= set(n_leads)


def test_awkward_inputs_are_measured_bit_for_bit_as_before(cases) -> None:
    rng = np.random.default_rng(7)
    picked = [cases[i] for i in rng.choice(len(cases), 60, replace=False)]
    n = 0
    for w, leads, beats, fs in picked:
        variants: list[tuple[np.ndarray, Sequence[int] | np.ndarray]] = [
            (w, beats[:2]), (w, beats[:3]), (w, beats[:4]), (w, beats[1:]), (w, ()),
            (w, list(beats)), (w, tuple(int(b) for b in beats)), (w, beats[::-1]), (w, rng.permutation(beats)),
            (w, np.concatenate([[-5, 0, 1], beats, [w.shape[1] - 1, w.shape[1] + 50]])),
            (w, beats.astype(np.float64) + 0.4), (w, np.repeat(beats, 2)),
            (np.asfortranarray(w), beats), (w.astype(np.float64), beats), (np.repeat(w, 2, axis=1)[:, ::2], beats),
            (w[:, : w.shape[1] // 3], beats), (w.astype(">f8"), beats), (w.astype(object), beats),
        ]
        nan = w.astype(np.float64)
        nan[0, beats[len(beats) // 2] - 3 : beats[len(beats) // 2] + 3] = np.nan  # NaN within a beat of lead 0
        flat = w.copy()
        flat[-1] = 1.5  # the last lead flat
        inf = w.copy()
        inf[0, beats[0] if len(beats) else 0] = np.inf
        variants += [(nan, beats), (flat, beats), (inf, beats), (np.zeros_like(w), beats),
                     (np.full_like(w, np.nan), beats), (np.round(w * 100).astype(np.int16), beats)]
        if len(beats) >= 3:  # beats so close that the T search is empty; beats ~1 s apart at 2.5x the rate
            variants += [(w, np.arange(beats[0], beats[0] + 60 * len(beats), 60)), (w, beats[::2])]
        for x, b in variants:
            assert _same(measure_window(x, leads, b, fs=fs), reference_measure_window(x, leads, b, fs=fs)), (leads, fs)
            n += 1
    for fs in (50.0, 100.0, 128.0, 250.0, 257.0, 1000.0):  # other rates of one real 1-lead window
        w, leads, beats, f0 = next(c for c in cases if len(c[1]) == 1 and c[3] == 500.0)
        b = np.rint(beats * (fs / f0)).astype(np.int64)
        x = np.interp(np.arange(int(10 * fs)) / fs, np.arange(w.shape[1]) / f0, w[0])[None]
        assert _same(measure_window(x, leads, b, fs=fs), reference_measure_window(x, leads, b, fs=fs)), fs
        n += 1
    assert n >= 1000


def test_the_stack_glue_measures_each_window_as_before() -> None:
    """stack_measurements = the reference per window, with beats at the device rate (200 Hz Holter) mapped onto
    the 500 Hz model windows, and with the model windows' own beats."""
    clf = kmerl_edge.load(kmerl_edge.default_bundle_path(), backend="onnxruntime", companion=False)
    r = kmerl_edge.read_record(REC / "data_101_6")
    for leads in (("I",), ("II",), ("I", "II")):
        x = r.signal[[r.leads.index(lead) for lead in leads], : 60 * 200]
        p = clf.predict(x, fs=r.fs, leads=leads)
        pre = kmerl_edge.preprocess(x, fs=r.fs, leads=leads, config=clf.bundle.preprocess_config)
        names = [LEADS[i] for i in pre.lead_ids]
        lead = choose_rhythm_lead(names)
        for rhythm in (list(p.window_rhythm), None):
            per, glob = stack_measurements(pre.windows, pre.lead_ids, fs=500.0, rhythm=rhythm)
            assert per.shape == (len(pre.windows), 12, len(PER_LEAD)) and glob.shape == (len(pre.windows), len(GLOBAL))
            for k, w in enumerate(pre.windows):
                rh = rhythm[k] if rhythm is not None else analyse(w[names.index(lead)], fs=500.0, lead=lead)
                peaks = np.asarray(rh.r_peaks if rh.usable else (), dtype=np.int64)
                if rh.fs != 500.0 and peaks.size:
                    peaks = np.rint(peaks * (500.0 / rh.fs)).astype(np.int64)
                    peaks = peaks[peaks < w.shape[-1]]
                want_p, want_g = reference_measure_window(w, names, peaks, fs=500.0)
                full = np.full((12, len(PER_LEAD)), np.nan)
                full[pre.lead_ids] = want_p
                assert _same((per[k], glob[k]), (full, want_g))


def _reference_atrial_coherence(signal: np.ndarray, r_peaks: np.ndarray, *, fs: float) -> float:
    """kmerl_edge._af_fusion.atrial_coherence before the strided gather (commit be6f335), unchanged."""
    from kmerl_edge._af_fusion import ATRIAL_SEGMENT_RR, ATRIAL_SEGMENT_S
    from kmerl_edge.rhythm import _median

    rp = np.asarray(r_peaks, dtype=np.int64)
    start_s = ATRIAL_SEGMENT_S[0]
    if rp.size > 1:
        start_s = min(start_s, ATRIAL_SEGMENT_RR * _median((rp[1:] - rp[:-1]).tolist()) / fs)
    a, b = round(start_s * fs), round(ATRIAL_SEGMENT_S[1] * fs)
    starts = rp[rp >= a] - a
    if starts.size < 3 or a <= b:
        return float("nan")
    segs = np.asarray(signal)[starts[:, None] + np.arange(a - b)[None, :]].astype(np.float64, copy=False)
    segs -= np.add.reduce(segs, axis=1, keepdims=True) / segs.shape[1]
    power = float(np.add.reduce(np.add.reduce(segs * segs, axis=1)) / segs.shape[0])
    if power <= 0.0:
        return float("nan")
    tmpl = np.add.reduce(segs, axis=0) / segs.shape[0]
    return float(np.add.reduce(tmpl * tmpl) / power)


def test_the_atrial_coherence_is_computed_bit_for_bit_as_before(cases) -> None:
    from kmerl_edge._af_fusion import atrial_coherence

    n = 0
    for w, _leads, beats, fs in cases:
        for x, b in ((w[0], beats), (w[-1], beats[1:]), (w[0].astype(np.float64), beats), (w[0][::2], beats // 2),
                     (w[0], beats[:2]), (w[0], beats[:3])):
            got, want = atrial_coherence(x, b, fs=fs), _reference_atrial_coherence(x, b, fs=fs)
            assert np.float64(got).tobytes() == np.float64(want).tobytes(), fs
            n += int(math.isfinite(got))
    assert n >= 1000
