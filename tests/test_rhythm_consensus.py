"""Beat labels from 12-lead consensus (benchmarks.rhythm_consensus): the clustering on a synthetic case
with a known answer, and real PTB-XL training-fold fixtures where the consensus matches the runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.rhythm_consensus import ConsensusConfig, consensus_beats

FIX = Path(__file__).parent / "fixtures" / "records"
FS = 500.0


def test_consensus_keeps_majority_clusters_and_counts_middling_ones() -> None:
    beats = [1000, 1500, 2000, 2500]
    rng = np.random.default_rng(0)
    votes = [np.array([b + int(rng.integers(-15, 16)) for b in beats]) for _ in range(6)]
    votes[0] = np.append(votes[0], 1250)  # one voter's false beat: 1/6, noise
    votes[1] = votes[1][np.abs(votes[1] - 2000) > 100]  # two voters miss the beat at 2000: 4/6 still a beat
    votes[2] = votes[2][np.abs(votes[2] - 2000) > 100]
    for v in (3, 4, 5):  # a beat only half the voters see (3/6: middling, no beat)
        votes[v] = np.sort(np.append(votes[v], 2250 + v))
    c = consensus_beats([np.sort(v) for v in votes], FS, 3000)
    assert c.beats.size == 4
    assert np.abs(c.beats - np.array(beats)).max() <= 15
    assert c.support.tolist() == pytest.approx([1.0, 1.0, 4 / 6, 1.0])
    assert c.middling == 1 and c.kept  # one ambiguous cluster is allowed
    strict = consensus_beats([np.sort(v) for v in votes], FS, 3000, ConsensusConfig(max_middling=0))
    assert not strict.kept and "ambiguous" in strict.reason


def test_detections_further_apart_than_the_tolerance_are_separate_clusters() -> None:
    # one voter places the beat 100 ms late: beyond ±75 ms of the others it is its own (minority) cluster
    c = consensus_beats([np.array([1000]), np.array([1010]), np.array([1050])], FS, 3000)
    assert c.beats.tolist() == [1005] and c.support.tolist() == pytest.approx([2 / 3])
    assert sorted(s for _, s in c.clusters) == pytest.approx([1 / 3, 2 / 3])
    # all three within ±75 ms of the centre: one cluster at their median
    one = consensus_beats([np.array([1000]), np.array([1010]), np.array([1030])], FS, 3000)
    assert one.beats.tolist() == [1010] and one.support.tolist() == [1.0]


def test_a_voter_counts_once_per_cluster_and_no_voters_is_an_error() -> None:
    c = consensus_beats([np.array([1000, 1010]), np.array([1005])], FS, 3000)
    assert c.beats.size == 1 and c.support[0] == 1.0  # 1010 is left over: a cluster of its own
    assert len(c.clusters) == 2
    with pytest.raises(ValueError):
        consensus_beats([], FS, 3000)


@pytest.mark.parametrize("record", ["00001_hr", "00256_hr"])  # PTB-XL strat_fold 3 and 7 (training folds)
def test_real_ptbxl_consensus_matches_the_runtime_detector(record: str) -> None:
    pytest.importorskip("wfdb")
    pytest.importorskip("neurokit2")
    from benchmarks.rhythm import _compare
    from benchmarks.rhythm_consensus import _read, label_record
    from kmerl_edge.rhythm import detect_beats

    x, fs, leads = _read(FIX / record)
    c = label_record(x, fs)
    assert c.kept and c.beats.size >= 8
    assert float(c.support.min()) >= 2 / 3
    lo, hi = int(0.5 * fs), x.shape[0] - int(0.5 * fs)
    ii = leads.index("II")
    tp, fn, fp = _compare(c.beats, np.sort(detect_beats(x[:, ii], fs=fs)), fs, lo=lo, hi=hi)
    assert fn == 0 and fp == 0 and tp >= 8
