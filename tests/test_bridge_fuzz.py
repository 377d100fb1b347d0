"""A small-N run of the fuzz benchmark (benchmarks/bridge_fuzz.py runs it over 10**6 frames)."""

from __future__ import annotations

from benchmarks import bridge_fuzz as bf


def test_small_fuzz_run_has_no_crash_no_corruption_and_reports_every_loss():
    truth = bf.load_truth(2)
    rates = bf.FaultRates(drop=0.03, duplicate=0.02, bitflip=0.03, drop_byte=0.02, dup_byte=0.02, truncate=0.02,
                          garbage_inside=0.02, garbage_between=0.03)
    stream = bf.build_stream(truth, 3000, rates, seed=1)
    assert all(v > 0 for v in stream.injected.values())
    res = bf.decode_and_check(stream, truth, seed=1, chunk=(1, 512))
    assert res["crashes"] == 0
    assert res["corrupted_samples_delivered"] == 0
    assert res["samples_lost_unreported"] == 0 and res["samples_doubly_reported"] == 0
    assert res["samples_reported_in_gaps"] == res["samples_lost_true"] > 0
    assert res["decoder"]["lost_frames"] == stream.lost_frames_all
    assert res["decoder"]["duplicates"] == stream.injected["duplicate"]
    assert res["samples_delivered"] + res["samples_lost_true"] == 3000 * bf.SPF
