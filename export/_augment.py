"""Device-shift augmentation: what a wearable does to an ECG that a hospital cart does not.

One function, :func:`augment_windows`, used by distillation (the student sees augmented windows, the
teacher the clean ones, so the student learns to give the clean answer on a wearable's signal). It works
on preprocessed windows (model rate, band-passed, z-scored) and returns windows in the same form: the
artifacts are added in the signal domain, then the *shared* preprocessing (:func:`kmerl_edge.filter_signal`
band-pass and :func:`kmerl_edge._preprocess.normalize_window` z-score) runs again, so what the student sees
is exactly what :func:`kmerl_edge.preprocess` would hand the model for such a device.

Each transform is applied per lead with its own probability (:class:`AugmentConfig`):

- polarity inversion (handheld devices held the other way record inverted lead I),
- gain (a z-scored window is gain-invariant; the gain matters once noise of fixed size is added),
- baseline wander (respiration, 0.05–0.5 Hz) and electrode-motion artifacts (steps and slow transients),
- mains interference (50 or 60 Hz, with harmonics) and muscle noise (broadband EMG),
- band-limiting and resampling as a device rate does: the window goes to a random rate in
  ``device_fs`` (128–1000 Hz) with a device's own low-pass and back to the model rate,
- single-lead crops are the distillation's lead subsets (1..max_leads leads drawn per window).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["AugmentConfig", "augment_windows"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (per lead of each window) and sizes of the device-shift transforms."""

    p_invert: float = 0.15
    p_wander: float = 0.4
    wander_std: float = 0.5  # in units of the clean lead's std
    p_motion: float = 0.2
    motion_std: float = 0.8
    p_mains: float = 0.3
    mains_std: float = 0.3
    p_muscle: float = 0.4
    muscle_std: float = 0.25
    p_resample: float = 0.5
    device_fs: tuple[float, ...] = (128.0, 200.0, 250.0, 256.0, 300.0, 360.0, 500.0, 1000.0)
    gain_range: tuple[float, float] = (0.5, 2.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def augment_windows(
    x: np.ndarray, rng: np.random.Generator, *, fs: float, config: AugmentConfig | None = None,
    preprocess_config: Any = None,
) -> np.ndarray:
    """Device-shifted copies of preprocessed windows ``x`` (N, L, S) at the model rate ``fs`` (float32)."""
    from kmerl_edge._preprocess import PreprocessConfig, filter_signal, normalize_window, resample_signal

    cfg = config or AugmentConfig()
    pcfg = preprocess_config or PreprocessConfig()
    x = np.asarray(x, dtype=np.float64)
    n, n_leads, s = x.shape
    t = np.arange(s) / fs
    shape = (n, n_leads, 1)
    present = np.abs(x).max(axis=-1, keepdims=True) > 0
    sig = x * rng.uniform(*cfg.gain_range, size=shape)
    sig = np.where(rng.random(shape) < cfg.p_invert, -sig, sig)
    scale = np.abs(sig).std(axis=-1, keepdims=True) + 1e-6

    def on(p: float) -> np.ndarray:
        return rng.random(shape) < p

    # baseline wander: two slow sinusoids
    f = rng.uniform(0.05, 0.5, size=(n, n_leads, 2, 1))
    ph = rng.uniform(0, 2 * np.pi, size=(n, n_leads, 2, 1))
    wander = np.sin(2 * np.pi * f * t + ph).sum(axis=2) * rng.uniform(0, cfg.wander_std, size=shape) * scale
    sig = sig + np.where(on(cfg.p_wander), wander, 0.0)
    # electrode motion: a step that relaxes (exponential) at a random time
    t0 = rng.uniform(0, t[-1], size=shape)
    tau = rng.uniform(0.1, 1.0, size=shape)
    motion = np.where(t >= t0, np.exp(-np.clip(t - t0, 0, None) / tau), 0.0)
    sig = sig + np.where(on(cfg.p_motion), motion * rng.normal(0, cfg.motion_std, size=shape) * scale, 0.0)
    # mains: 50 or 60 Hz and its 3rd harmonic
    mains_f = np.where(rng.random((n, 1, 1)) < 0.5, 50.0, 60.0)
    mph = rng.uniform(0, 2 * np.pi, size=shape)
    mains = (np.sin(2 * np.pi * mains_f * t + mph) + 0.3 * np.sin(2 * np.pi * 3 * mains_f * t + mph))
    sig = sig + np.where(on(cfg.p_mains), mains * rng.uniform(0, cfg.mains_std, size=shape) * scale, 0.0)
    # muscle noise: white noise band-limited by the later band-pass
    muscle = rng.normal(0.0, 1.0, size=sig.shape) * rng.uniform(0, cfg.muscle_std, size=shape) * scale
    sig = sig + np.where(on(cfg.p_muscle), muscle, 0.0)
    # device rate: down to a random rate (anti-aliased) and back, per window
    for i in np.flatnonzero(rng.random(n) < cfg.p_resample):
        dev = float(rng.choice(cfg.device_fs))
        if abs(dev - fs) > 1e-9:
            low = resample_signal(sig[i], fs_in=fs, fs_out=dev)
            back = resample_signal(low, fs_in=dev, fs_out=fs)
            sig[i] = back[..., :s] if back.shape[-1] >= s else np.pad(back, ((0, 0), (0, s - back.shape[-1])), mode="edge")
    band = filter_signal(sig.reshape(n * n_leads, s), fs=fs, config=pcfg).reshape(n, n_leads, s)
    out = np.stack([normalize_window(b, config=pcfg) for b in band])
    return np.where(present, out, 0.0).astype(np.float32)
