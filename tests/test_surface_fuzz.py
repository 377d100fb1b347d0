"""Defects the surface fuzz (benchmarks/surface_fuzz.py) found, and a smoke run of the harness itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kmerl_edge
from kmerl_edge import LeadError, Record, SamplingRateError, SignalShapeError, TamperedArtifactError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "tests" / "fixtures" / "test_bundle"


@pytest.fixture(scope="module")
def clf() -> Any:
    return kmerl_edge.load(BUNDLE, backend="onnxruntime")


def _ecg(n_leads: int, n: int) -> np.ndarray:
    t = np.arange(n) / 250.0
    return np.sin(2 * np.pi * 1.2 * t)[None, :] * np.ones((n_leads, 1)) + np.random.default_rng(0).normal(
        0, 0.1, (n_leads, n))


def test_leads_that_are_not_names_are_a_named_error(clf: Any) -> None:
    """``leads=3`` ended in a bare TypeError inside canonical_leads (fuzz: api_predict#23)."""
    for bad in (3, None, 2.5, b"II"):
        with pytest.raises(LeadError):
            clf.predict(_ecg(1, 2500), fs=250.0, leads=bad)
        with pytest.raises(LeadError):
            kmerl_edge.preprocess(_ecg(1, 2500), fs=250.0, leads=bad)


def test_one_lead_name_as_a_string_is_that_lead(clf: Any) -> None:
    """``leads="II"`` was iterated as "I", "I" (a duplicate-lead error naming lead I); "V2" as "V", "2"."""
    assert kmerl_edge.canonical_leads("II") == ("II",)
    assert kmerl_edge.canonical_leads("aVR") == ("aVR",)
    pred = clf.predict(_ecg(1, 2500), fs=250.0, leads="V2")
    assert pred.leads == ("V2",)


def test_predict_record_checks_the_records_rate_leads_and_shape(clf: Any) -> None:
    """A Record with fs NaN reached the scorer (ValueError: cannot convert float NaN to integer, fuzz:
    api_predict#11); a 1-D signal gave an IndexError (api_predict#72); unknown lead names passed."""
    sig = _ecg(2, 2500).astype(np.float32)
    for fs in (float("nan"), 0.0, -250.0, float("inf")):
        with pytest.raises(SamplingRateError):
            clf.predict_record(Record(sig, fs, ("I", "II")))
    with pytest.raises(SignalShapeError):
        clf.predict_record(Record(sig[0], 250.0, ("I", "II")))
    with pytest.raises(LeadError):
        clf.predict_record(Record(sig, 250.0, ("I", "X9")))
    assert clf.predict_record(Record(sig, 250.0, ("I", "II"))).leads == ("I", "II")


@pytest.mark.parametrize("t0", [1e308, -1e308, 1e200])
def test_absurd_finite_timestamps_are_a_named_error_not_an_overflow(clf: Any, t0: float) -> None:
    """A finite t0 of ±1e308 overflowed ``int(round(...))`` in push/push_gap (OverflowError, fuzz: stream#23,
    stream#84); the session stays usable."""
    from kmerl_edge.stream import StreamInputError

    s = clf.stream(fs=250.0, leads=["I"], synchronous=True)
    s.push(_ecg(1, 500), 0.0)
    with pytest.raises(StreamInputError):
        s.push(_ecg(1, 500), t0)
    with pytest.raises(StreamInputError):
        s.push_gap(10, t0)
    s.push(_ecg(1, 3000), 2.0)
    s.close()
    st = s.stats()
    assert st.samples == 3500 and st.gaps == 0
    assert abs(s.t_now - 14.0) < 1e-9  # 500 + 3000 samples at 250 Hz from t0 = 0: nothing shifted


def test_a_seal_naming_another_hash_algorithm_is_refused(tmp_path: Path) -> None:
    """SEAL.json's ``algorithm`` was never read: a seal claiming "md5" (or anything) loaded as verified."""
    d = tmp_path / "b"
    shutil.copytree(BUNDLE, d)
    seal = json.loads((d / "SEAL.json").read_text())
    for alg in ("md5", None, 0):
        seal["algorithm"] = alg
        (d / "SEAL.json").write_text(json.dumps(seal))
        with pytest.raises(TamperedArtifactError, match="algorithm"):
            kmerl_edge.load_bundle(d)


def _fuzz_cli(tmp_path: Path, cases: int, seed: int, workers: int, timeout_s: float) -> dict[str, Any]:
    """Run the fuzz in a fresh process, so the workers it forks inherit nothing from this test session."""
    import os
    import subprocess
    import sys

    out = tmp_path / "fuzz.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "benchmarks.surface_fuzz", "--cases", str(cases),
                           "--seed", str(seed), "--workers", str(workers), "--case-timeout", "30", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert out.exists(), proc.stderr[-2000:]
    res: dict[str, Any] = json.loads(out.read_text())
    assert proc.returncode == 0, (proc.stdout[-2000:], res["examples"])
    return res


def test_fuzz_smoke_every_family_no_problems(tmp_path: Path) -> None:
    """500 cases of every family through the worker pool: nothing but ok / named errors."""
    from benchmarks.surface_fuzz import FAMILIES

    res = _fuzz_cli(tmp_path, 500, seed=1, workers=1, timeout_s=120)
    assert set(res["by_family"]) == set(FAMILIES)
    assert all(sum(c.values()) > 0 for c in res["by_family"].values())
    problems = {k: res[k] for k in ("crashes", "tracebacks", "hangs", "silent_wrong_results", "lost_samples")}
    assert problems == dict.fromkeys(problems, 0), res["examples"]


def test_fuzz_counts_a_crash_a_hang_and_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a case that kills its process, one that never returns and one that raises a
    bare exception are each counted, and the run goes on."""
    import os
    import time

    from benchmarks import surface_fuzz as sf

    def crash(rng: Any, ctx: Any) -> None:
        os._exit(134)

    def hang(rng: Any, ctx: Any) -> None:
        time.sleep(60)

    def bare(rng: Any, ctx: Any) -> None:
        raise ValueError("bare")

    monkeypatch.setitem(sf.CASES, "api_predict", crash)
    monkeypatch.setitem(sf.CASES, "api_preprocess", hang)
    monkeypatch.setitem(sf.CASES, "stream", bare)
    monkeypatch.setitem(sf.CASES, "knowledge", lambda rng, ctx: None)
    res = sf.run_fuzz(8, seed=0, workers=2, case_timeout_s=3.0,
                      families=("api_predict", "api_preprocess", "stream", "knowledge")).to_dict()
    assert (res["crashes"], res["hangs"], res["tracebacks"], res["ok"]) == (3, 2, 2, 1)


@pytest.mark.slow
def test_fuzz_full_run_1e5_cases(tmp_path: Path) -> None:
    res = _fuzz_cli(tmp_path, 100_000, seed=0, workers=2, timeout_s=3600)
    problems = {k: res[k] for k in ("crashes", "tracebacks", "hangs", "silent_wrong_results", "lost_samples")}
    assert problems == dict.fromkeys(problems, 0), res["examples"]


def test_a_csv_is_always_one_row_per_sample(tmp_path: Path) -> None:
    """A CSV with as many rows as leads was read transposed (3 rows × 2 columns with 3 leads named became
    3 leads of 2 samples; fuzz: files#674). A CSV's rows are samples, its columns leads."""
    from kmerl_edge import RecordReadError

    p = tmp_path / "x.csv"
    p.write_text("-69,17\n-113,-697\n-222,-129\n")
    with pytest.raises(RecordReadError, match="column"):
        kmerl_edge.read_record(p, fs=250.0, leads=["I", "II", "V2"])
    rec = kmerl_edge.read_record(p, fs=250.0, leads=["I", "II"])
    assert rec.signal.shape == (2, 3)
    np.testing.assert_allclose(rec.signal[1], [17, -697, -129])
    p.write_text("1,2,3,4\n")  # one sample of four leads, not four samples of one lead
    with pytest.raises(RecordReadError, match="column"):
        kmerl_edge.read_record(p, fs=250.0, leads=["I"])


@pytest.mark.parametrize("gain", ["0.0", "nan", "0", "-200", "abc"])
def test_a_wfdb_gain_that_is_zero_or_not_a_number_is_refused(tmp_path: Path, gain: str) -> None:
    """wfdb replaces an ADC gain of 0 or one it cannot parse ("nan/mV") by its default 200 before the reader
    checked it, so such a record was read at 200 counts/mV with no word (fuzz: files#22, files#994)."""
    from kmerl_edge import InvalidHeaderError

    adc = (np.random.default_rng(0).normal(0, 0.3, (1500, 2)) * 200).astype("<i2")
    sums = [int(adc[:, i].astype(np.int64).sum()) & 0xFFFF for i in range(2)]
    sums = [c - 65536 if c >= 32768 else c for c in sums]
    (tmp_path / "r.dat").write_bytes(adc.tobytes())
    (tmp_path / "r.hea").write_text(
        "r 2 500 1500\n"
        f"r.dat 16 200/mV 16 0 {adc[0, 0]} {sums[0]} 0 I\n"
        f"r.dat 16 {gain}/mV 16 0 {adc[0, 1]} {sums[1]} 0 II\n"
    )
    with pytest.raises(InvalidHeaderError, match="gain"):
        kmerl_edge.read_record(tmp_path / "r")
    rec = kmerl_edge.read_record(tmp_path / "r", leads=["I"])  # the bad channel is not read
    np.testing.assert_allclose(rec.signal[0], adc[:, 0] / 200.0, rtol=1e-6)


@pytest.mark.parametrize(("key", "value"), [("hop_s", {}), ("window_s", 1e308), ("target_fs", -500.0),
                                            ("hop_s", float("nan")), ("filter_order", "4"), ("lowpass_hz", 1e9)])
def test_a_resealed_manifest_with_absurd_preprocessing_is_refused_at_load(
        tmp_path: Path, key: str, value: Any) -> None:
    """A consistently re-sealed manifest with ``preprocess.hop_s = {}`` or ``window_s = 1e308`` loaded and
    every predict() ended in a TypeError / OverflowError inside the scorer (fuzz: bundles#74, bundles#321)."""
    from kmerl_edge import BundleError
    from kmerl_edge._bundle import seal_bundle

    d = tmp_path / "b"
    shutil.copytree(BUNDLE, d)
    man = json.loads((d / "manifest.json").read_text())
    man["preprocess"][key] = value
    (d / "manifest.json").write_text(json.dumps(man))
    seal_bundle(d)
    with pytest.raises(BundleError, match=key):
        kmerl_edge.load_bundle(d)


def test_preprocess_config_refuses_values_that_make_no_sense() -> None:
    from kmerl_edge import ConfigError, PreprocessConfig, QualityConfig

    for kw in ({"hop_s": 0.0}, {"window_s": float("inf")}, {"min_duration_s": 11.0}, {"highpass_hz": 50.0},
               {"normalization": 3}, {"norm_eps_mv": -1.0}):
        with pytest.raises(ConfigError):
            PreprocessConfig(**kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        QualityConfig(max_abs_mv=float("nan"))
    assert PreprocessConfig(hop_s=2.5).hop_s == 2.5


def test_a_corrupt_npy_header_and_a_non_numeric_rate_are_named_errors(tmp_path: Path) -> None:
    """A garbled .npy header raised tokenize.TokenError from numpy (fuzz: files#166); ``fs="abc"`` or a list
    for a wearable CSV raised a TypeError in np.isfinite (files#1123)."""
    from kmerl_edge import KmerlError

    p = tmp_path / "x.npy"
    np.save(p, np.zeros((1, 100)))
    raw = bytearray(p.read_bytes())
    raw[20:24] = b"(((("  # inside the header dict
    p.write_bytes(bytes(raw))
    with pytest.raises(KmerlError):
        kmerl_edge.read_record(p, fs=250.0, leads=["I"])
    src = REPO / "tests" / "fixtures" / "formats" / "apple_watch_ecg_cpsc2021_101_9.csv"
    for fs in ("abc", [500], object()):
        with pytest.raises(SamplingRateError):
            kmerl_edge.read_record(src, fs=fs)


def test_kmerl_bench_fuzz_writes_json_and_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli import main

    out = tmp_path / "fuzz.json"
    assert main(["fuzz", "--cases", "24", "--workers", "1", "--families", "frames,files", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["inputs_tried"] == 24 and res["crashes"] == res["hangs"] == res["silent_wrong_results"] == 0
    assert set(res["by_family"]) == {"frames", "files"}
    assert "| **all** |" in capsys.readouterr().out


def test_a_rate_within_the_resampling_tolerance_of_the_model_rate_is_scored(clf: Any) -> None:
    """500.04 Hz reduced to the ratio 1:1 and scipy's filter design raised a bare ValueError (fuzz:
    api_predict#51 seed 7); 0.008 % is within the clock tolerance, so no resampling is needed."""
    from kmerl_edge._preprocess import resample_signal

    x = _ecg(1, 5001)
    np.testing.assert_array_equal(resample_signal(x, fs_in=500.0392821792797, fs_out=500.0), x)
    pred = clf.predict(_ecg(3, 5001), fs=500.0392821792797, leads=["V2", "II", "V1"])
    assert len(pred.window_scores) >= 1


def test_a_manifest_without_label_sets_is_refused_at_load(tmp_path: Path) -> None:
    """``"label_sets": {}`` (re-sealed) loaded, and the first query lookup raised a bare ValueError from
    np.concatenate (fuzz: bundles#644 seed 11): a bundle that scores no class is not a bundle."""
    from kmerl_edge import ManifestError
    from kmerl_edge._bundle import seal_bundle

    d = tmp_path / "b"
    shutil.copytree(BUNDLE, d)
    man = json.loads((d / "manifest.json").read_text())
    man["label_sets"] = {}
    (d / "manifest.json").write_text(json.dumps(man))
    seal_bundle(d)
    with pytest.raises(ManifestError, match="label_sets"):
        kmerl_edge.load_bundle(d)


@pytest.mark.parametrize(("key", "value"), [("depth", []), ("width", "192"), ("heads", 0), ("temperature", None),
                                            ("patch_len", True), ("name", 5)])
def test_a_resealed_manifest_with_an_absurd_model_config_is_refused_at_load(
        tmp_path: Path, key: str, value: Any) -> None:
    """``model.depth = []`` (re-sealed) reached the weight-shape check as a bare TypeError (fuzz:
    bundles#5807 in the 10⁵ run)."""
    from kmerl_edge import BundleError
    from kmerl_edge._bundle import seal_bundle

    d = tmp_path / "b"
    shutil.copytree(BUNDLE, d)
    man = json.loads((d / "manifest.json").read_text())
    man["model"][key] = value
    (d / "manifest.json").write_text(json.dumps(man))
    seal_bundle(d)
    with pytest.raises(BundleError, match=key):
        kmerl_edge.load_bundle(d)


def test_the_oracles_catch_a_lost_sample_and_an_unverified_bundle(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The oracles can fail: a session that under-counts one sample is ``lost``; a loader that skips
    verification is ``silent`` (a tampered bundle loads)."""
    import dataclasses

    from benchmarks import surface_fuzz as sf
    from kmerl_edge import _bundle
    from kmerl_edge._stream_session import StreamSession

    monkeypatch.setattr(sf, "_SCRATCH", str(tmp_path))
    monkeypatch.setattr(sf, "_CTX", None)
    real_stats = StreamSession.stats
    monkeypatch.setattr(StreamSession, "stats",
                        lambda self: dataclasses.replace(real_stats(self), samples=max(0, real_stats(self).samples - 1)))
    outcomes = [sf.run_case(0, "stream", i)[0] for i in range(6)]
    assert "lost" in outcomes, outcomes
    monkeypatch.setattr(StreamSession, "stats", real_stats)
    real_load = _bundle.load_bundle
    monkeypatch.setattr(_bundle, "load_bundle", lambda path, **kw: real_load(path, verify=False))
    outcomes = [sf.run_case(0, "bundles", i)[0] for i in range(12)]
    assert "silent" in outcomes, outcomes
