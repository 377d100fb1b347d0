"""The shared preprocessing function on real records: rates, windows, quality, named errors."""

import numpy as np
import pytest

import kmerl_edge as ke


@pytest.fixture(scope="module")
def rec(records_dir):
    return ke.read_record(records_dir / "00001_hr")


def test_output_layout_and_lead_ids(rec):
    pre = ke.preprocess(rec.signal[[7, 0]], fs=rec.fs, leads=["V2", "I"])
    assert pre.windows.shape == (1, 2, 5000)
    assert pre.windows.dtype == np.float32
    assert pre.lead_ids.tolist() == [7, 0]
    assert pre.leads == ("V2", "I")
    np.testing.assert_allclose(pre.windows.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(pre.windows.std(axis=-1), 1.0, atol=1e-3)


def test_fs_is_required():
    with pytest.raises(TypeError):
        ke.preprocess(np.zeros((1, 5000)), leads=["I"])  # type: ignore[call-arg]
    with pytest.raises(ke.SamplingRateError):
        ke.preprocess(np.zeros((1, 5000)), fs=0, leads=["I"])


def test_100hz_and_500hz_versions_of_one_record_agree(records_dir):
    hr = ke.read_record(records_dir / "00001_hr")
    lr = ke.read_record(records_dir / "00001_lr")
    a = ke.preprocess(hr.signal[:2], fs=hr.fs, leads=hr.leads[:2]).windows[0]
    b = ke.preprocess(lr.signal[:2], fs=lr.fs, leads=lr.leads[:2]).windows[0]
    # same heart beats after polyphase resampling 100→500 Hz and the same 0.5–40 Hz band
    for i in range(2):
        assert np.corrcoef(a[i, 500:4500], b[i, 500:4500])[0, 1] > 0.95


def test_insensitive_to_device_gain_and_offset(rec):
    x = rec.signal[:3]
    a = ke.preprocess(x, fs=rec.fs, leads=rec.leads[:3]).windows
    gains = np.array([[1000.0], [0.2], [3.7]])  # µV-like, attenuated, amplified
    b = ke.preprocess(x * gains + 5.0, fs=rec.fs, leads=rec.leads[:3]).windows
    np.testing.assert_allclose(a, b, atol=2e-4)


def test_resampling_from_a_wearable_rate(rec):
    from scipy.signal import resample_poly

    x130 = resample_poly(rec.signal[:1].astype(np.float64), 13, 50, axis=-1)  # 130 Hz, like a chest strap
    pre = ke.preprocess(x130, fs=130.0, leads=["I"])
    ref = ke.preprocess(rec.signal[:1], fs=500.0, leads=["I"])
    assert pre.windows.shape == (1, 1, 5000)
    assert np.corrcoef(pre.windows[0, 0, 500:4500], ref.windows[0, 0, 500:4500])[0, 1] > 0.95


def test_long_recording_is_windowed_with_documented_hop(rec):
    x = np.concatenate([rec.signal[:1]] * 3, axis=1)  # 30 s
    pre = ke.preprocess(x, fs=rec.fs, leads=["I"])
    assert pre.window_starts_s == (0.0, 5.0, 10.0, 15.0, 20.0)
    x = np.concatenate([rec.signal[:1]] * 3, axis=1)[:, :13000]  # 26 s: last window aligned to the end
    pre = ke.preprocess(x, fs=rec.fs, leads=["I"])
    assert pre.window_starts_s[-1] == 16.0


def test_short_recordings_are_padded_and_flagged_or_refused(rec):
    pre = ke.preprocess(rec.signal[:1, :3500], fs=rec.fs, leads=["I"])
    assert pre.padded and "padded" in pre.quality.flags
    assert np.all(pre.windows[0, 0, 3500:] == 0)
    with pytest.raises(ke.SignalTooShortError, match="4.00 s"):
        ke.preprocess(rec.signal[:1, :2000], fs=rec.fs, leads=["I"])


def test_nan_and_shape_errors(rec):
    x = rec.signal[:2].copy()
    x[1, 100] = np.nan
    with pytest.raises(ke.NonFiniteSignalError):
        ke.preprocess(x, fs=rec.fs, leads=["I", "II"])
    with pytest.raises(ke.SignalShapeError, match="transpose"):
        ke.preprocess(rec.signal[:2].T, fs=rec.fs, leads=["I", "II"])
    with pytest.raises(ke.SignalShapeError):
        ke.preprocess(rec.signal[:2], fs=rec.fs, leads=["I"])


def test_quality_flags_flat_saturated_and_noisy_leads(rec):
    x = rec.signal[:4].astype(np.float64).copy()
    x[1] = 0.002  # lead off: flat
    x[2] = np.clip(x[2], -0.05, 0.05)  # clipped amplifier
    rng = np.random.default_rng(0)
    x[3] = x[3] + rng.normal(0, 1.0, x.shape[1])  # broadband EMG-like noise
    q = ke.preprocess(x, fs=rec.fs, leads=rec.leads[:4]).quality
    assert q["I"].usable and not q["I"].flags
    assert q["II"].flat and not q["II"].usable
    assert q["III"].saturated and not q["III"].usable
    assert q["aVR"].noisy and q["aVR"].usable
    assert q.overall == "degraded"
    pre = ke.preprocess(x, fs=rec.fs, leads=rec.leads[:4], drop_bad_leads=True)
    assert pre.leads == ("I", "aVR")
    assert pre.quality.dropped_leads == ("II", "III")


def test_real_clean_record_is_good_quality(records_dir):
    for name in ("00001_hr", "E07500"):
        r = ke.read_record(records_dir / name)
        q = ke.preprocess(r.signal, fs=r.fs, leads=r.leads).quality
        assert q.overall in {"good", "degraded"}
        assert len(q.usable_leads) == 12


def test_all_leads_unusable_is_a_named_error():
    with pytest.raises(ke.NoUsableLeadsError, match="flat"):
        ke.preprocess(np.zeros((2, 5000)), fs=500.0, leads=["I", "II"], drop_bad_leads=True)


def test_config_round_trips_through_json():
    import json

    cfg = ke.PreprocessConfig(hop_s=2.5)
    assert ke.PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_zero_phase_filter_matches_scipy_sosfiltfilt():
    """The band-pass reuses a cached initial state; it must give scipy.signal.sosfiltfilt's numbers."""
    from scipy.signal import sosfiltfilt

    from kmerl_edge._preprocess import _filtfilt, _sos, _sos_high

    rng = np.random.default_rng(3)
    for shape in [(5000,), (3, 5000), (12, 1000), (2, 70)]:
        x = rng.standard_normal(shape)
        for key in (_sos(500.0, 0.5, 40.0, 4), _sos(128.0, 0.5, 40.0, 4), _sos_high(500.0, 40.0, 4)):
            for pad in (0, 60, shape[-1] - 1):
                np.testing.assert_allclose(
                    _filtfilt(key, x, pad), sosfiltfilt(key[0], x, axis=-1, padlen=pad), rtol=0, atol=1e-12
                )


def test_compiled_filter_loop_gives_sosfilts_numbers_bit_for_bit(monkeypatch):
    """Preprocessing calls scipy's compiled sosfilt loop without the wrapper's checks when it matches
    ``sosfilt`` exactly; the windows are the same bits either way (1, 3 leads; 1-D; a 3-D stack)."""
    from kmerl_edge import _preprocess as P

    rng = np.random.default_rng(5)
    cases = [rng.standard_normal(s) for s in [(5000,), (3, 5000), (2, 4, 1200)]]
    keys = (P._sos(500.0, 0.5, 40.0, 4), P._sos_high(500.0, 40.0, 4))
    fast = [P._filtfilt(k, x, min(60, x.shape[-1] - 1)) for x in cases for k in keys]
    pre = ke.preprocess(cases[1], fs=360.0, leads=["I", "II", "V1"])
    monkeypatch.setattr(P, "_compiled_sosfilt", lambda: None)
    slow = [P._filtfilt(k, x, min(60, x.shape[-1] - 1)) for x in cases for k in keys]
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and np.array_equal(a, b)
    again = ke.preprocess(cases[1], fs=360.0, leads=["I", "II", "V1"])
    assert np.array_equal(pre.windows, again.windows) and pre.quality == again.quality


def test_windows_at_the_model_rate_equal_the_documented_pipeline(rec):
    """At 500 Hz the quality check's band-pass is reused for the windows: same result as resample →
    band-pass → z-score done step by step, also after dropping a lead."""
    from kmerl_edge._preprocess import filter_signal, normalize_window, resample_signal

    cfg = ke.PreprocessConfig()
    sig = rec.signal[:3, :5000].copy()
    sig[1] = 0.0  # lead II off: dropped
    pre = ke.preprocess(sig, fs=rec.fs, leads=rec.leads[:3], drop_bad_leads=True)
    assert pre.leads == ("I", "III")
    keep = sig[[0, 2]]
    ref = normalize_window(filter_signal(resample_signal(keep, fs_in=rec.fs, fs_out=500), fs=500, config=cfg),
                           config=cfg)
    np.testing.assert_allclose(pre.windows[0], ref.astype(np.float32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fs", [128.0, 200.0, 250.0, 256.0, 360.0, 1000.0])
def test_resampling_matches_scipy_default_resample_poly(fs):
    """The cached anti-aliasing filter is scipy's default design: identical output, every call."""
    from scipy.signal import resample_poly

    from kmerl_edge._preprocess import _ratio, resample_signal

    x = np.random.default_rng(5).standard_normal((2, int(7 * fs)))
    up, down = _ratio(fs, 500.0)
    want = resample_poly(x, up, down, axis=-1, padtype="line")
    for _ in range(2):  # a second call must not see a filter scaled by the first
        np.testing.assert_array_equal(resample_signal(x, fs_in=fs, fs_out=500.0), want)


@pytest.mark.parametrize("fs, plateau_ms, clipped", [(250.0, 24, True), (1000.0, 12, False), (1000.0, 24, True)])
def test_clipping_plateau_is_judged_in_seconds_at_the_device_rate(rec, fs, plateau_ms, clipped):
    """One run on a rail counts as clipping when it lasts 20 ms, whatever the rate (it was 10 samples)."""
    from kmerl_edge._preprocess import resample_signal

    x = resample_signal(rec.signal[:1].astype(np.float64), fs_in=rec.fs, fs_out=fs)
    m = int(round(plateau_ms * fs / 1000))
    k = int(np.argmax(x[0]))
    x[0, k:k + m] = x[0].max() + 0.3  # one flat top above everything else: the amplifier's rail
    from kmerl_edge._preprocess import assess_quality

    q = assess_quality(x, fs=fs, leads=["I"])
    assert q["I"].saturated is clipped
