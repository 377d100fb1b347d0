"""Reading recordings from disk: WFDB, PhysioNet/CinC ``.mat`` + ``.hea``, ``.npy`` and ``.csv``.

Every reader returns a :class:`Record` in mV with an explicit sampling rate and canonical lead names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import RecordReadError, SamplingRateError
from ._leads import canonical_leads

__all__ = ["Record", "read_record"]


@dataclass(frozen=True)
class Record:
    """A recording: ``signal`` is (n_leads, n_samples) float32 in mV, ``fs`` in Hz, leads canonical."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    name: str = ""
    comments: tuple[str, ...] = field(default_factory=tuple)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs


def _record_base(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in {".hea", ".dat", ".mat", ".atr"} else path


def _select(rec: Record, leads: Sequence[str] | None) -> Record:
    if leads is None:
        return rec
    want = canonical_leads(leads)
    missing = [lead for lead in want if lead not in rec.leads]
    if missing:
        raise RecordReadError(f"{rec.name}: leads {', '.join(missing)} not in the record ({', '.join(rec.leads)})")
    rows = [rec.leads.index(lead) for lead in want]
    return Record(rec.signal[rows], rec.fs, want, rec.name, rec.comments)


def _read_wfdb(base: Path) -> Record:
    from ._errors import require

    wfdb: Any = require("wfdb", "io")

    try:
        r = wfdb.rdrecord(str(base))
    except Exception as exc:  # wfdb raises many kinds of errors for bad files
        raise RecordReadError(f"cannot read WFDB record {base}: {exc}") from exc
    sig = r.p_signal
    if sig is None:
        raise RecordReadError(f"{base}: WFDB record has no physical signal")
    units = [str(u).strip().lower() for u in (r.units or [])]
    scale = np.ones(sig.shape[1], dtype=np.float64)
    for i, unit in enumerate(units):
        if unit in {"uv", "µv", "microvolt"}:
            scale[i] = 1e-3
        elif unit in {"v", "volt"}:
            scale[i] = 1e3
    leads = canonical_leads(r.sig_name)
    signal = (sig * scale).T.astype(np.float32)
    # WFDB marks missing samples as NaN; fill them along time so one gap does not poison a whole record.
    if np.isnan(signal).any():
        signal = _fill_nan_along_time(signal)
    return Record(signal, float(r.fs), leads, base.name, tuple(r.comments or ()))


def _fill_nan_along_time(signal: np.ndarray) -> np.ndarray:
    """Fill NaN/Inf samples of each lead by linear interpolation along time (all-NaN leads become 0)."""
    if np.isfinite(signal).all():
        return signal
    out = np.array(signal, dtype=np.float32, copy=True)
    t = np.arange(out.shape[1])
    for row in out:
        bad = ~np.isfinite(row)
        if bad.all():
            row[:] = 0.0
        elif bad.any():
            row[bad] = np.interp(t[bad], t[~bad], row[~bad])
    return out


def _read_cpsc2018_mat(path: Path, fs: float | None, leads: Sequence[str] | None) -> Record:
    """Original CPSC-2018 MATLAB-5 files: struct ``ECG.data`` 12×N in mV, 500 Hz, standard lead order."""
    import scipy.io

    m = scipy.io.loadmat(str(path))
    if "ECG" not in m:
        raise RecordReadError(f"{path}: no 'val' or 'ECG' variable; pass a WFDB header or a known .mat layout")
    data = np.asarray(m["ECG"][0, 0]["data"], dtype=np.float32)
    from ._leads import LEADS

    if data.shape[0] != 12:
        raise RecordReadError(f"{path}: ECG.data has {data.shape[0]} rows, expected 12")
    rec = Record(data, 500.0 if fs is None else float(fs), LEADS, path.stem)
    return rec


def read_record(
    path: str | Path,
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str | None = None,
    gain: float | None = None,
) -> Record:
    """Read a recording and return it in mV with canonical lead names.

    - EDF/EDF+, Apple Watch ECG CSV, Polar Sensor Logger ECG, CSV with named columns: recognised by
      content, rate and units from the file (see :mod:`kmerl_edge._formats`; ``units``/``gain`` for CSVs
      whose header states no unit: ``"mV"``, ``"uV"`` or ``"adc"`` with ``gain`` in counts per mV).

    - WFDB (``.hea`` + ``.dat``) and PhysioNet/CinC ``.mat`` + ``.hea``: rate and leads come from the header;
      ``leads`` selects a subset by name.
    - Original CPSC-2018 ``.mat`` (``ECG.data``, no header): 500 Hz by the dataset's definition.
    - ``.npy`` (n_leads, n_samples) and ``.csv`` (one row per sample, one column per lead, optional header
      row of lead names): ``fs`` and ``leads`` are required, because nothing in the file states them.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    from ._formats import read_formatted

    formatted = read_formatted(p, fs=fs, leads=leads, units=units, gain=gain)
    if isinstance(formatted, Record):
        return _select(formatted, leads)
    if suffix in {".npy", ".csv"}:
        if not p.exists():
            raise RecordReadError(f"no such record: {p} (file not found)")
        if fs is None or leads is None:
            raise SamplingRateError(f"{p.name}: .npy and .csv files need an explicit sampling rate and leads")
        if fs <= 0:
            raise SamplingRateError(f"sampling rate must be positive, got {fs}")
        names = canonical_leads(leads)
        if not p.exists():
            raise RecordReadError(f"no such file: {p}")
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            arr = _read_csv(p)
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise RecordReadError(f"{p.name}: expected a 2-D array, got shape {arr.shape}")
        if arr.shape[0] != len(names) and arr.shape[1] == len(names):
            arr = arr.T  # csv / npy stored samples × leads
        if arr.shape[0] != len(names):
            rows, cols = arr.shape
            raise RecordReadError(
                f"{p.name}: {len(names)} lead(s) named ({', '.join(names)}) but the file holds "
                + (f"{cols} column(s) of {rows} samples" if suffix == ".csv" else f"an array of shape {arr.shape}")
                + "; name one lead per column"
            )
        from ._formats import unit_scale

        arr = arr * np.float32(unit_scale(units, gain=gain, what=f"{p.name}: "))
        return Record(np.ascontiguousarray(arr, dtype=np.float32), float(fs), names, p.stem)
    if units is not None or gain is not None:
        raise RecordReadError(f"{p.name}: --units/--gain are for CSV and .npy files; this record states its units")

    base = _record_base(p)
    if base.with_suffix(".hea").exists():
        rec = _read_wfdb(base)
        if fs is not None and abs(fs - rec.fs) > 1e-6:
            raise SamplingRateError(f"{base.name}: header says {rec.fs} Hz but --fs {fs} was given")
        return _select(rec, leads)
    if suffix == ".mat" and p.exists():
        return _select(_read_cpsc2018_mat(p, fs, leads), leads)
    if p.is_file():
        raise RecordReadError(
            f"{p.name}: not a format kmerl-edge reads (WFDB .hea/.dat, PhysioNet .mat+.hea, EDF/EDF+, "
            "Apple Watch ECG CSV, Polar Sensor Logger ECG, CSV with named lead columns, .npy)"
        )
    if suffix in {".edf", ".bdf", ".csv", ".txt", ".tsv", ".npy"}:
        raise RecordReadError(f"no such record: {p} (file not found)")
    raise RecordReadError(f"no such record: {p} (neither the file nor a WFDB header {base.name}.hea exists)")


def _read_csv(p: Path) -> np.ndarray:
    with p.open() as f:
        first = f.readline()
    try:  # a header row is one that is not numbers ("1.5e-01" is a number, not a header)
        [float(v) for v in first.strip().split(",") if v.strip()]
        has_header = False
    except ValueError:
        has_header = True
    try:
        return np.loadtxt(p, delimiter=",", skiprows=1 if has_header else 0, ndmin=2)
    except ValueError as exc:
        raise RecordReadError(f"{p.name}: not a numeric CSV: {exc}") from exc
