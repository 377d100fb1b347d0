"""``python -m export.beat_verifier --data ../shared/data --out benchmarks/results/rhythm/beat_verifier.json``:
train the learned beat verifier (:mod:`export._verified_beats`, an experiment on top of
:class:`kmerl_edge.rhythm.BeatDetector`; not in the runtime) and choose its constants by
cross-validation grouped by patient.

Data: the CPSC-2021 records of the patients the default model trains on (every patient but the
held-out ones in :class:`export._corpus.CorpusConfig`), both leads, each as recorded and in
``copies`` augmented copies with synthetic device artefacts (baseline steps, saturating spikes,
EMG noise bursts, electrode-motion noise, drop-outs, gain changes, inversion, resampling to 250–1000 Hz). The
energy detector runs on each signal (whole and cut into 10-s windows, as :func:`~kmerl_edge.rhythm.analyse`
sees it) and every candidate it considers (accepted beats and noise peaks) becomes a feature row
(:func:`kmerl_edge._beat_verifier.features`), labelled a beat when it is the candidate nearest to a
reference beat within 150 ms.

Selection: leave-one-patient-out. For each fold a model is trained on the other patients' rows and the
detector with that model runs on the held-out patient's signals; the decision thresholds
(``reject_below``, ``accept_above``) are chosen on a grid to minimise the missed plus false beats
summed over the folds, on the signals as recorded and their augmented copies together, among the pairs
that on the signals as recorded neither miss more beats nor add more false beats than the energy stage
(ties: the more conservative pair, fewer changes to the energy detector). The
shipped model is then trained on all training patients with those thresholds. Held-out CPSC-2021
patients, MIT-BIH and CPSC-2019 are never read here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge.rhythm import BeatDetector

from ._verified_beats import (
    CONTEXT,
    VERIFIER_FORMAT,
    VERIFIER_VERSION,
    BeatVerifier,
    VerifiedBeatDetector,
    verifier_from_dict,
)

__all__ = ["VerifierTrainConfig", "train_beat_verifier", "augment", "training_signals"]

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
TOL_S = 0.15


@dataclass(frozen=True)
class VerifierTrainConfig:
    half_s: float = 0.25
    step_s: float = 0.01
    centre_s: float = 0.06
    min_prior: int = 3
    hidden: int = 16
    alpha: float = 1e-3
    copies: int = 3
    seed: int = 0
    reject_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    accept_grid: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
    window_s: float = 10.0


@dataclass
class Signal:
    patient: str
    name: str
    x: np.ndarray
    fs: float
    ref: np.ndarray


# ------------------------------------------------------------------------------------------- data
def _records(
    data: Path, patients_out: frozenset[str]
) -> list[tuple[str, str, np.ndarray, float, np.ndarray]]:
    import wfdb

    out = []
    for folder in ("cpsc2021", "cpsc2021_extra"):
        for h in sorted((data / folder).glob("*.hea")):
            patient = h.stem.split("_")[1]
            if patient in patients_out:
                continue
            rec = wfdb.rdrecord(str(h.with_suffix("")))
            ann = wfdb.rdann(str(h.with_suffix("")), "atr")
            ref = np.array([s for s, c in zip(ann.sample, ann.symbol) if c in BEAT_SYMBOLS], dtype=np.int64)
            out.append((patient, h.stem, rec.p_signal.astype(np.float64), float(rec.fs), ref))
    return out


def _bandpass_noise(rng: np.random.Generator, n: int, fs: float, lo: float, hi: float) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    hi = min(hi, 0.45 * fs)
    sos = butter(2, [lo, hi], btype="band", fs=fs, output="sos")
    z = sosfilt(sos, rng.standard_normal(n + int(fs)))[int(fs) :]
    return z / (z.std() + 1e-12)


def augment(
    x: np.ndarray, fs: float, ref: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, float, np.ndarray]:
    """One augmented copy: synthetic device artefacts scaled to the record's beat amplitude, then
    (half the time) inverted and (half the time) resampled to 250, 360, 500 or 1000 Hz."""
    x = x.copy()
    n = x.size
    dur = n / fs
    amp = float(np.percentile(x, 99.5) - np.percentile(x, 0.5)) or 1.0
    t = np.arange(n)
    # baseline steps that recover exponentially (electrode / amplifier high-pass)
    for _ in range(rng.poisson(dur / 20.0)):
        i = int(rng.integers(0, n))
        tau = rng.uniform(0.3, 3.0) * fs
        x[i:] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 4.0) * amp * np.exp(-(t[i:] - i) / tau)
    # saturating spikes (the amplifier driven to its rail for 2-40 ms)
    rail = 5.0 * amp
    for _ in range(rng.poisson(dur / 15.0)):
        i = int(rng.integers(0, n))
        w = max(1, int(rng.uniform(0.002, 0.04) * fs))
        x[i : i + w] = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.5) * rail
    # EMG bursts (broad-band, 20 Hz up) and electrode motion (0.5-8 Hz)
    for lo, hi, sd, kind in ((20.0, 150.0, (0.05, 0.4), "emg"), (0.5, 8.0, (0.2, 1.0), "motion")):
        for _ in range(rng.poisson(dur / 20.0)):
            i = int(rng.integers(0, n))
            w = int(rng.uniform(0.5, 3.0 if kind == "emg" else 4.0) * fs)
            seg = x[i : i + w]
            if seg.size < 8:
                continue
            seg += rng.uniform(*sd) * amp * _bandpass_noise(rng, seg.size, fs, lo, hi)
    # signal drop-outs (lead off, amplifier recovery): a flat line with a little noise, abrupt edges
    # (the beats inside are gone: their references too)
    for _ in range(rng.poisson(dur / 60.0)):
        i = int(rng.integers(0, n))
        w = int(rng.uniform(0.5, 4.0) * fs)
        seg = x[i : i + w]
        seg[:] = seg[0] + rng.uniform(0.002, 0.03) * amp * rng.standard_normal(seg.size)
        ref = ref[(ref < i) | (ref >= i + w)]
    # gain changes
    i = 0
    while i < n:
        w = int(rng.uniform(5.0, 30.0) * fs)
        if rng.random() < 0.3:
            x[i : i + w] *= rng.uniform(0.3, 3.0)
        i += w
    if rng.random() < 0.5:
        x = -x
    if rng.random() < 0.5:
        from fractions import Fraction

        from scipy.signal import resample_poly

        fs_new = float(rng.choice([250, 360, 500, 1000]))
        q = Fraction(int(fs_new), int(round(fs)))
        x = resample_poly(x, q.numerator, q.denominator)
        ref = np.round(ref * fs_new / fs).astype(np.int64)
        fs = fs_new
    return x, fs, ref


def training_signals(data: str | Path, cfg: VerifierTrainConfig) -> list[Signal]:
    """Every training patient's record and lead, as recorded and in ``cfg.copies`` augmented copies."""
    from export._corpus import CorpusConfig

    out = []
    rng = np.random.default_rng(cfg.seed)
    for patient, name, sig, fs, ref in _records(Path(data), frozenset(CorpusConfig().holter_test_patients)):
        for lead in range(sig.shape[1]):
            x = sig[:, lead]
            out.append(Signal(patient, f"{name}/{lead}", x, fs, ref))
            for c in range(cfg.copies):
                xa, fa, ra = augment(x, fs, ref, rng)
                out.append(Signal(patient, f"{name}/{lead}/aug{c}", xa, fa, ra))
    return out


