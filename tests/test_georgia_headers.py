"""PhysioNet/CinC 2021 Georgia headers that name the record with its file suffix.

14 of the Georgia (E*) headers in ``../shared/data/cinc2021_extra`` start ``E00015.mat 12 500 5000
05-May-2020 14:50:55``: the record name carries the ``.mat`` suffix, which the WFDB header syntax does not
allow (wfdb's record-line pattern takes ``[-\\w]+`` as the name, so it raises "invalid syntax in record
line"). The signal lines and the file are sound; :func:`kmerl_edge.read_record` reads them through a
corrected copy of the header and says so in the notes. Fixture: real record E00015 (CC BY 4.0,
PhysioNet/CinC Challenge 2021, see tests/fixtures/records/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import kmerl_edge as ke


def test_wfdb_alone_refuses_the_suffixed_record_name(records_dir: Path) -> None:
    wfdb = pytest.importorskip("wfdb")
    first = (records_dir / "E00015.hea").read_text().splitlines()[0]
    assert first.split()[0] == "E00015.mat"
    with pytest.raises(Exception, match="invalid syntax in record line"):
        wfdb.rdheader(str(records_dir / "E00015"))


def test_read_record_reads_it_exactly(records_dir: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    rec = ke.read_record(records_dir / "E00015")
    assert rec.name == "E00015" and rec.fs == 500.0 and rec.signal.shape == (12, 5000)
    assert rec.leads == ke.LEADS
    assert any("record name 'E00015.mat' read as 'E00015'" in n for n in rec.notes)
    val = scipy_io.loadmat(str(records_dir / "E00015.mat"))["val"]
    np.testing.assert_allclose(rec.signal, val / 4880.0, rtol=0, atol=1e-6)  # gain 4880/mV, baseline 0
    assert any(c.startswith("Dx:") for c in rec.comments)


def test_the_rhythm_benchmark_reads_georgia_records(records_dir: Path, tmp_path: Path) -> None:
    from benchmarks.rhythm import _twelve_lead

    folder = tmp_path / "cinc2021_extra"
    folder.mkdir()
    for suffix in (".hea", ".mat"):
        shutil.copy(records_dir / f"E00015{suffix}", folder)
    unread: dict[str, str] = {}
    rows = _twelve_lead(tmp_path, unread=unread)
    assert [r[0] for r in rows] == ["E00015"] and unread == {}
    assert rows[0][3] == 500.0 and rows[0][2].shape == (5000,)
