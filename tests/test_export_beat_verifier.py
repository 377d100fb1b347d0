"""The learned beat verifier experiment (export._verified_beats, issue #14; not in the runtime): its
weights load and validate (a corrupted file is a named error, never a silent score), it keeps the
detector's streaming contract, and on real windows it drops a spike the energy stage took for a beat
and takes a small beat the energy stage missed. The runtime detector (kmerl_edge.rhythm) is unchanged:
the verifier did not improve CPSC-2019 overall (benchmarks/results/rhythm/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export._verified_beats import BeatVerifierError, VerifiedBeatDetector, load_verifier, verifier_from_dict
from kmerl_edge import KmerlError
from kmerl_edge.rhythm import detect_beats

WEIGHTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "rhythm" / "beat_verifier.json"
FIX = Path(__file__).parent / "fixtures" / "records"


def _doc() -> dict[str, Any]:
    return json.loads(WEIGHTS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def verifier() -> Any:
    return load_verifier(WEIGHTS)


def test_weights_load_and_validate(verifier: Any) -> None:
    d = _doc()
    assert verifier.w1.shape == (verifier.n_shape + len(d["context"]), d["hidden"])
    assert 0.0 <= verifier.reject_below <= 1.0 and 0.0 <= verifier.accept_above <= 1.0
    assert not verifier.w1.flags.writeable
    assert "CPSC-2021 training patients" in d["provenance"]["data"]


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda d: d.update(w1=d["w1"][:-1]), "'w1' has shape"),
        (lambda d: d["b1"].__setitem__(0, float("nan")), "'b1' holds NaN"),
        (lambda d: d.update(format="something-else"), "format"),
        (lambda d: d.pop("w2"), "no 'w2'"),
        (lambda d: d.update(reject_below=1.5), "'reject_below' must be a number"),
        (lambda d: d.update(hidden="16"), "'hidden' must be an integer"),
        (lambda d: d.update(context=d["context"][::-1]), "context features"),
        (lambda d: d["scale"].__setitem__(3, 0.0), "'scale' must be positive"),
    ],
)
def test_corrupted_weights_are_a_named_error(tmp_path: Path, corrupt: Any, match: str) -> None:
    d = _doc()
    corrupt(d)
    p = tmp_path / "v.json"
    p.write_text(json.dumps(d), encoding="utf-8")  # NaN written as NaN (Python's json allows it)
    with pytest.raises(BeatVerifierError, match=match) as ei:
        load_verifier(p)
    assert isinstance(ei.value, KmerlError)


def test_truncated_or_missing_weights_file_is_a_named_error(tmp_path: Path) -> None:
    p = tmp_path / "v.json"
    p.write_text(WEIGHTS.read_text(encoding="utf-8")[:500], encoding="utf-8")
    with pytest.raises(BeatVerifierError, match="not valid JSON"):
        load_verifier(p)
    with pytest.raises(BeatVerifierError, match="cannot read"):
        load_verifier(tmp_path / "absent.json")
    with pytest.raises(BeatVerifierError, match="not a JSON object"):
        verifier_from_dict([1, 2, 3])


def test_a_verifier_that_changes_nothing_gives_the_energy_stage_beats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fs = 250.0
    t = np.arange(int(20 * fs)) / fs
    x = np.zeros_like(t)
    for b in np.arange(0.5, 19.5, 0.8):
        x += np.exp(-0.5 * ((t - b) / 0.012) ** 2)
    x += 0.02 * rng.standard_normal(t.size)
    d = _doc()
    d.update(reject_below=0.0, accept_above=1.0)
    p = tmp_path / "never.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    never = VerifiedBeatDetector(fs=fs, verifier=load_verifier(p)).push(x, last=True)
    np.testing.assert_array_equal(never, detect_beats(x, fs=fs))
    assert never.size == 24


# -- real windows (CPSC-2021, patients the verifier trains on: what it does, not how well) ------------------
wfdb = pytest.importorskip("wfdb")


def _record(name: str, channel: int) -> tuple[np.ndarray, float, np.ndarray]:
    rec = wfdb.rdrecord(str(FIX / name))
    ann = wfdb.rdann(str(FIX / name), "atr")
    return rec.p_signal[:, channel].astype(np.float64), float(rec.fs), np.asarray(ann.sample, dtype=np.int64)


def _near(beats: np.ndarray, i: int, fs: float, tol_s: float = 0.15) -> bool:
    return bool(beats.size) and int(np.abs(beats - i).min()) <= tol_s * fs


def _stream(x: np.ndarray, fs: float, verifier: Any, size: int) -> np.ndarray:
    d = VerifiedBeatDetector(fs=fs, verifier=verifier)
    got = [d.push(x[i : i + size]) for i in range(0, x.size, size)] + [d.finish()]
    return np.concatenate(got)


def test_spike_taken_for_a_beat_by_the_energy_stage_is_dropped(verifier: Any) -> None:
    """data_84_1, 270-280 s, lead II: at 8.73 s (sample 1745), between the beats at 1578 and 1801, a
    spike of about twice the beats' amplitude passes the energy stage's threshold (a false beat with
    today's detector); the verifier drops it and keeps every beat the energy stage found."""
    x, fs, ref = _record("data_84_1_270s", 1)
    off = detect_beats(x, fs=fs)
    on = VerifiedBeatDetector(fs=fs, verifier=verifier).push(x, last=True)
    assert _near(off, 1745, fs, 0.01) and not _near(ref, 1745, fs)
    assert not _near(on, 1745, fs, 0.05)
    np.testing.assert_array_equal(np.setdiff1d(off, on), [1745])
    np.testing.assert_array_equal(_stream(x, fs, verifier, 23), on)


@pytest.mark.parametrize("channel", [0, 1])
def test_small_premature_beat_missed_by_the_energy_stage_is_taken(verifier: Any, channel: int) -> None:
    """data_92_4, 70-80 s (leads I and II): the premature beat at 3.69 s (sample 738) is too small for
    the energy stage's threshold and its pause too short for the gap search back (missed today); the
    verifier takes it, and nothing else changes."""
    x, fs, ref = _record("data_92_4_70s", channel)
    off = detect_beats(x, fs=fs)
    on = VerifiedBeatDetector(fs=fs, verifier=verifier).push(x, last=True)
    assert _near(ref, 738, fs, 0.0) and not _near(off, 738, fs) and _near(on, 738, fs)
    assert np.setdiff1d(on, off).size == 1 and np.setdiff1d(off, on).size == 0
    np.testing.assert_array_equal(_stream(x, fs, verifier, 37), on)


@pytest.mark.parametrize("size", [1, 97, 1500])
def test_stream_chunks_give_whole_record_beats(verifier: Any, size: int) -> None:
    """CPSC-2021 data_101_6, lead I (AF: many candidates in doubt): any chunking, the same beats."""
    x, fs, _ = _record("data_101_6", 0)
    whole = VerifiedBeatDetector(fs=fs, verifier=verifier).push(x, last=True)
    np.testing.assert_array_equal(_stream(x, fs, verifier, size), whole)
    assert whole.size > 150


def test_augmented_copy_drops_the_references_of_erased_beats() -> None:
    from export.beat_verifier import augment

    x, fs, ref = _record("data_92_4_70s", 1)
    long_x = np.tile(x, 12)  # two minutes: every kind of artefact appears
    long_ref = np.concatenate([ref + i * x.size for i in range(12)])
    for seed in range(4):
        xa, fa, ra = augment(long_x, fs, long_ref, np.random.default_rng(seed))
        assert fa in (200.0, 250.0, 360.0, 500.0, 1000.0) and np.isfinite(xa).all()
        assert abs(xa.size / fa - long_x.size / fs) < 0.1 and ra.size <= long_ref.size
        assert ra.size and ra.max() < xa.size
