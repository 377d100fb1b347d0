"""Beat scoring of ``kmerl-bench rhythm``: references and detections outside the scored range."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("wfdb")

from benchmarks.rhythm import _compare  # noqa: E402


def test_detection_of_a_reference_just_outside_the_range_is_no_false_positive() -> None:
    """CPSC-2019 scores [0.5 s, 9.5 s): a beat at 0.494 s detected at 0.528 s is the same beat, not a
    false positive (nor a true positive); an unmatched detection inside the range still counts."""
    fs = 500.0
    ref = np.array([247, 596, 949, 4758])
    det = np.array([264, 596, 949, 2000, 4748])
    assert _compare(ref, det, fs, lo=250, hi=4750) == (2, 0, 1)


def test_misses_and_false_positives_inside_the_range_count() -> None:
    fs = 500.0
    ref = np.array([300, 600, 900])
    assert _compare(ref, np.array([300, 1200]), fs, lo=0, hi=5000) == (1, 2, 1)
    assert _compare(ref, np.zeros(0, dtype=np.int64), fs, lo=0, hi=5000) == (0, 3, 0)
    assert _compare(np.zeros(0, dtype=np.int64), np.array([5, 7000]), fs, lo=0, hi=5000) == (0, 0, 1)


def test_errors_list_the_missed_and_false_beats_inside_the_range() -> None:
    """The per-clip listing behind the totals: the positions of the missed references and of the
    unmatched detections, inside the scored range only."""
    from benchmarks.rhythm import _errors

    fs = 500.0
    ref = np.array([247, 600, 900, 1500])
    det = np.array([264, 600, 1200, 4900])
    fn, fp = _errors(ref, det, fs, lo=250, hi=4750)
    assert fn == [900, 1500]
    assert fp == [1200]
    assert _compare(ref, det, fs, lo=250, hi=4750) == (1, len(fn), len(fp))


def test_holter_records_are_split_by_patient_like_the_corpus() -> None:
    """Beats on the CPSC-2021 Holter records are reported apart for the patients the default model
    holds out (the same list as the corpus), so nobody tunes the detector on them."""
    from benchmarks.rhythm import _holter_patient, holter_test_patients
    from export._corpus import CorpusConfig

    assert holter_test_patients() == frozenset(CorpusConfig().holter_test_patients)
    assert _holter_patient("data_35_10") == "35"
    assert _holter_patient("data_101_6") == "101"
    assert _holter_patient("data_8_2") in holter_test_patients()
    assert _holter_patient("data_84_1") not in holter_test_patients()


def test_error_kinds_name_what_each_missed_and_false_beat_is() -> None:
    """The error analysis behind the CPSC-2019 totals: a beat placed on a nearby artefact is one
    mislocated miss and one mislocated false beat; a false beat 0.3 s after a beat is a T wave; a miss
    in a big artefact, a premature miss and a small miss are named as such."""
    from benchmarks.rhythm import FN_KINDS, FP_KINDS, error_kinds

    fs = 500.0
    n = 5000
    x = np.zeros(n)
    ref = np.arange(250, n, 400)  # 1.25 Hz, beats of 1 mV (3 samples wide)
    ref = np.sort(np.append(ref[ref != 3450], [3300]))  # one premature beat (250 ms after 3050)
    for i in ref:
        x[i - 1 : i + 2] = 1.0
    x[4250 - 1 : 4250 + 2] = 0.2  # a small beat
    x[1450 + 100 : 1450 + 140] = 8.0  # a big artefact 0.2-0.28 s after the beat at 1450
    fn = [1050, 1450, 3300, 4250]
    fp = [1050 + 130, 650 + 150]  # 260 ms after the beat at 1050; 300 ms after the beat at 650
    fn_k, fp_k = error_kinds(x, fs, ref, fn, fp)
    assert fn_k == ["mislocated", "artefact", "premature", "low amplitude"]
    assert fp_k == ["mislocated", "after a beat (T wave)"]
    assert set(fn_k) <= set(FN_KINDS) and set(fp_k) <= set(FP_KINDS)
    # far from every reference and quiet: neither kind applies
    assert error_kinds(x, fs, ref, [], [2450 + 240]) == ([], ["other"])


def test_a_wider_tolerance_turns_a_misplaced_beat_into_a_hit() -> None:
    """The tolerance sweep's premise: a beat placed 200 ms from its reference is a missed reference and
    a false detection at the standard 150 ms, and one hit at 250 ms."""
    fs = 500.0
    ref = np.array([500, 1000, 1500])
    det = np.array([500, 1100, 1500])
    assert _compare(ref, det, fs, lo=0, hi=5000) == (2, 1, 1)
    assert _compare(ref, det, fs, lo=0, hi=5000, tol_s=0.25) == (3, 0, 0)
