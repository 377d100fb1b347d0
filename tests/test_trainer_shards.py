"""Shard writing: the shared preprocessing, memory-mapped, atomic and resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kmerl_edge import preprocess
from trainer._errors import ShardError
from trainer.data import load_item, read_mimic_iv_ecg, read_ptbxl
from trainer.shards import open_shards, prepare_shards

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIX = Path(__file__).resolve().parent / "fixtures" / "trainer"


def test_mimic_fixture_shards_hold_the_shared_preprocessing(tmp_path: Path) -> None:
    ds = read_mimic_iv_ecg(FIX / "mimic_iv_ecg")
    out = prepare_shards(ds, tmp_path / "s", shard_size=2, workers=1, dtype="float32", progress=False,
                         drop_bad_leads=False)
    store = open_shards(out)
    assert len(store) == 3 and store.record_ids == [it.record_id for it in ds.items]
    assert isinstance(store.signals[0], np.memmap)
    rec = load_item(ds.items[1])
    pre = preprocess(rec.signal, fs=rec.fs, leads=rec.leads)
    # rows are in the canonical lead order whatever the file order (MIMIC: aVF before aVL)
    np.testing.assert_array_equal(store.signal(1)[5], pre.windows[0][rec.leads.index("aVF")])
    np.testing.assert_array_equal(store.signal(1)[4], pre.windows[0][rec.leads.index("aVL")])
    assert store.present.all()
    assert store.reports[1] == ds.items[1].report
    assert not list(out.glob("*.tmp-*"))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not available")
def test_interrupted_prepare_resumes_and_never_looks_complete(tmp_path: Path) -> None:
    ds = read_ptbxl(SHARED / "ptbxl", rate=100)
    ds.items = ds.items[:6]
    out = tmp_path / "s"
    prepare_shards(ds, out, shard_size=2, workers=1, progress=False, stop_after_shards=1)
    with pytest.raises(ShardError, match="index.json"):
        open_shards(out)
    first = (out / "shard-00000" / "signals.npy").stat().st_mtime_ns
    # a crash in the middle of shard 1 leaves only a .tmp directory
    (out / "shard-00001.tmp-999").mkdir()
    (out / "shard-00001.tmp-999" / "signals.npy").write_bytes(b"half")
    prepare_shards(ds, out, shard_size=2, workers=1, progress=False)
    store = open_shards(out)
    assert len(store) == 6 and store.index["n_failed"] == 0
    assert (out / "shard-00000" / "signals.npy").stat().st_mtime_ns == first  # not rewritten
    assert not list(out.glob("*.tmp-*"))
    assert store.signals[0].dtype == np.float16
    # a different dataset into the same directory is refused
    ds.items = ds.items[:5]
    with pytest.raises(ShardError, match="different plan"):
        prepare_shards(ds, out, shard_size=2, workers=1, progress=False)


def test_failed_records_are_listed_not_lost(tmp_path: Path) -> None:
    src = tmp_path / "m"
    shutil.copytree(FIX / "mimic_iv_ecg", src)
    ds = read_mimic_iv_ecg(src)
    hea = Path(ds.items[0].path).with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace(" 1000", " 400")  # the header now claims 4 s at 100 Hz
    hea.write_text("\n".join(lines) + "\n")
    store = open_shards(prepare_shards(ds, tmp_path / "s", workers=1, progress=False))
    assert len(store) == 2 and store.index["n_failed"] == 1
    (failed,) = store.failed()
    # the first 400 samples do not match the header's checksums: a named error, listed with the record
    assert failed["record_id"] == ds.items[0].record_id and "ChecksumError" in failed["reason"]
    assert json.loads((tmp_path / "s" / "index.json").read_text())["n_rows"] == 2
