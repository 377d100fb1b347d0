"""A small slice of the WFDB corpus benchmark (benchmarks/records_corpus.py): storage formats wfdb only
reads (8, 311), FLAC (524), multi-segment with a null segment, skew, no signal length, monitor and patch
channel names, gaps and headers that must be refused — every record scored or refused by name, none failed."""

from __future__ import annotations

import pytest

import kmerl_edge as ke

pytest.importorskip("wfdb")


def test_small_corpus_scores_or_refuses_every_record(tmp_path, test_bundle_path):
    from benchmarks.records_corpus import make_corpus, score_corpus

    items = make_corpus(tmp_path, small=True)
    kinds = {it.kind for it in items}
    assert {"format 8", "format 311", "format 524", "multi-segment, variable layout, null segment", "skewed",
            "no signal length", "gaps", "bad header"} <= kinds
    res = score_corpus(items, ke.load(test_bundle_path, backend="onnxruntime"))
    failed = [f"{r['name']}: {r['detail']}" for r in res["rows"] if r["outcome"] == "failed"]
    assert not failed, failed
    assert res["scored"] == sum(it.expect == "scored" for it in items)
    assert set(res["refused_by_reason"]) == {"NoEcgChannelError", "SignalTooShortError", "InvalidHeaderError",
                                             "ChecksumError"}


def test_packed_formats_read_back_exactly(tmp_path, records_dir):
    """The corpus's own packers for formats wfdb cannot write agree with wfdb's readers, sample for sample."""
    import numpy as np

    from benchmarks.records_corpus import PACKED_HERE, write_record

    r = ke.read_record(records_dir / "data_101_6")
    x = r.signal[:, :1001].T.astype(np.float64)  # an odd length: 310/311 pack samples in threes
    for fmt in PACKED_HERE:
        base = write_record(tmp_path, f"f{fmt}", x, r.fs, ["I", "II"], fmt=fmt)  # raises if it does not read back
        y = ke.read_record(base)
        assert y.signal.shape == (2, 1001)
        assert np.corrcoef(y.signal[0], x[:, 0])[0, 1] > 0.99