# ------------------------------------------------------------------------------------------- rows
def _collector(cfg: VerifierTrainConfig) -> BeatVerifier:
    n_in = 2 * int(round(cfg.half_s / cfg.step_s)) + 1 + len(CONTEXT)
    return verifier_from_dict(
        _doc(
            cfg,
            np.zeros(n_in),
            np.ones(n_in),
            np.zeros((n_in, 1)),
            np.zeros(1),
            np.zeros(1),
            0.0,
            0.0,
            1.0,
            hidden=1,
        )
    )


def _doc(
    cfg: VerifierTrainConfig,
    mean: np.ndarray,
    scale: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: float,
    reject_below: float,
    accept_above: float,
    *,
    hidden: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "format": VERIFIER_FORMAT,
        "version": VERIFIER_VERSION,
        "half_s": cfg.half_s,
        "step_s": cfg.step_s,
        "centre_s": cfg.centre_s,
        "min_prior": cfg.min_prior,
        "hidden": int(hidden if hidden is not None else cfg.hidden),
        "context": list(CONTEXT),
        "reject_below": float(reject_below),
        "accept_above": float(accept_above),
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "w1": [[float(v) for v in row] for row in np.asarray(w1)],
        "b1": [float(v) for v in b1],
        "w2": [float(v) for v in np.asarray(w2).ravel()],
        "b2": float(b2),
    }
    if provenance:
        d["provenance"] = provenance
    return d


def _label(est: np.ndarray, ref: np.ndarray, fs: float) -> np.ndarray:
    """A candidate is a beat when it is the candidate nearest a reference beat within 150 ms."""
    lab = np.zeros(est.size, dtype=bool)
    if not est.size or not ref.size:
        return lab
    tol = TOL_S * fs
    j = np.searchsorted(est, ref)
    for r, jj in zip(ref.tolist(), j.tolist()):
        best, bd = -1, tol + 1
        for q in (jj - 1, jj):
            if 0 <= q < est.size and abs(est[q] - r) < bd:
                best, bd = q, abs(est[q] - r)
        if best >= 0 and bd <= tol:
            lab[best] = True
    return lab


def _pieces(s: Signal, cfg: VerifierTrainConfig) -> list[tuple[int, int]]:
    w = int(cfg.window_s * s.fs)
    return [(0, s.x.size)] + [(a, a + w) for a in range(0, s.x.size - w + 1, w)]


def collect_rows(
    signals: Sequence[Signal], cfg: VerifierTrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, signal index) of every candidate the detector would score (an accepted beat
    beside a short interval or found by search back, a noise peak in a long interval)."""
    v = _collector(cfg)
    xs, ys, gs = [], [], []
    for si, s in enumerate(signals):
        for a, b in _pieces(s, cfg):
            rows: list[tuple[int, bool, bool, np.ndarray]] = []
            VerifiedBeatDetector(fs=s.fs, verifier=v, collect=rows).push(s.x[a:b], last=True)
            if not rows:
                continue
            est = np.array([r[0] for r in rows], dtype=np.int64) + a
            lab = _label(est, s.ref, s.fs)
            keep = np.array([r[2] for r in rows], dtype=bool)
            if keep.any():
                xs.append(np.stack([r[3] for r in rows])[keep])
                ys.append(lab[keep])
                gs.append(np.full(int(keep.sum()), si))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


# ------------------------------------------------------------------------------------------- model
def _fit(
    x: np.ndarray, y: np.ndarray, cfg: VerifierTrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.neural_network import MLPClassifier

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    m = MLPClassifier(
        hidden_layer_sizes=(cfg.hidden,),
        activation="tanh",
        alpha=cfg.alpha,
        max_iter=200,
        early_stopping=False,
        random_state=cfg.seed,
    )
    m.fit((x - mean) / scale, y.astype(np.int64))
    return mean, scale, m.coefs_[0], m.intercepts_[0], m.coefs_[1].ravel(), float(m.intercepts_[1][0])


def _errors(signals: Sequence[Signal], v: BeatVerifier | None, cfg: VerifierTrainConfig) -> list[int]:
    """[missed, false, reference beats] of the detector (with ``v``; None: the energy stage alone) over
    the signals as recorded, then the same over the augmented copies, whole and in 10-s windows,
    matched within 150 ms."""
    clean = _errors1([s for s in signals if "/aug" not in s.name], v, cfg)
    aug = _errors1([s for s in signals if "/aug" in s.name], v, cfg)
    return clean + aug


def _errors1(signals: Sequence[Signal], v: BeatVerifier | None, cfg: VerifierTrainConfig) -> list[int]:
    from wfdb import processing

    fn = fp = nref = 0
    for s in signals:
        for a, b in _pieces(s, cfg):
            det = BeatDetector(fs=s.fs) if v is None else VerifiedBeatDetector(fs=s.fs, verifier=v)
            got = det.push(s.x[a:b], last=True) + a
            ref = s.ref[(s.ref >= a) & (s.ref < b)]
            if not ref.size:
                fp += got.size
                continue
            if not got.size:
                fn += ref.size
                nref += ref.size
                continue
            c = processing.compare_annotations(ref, got, int(round(TOL_S * s.fs)))
            c.compare()
            fn += int(c.fn)
            fp += int(c.fp)
            nref += ref.size
    return [fn, fp, nref]


def train_beat_verifier(
    data: str | Path, out: str | Path, cfg: VerifierTrainConfig | None = None, *, log: Any = print
) -> dict[str, Any]:
    """Cross-validate (leave one training patient out), choose the thresholds, train on all training
    patients and write the weights (JSON) to ``out``. Returns the selection record."""
    cfg = cfg or VerifierTrainConfig()
    signals = training_signals(data, cfg)
    patients = sorted({s.patient for s in signals})
    log(f"{len(signals)} signals from patients {patients}")
    x, y, g = collect_rows(signals, cfg)
    pat = np.array([signals[i].patient for i in g])
    log(f"{len(y)} candidate rows, {int(y.sum())} beats")
    grid = [(r, a) for r in cfg.reject_grid for a in cfg.accept_grid]
    # per threshold pair: [missed, false, beats] as recorded, then [missed, false, beats] augmented
    tot = {ra: [0] * 6 for ra in grid}
    base = [0] * 6
    folds = []
    for p in patients:
        tr = pat != p
        mean, scale, w1, b1, w2, b2 = _fit(x[tr], y[tr], cfg)
        test = [s for s in signals if s.patient == p]
        e0 = _errors(test, None, cfg)
        base = [u + w for u, w in zip(base, e0)]
        row: dict[str, Any] = {"patient": p, "energy_stage": e0}
        for ra in grid:
            v = verifier_from_dict(_doc(cfg, mean, scale, w1, b1, w2, b2, ra[0], ra[1]))
            e = _errors(test, v, cfg)
            tot[ra] = [u + w for u, w in zip(tot[ra], e)]
            row[f"{ra[0]}/{ra[1]}"] = e
        folds.append(row)
        log(f"fold {p}: {row}")
    # fewest missed + false (as recorded and augmented together) among the pairs that neither miss
    # more beats nor add more false beats than the energy stage on the signals as recorded (neither Se
    # nor PPV drops there); ties: fewer changes
    ok = [ra for ra in grid if tot[ra][0] <= base[0] and tot[ra][1] <= base[1]] or [(0.0, 1.0)]
    best = min(ok, key=lambda ra: (tot[ra][0] + tot[ra][1] + tot[ra][3] + tot[ra][4], ra[0], -ra[1]))
    log(f"energy stage alone: {base}; chosen {best}: {tot[best]}")
    mean, scale, w1, b1, w2, b2 = _fit(x, y, cfg)
    selection = {
        "data": "CPSC-2021 training patients "
        + ", ".join(patients)
        + f" (both leads, {cfg.copies} augmented copies each)",
        "rows": int(len(y)),
        "cv": "leave one patient out; missed + false beats summed over folds (whole signals and 10-s windows)",
        "columns": [
            "missed",
            "false",
            "beats",
            "missed (augmented)",
            "false (augmented)",
            "beats (augmented)",
        ],
        "energy_stage": base,
        "grid": {f"{r}/{a}": tot[(r, a)] for r, a in grid},
        "chosen": {"reject_below": best[0], "accept_above": best[1], "errors": tot[best]},
        "folds": folds,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
    }
    doc = _doc(
        cfg,
        mean,
        scale,
        w1,
        b1,
        w2,
        b2,
        best[0],
        best[1],
        provenance={"selection": selection["chosen"], "data": selection["data"], "cv": selection["cv"]},
    )
    verifier_from_dict(doc)
    outp = Path(out)
    tmp = outp.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(outp)
    return selection


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--selection", default=None)
    ap.add_argument("--copies", type=int, default=3)
    a = ap.parse_args()
    sel = train_beat_verifier(a.data, a.out, VerifierTrainConfig(copies=a.copies))
    if a.selection:
        Path(a.selection).write_text(json.dumps(sel, indent=1) + "\n")
