"""Reading recordings from disk: WFDB, PhysioNet/CinC ``.mat`` + ``.hea``, ``.npy`` and ``.csv``.

:func:`open_record` is the one dispatch point: it checks the path (no directories, FIFOs or devices), picks
a reader by suffix (:func:`register_format` adds more) and returns a :class:`RecordReader` that reads the
recording in pieces (``read(start, stop)``), so a 24-h Holter never has to sit in memory.
:func:`read_record` reads a whole recording into a :class:`Record`.

Both give mV with an explicit sampling rate and canonical lead names. What they never do:

- fill missing samples: WFDB's invalid-sample value (and NaN in ``.npy``/``.csv``) stays NaN, and the
  classifier scores around the gaps and reports them;
- assume a sampling rate: a WFDB header without one (WFDB's 250 Hz default), or with a rate that is not a
  positive number, is refused with :class:`InvalidHeaderError`;
- invert or rescale silently: a gain that is not a positive number is refused; WFDB checksums are verified
  (:class:`ChecksumError`) once every sample of a signal has been read;
- guess what a channel is: channels are sorted by :func:`kmerl_edge._channels.select_channels` into
  standard leads (scored), ECG of unknown position (``MCL1``, ``V``, ``ECG 1``: need a ``lead_map``) and
  non-ECG channels (blood pressure, pleth, respiration …: left out with a note in ``Record.notes``).
"""

from __future__ import annotations

import abc
import io
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._channels import select_channels
from ._errors import (
    ChecksumError,
    InvalidHeaderError,
    RecordReadError,
    SamplingRateError,
    require,
)
from ._leads import LEADS, canonical_leads

__all__ = ["ArrayReader", "Record", "RecordReader", "open_record", "read_record", "register_format"]

LeadMap = Mapping[str, str] | str | None


@dataclass(frozen=True)
class Record:
    """A recording: ``signal`` is (n_leads, n_samples) float32 in mV (float64 if a value does not fit), ``fs``
    in Hz, leads canonical.

    Missing samples are NaN (never filled); ``notes`` says which channels were left out and why.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    name: str = ""
    comments: tuple[str, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs

    @property
    def missing_samples(self) -> int:
        """Time samples at which at least one lead is missing (NaN)."""
        return int(np.isnan(self.signal).any(axis=0).sum())


class RecordReader(abc.ABC):
    """An opened recording, read in pieces. ``read(start, stop)`` → (n_leads, stop - start) float mV,
    NaN where samples are missing. Call :meth:`verify` after reading every sample (checksums)."""

    name: str
    fs: float
    leads: tuple[str, ...]
    n_samples: int
    notes: tuple[str, ...] = ()
    comments: tuple[str, ...] = ()

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of every lead."""

    def verify(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Raise a named error if what was read does not match what the file promised (checksums)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release the file."""

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


class ArrayReader(RecordReader):
    """A reader over an array already in memory (or memory-mapped): (n_leads, n) or, with ``transposed``,
    (n, n_leads); ``scale`` multiplies each lead into mV."""

    def __init__(
        self,
        array: np.ndarray,
        *,
        fs: float,
        leads: Sequence[str],
        name: str = "",
        transposed: bool = False,
        rows: Sequence[int] | None = None,
        scale: Sequence[float] | None = None,
        notes: Sequence[str] = (),
        comments: Sequence[str] = (),
    ) -> None:
        self._a = array
        self._t = transposed
        self.leads = tuple(leads)
        self._rows = list(range(len(self.leads))) if rows is None else list(rows)
        self._scale = None if scale is None else np.asarray(scale, dtype=np.float64)[:, None]
        self.fs = float(fs)
        self.name = name
        self.n_samples = int(array.shape[0] if transposed else array.shape[1])
        self.notes = tuple(notes)
        self.comments = tuple(comments)

    def read(self, start: int, stop: int) -> np.ndarray:
        part = self._a[start:stop, self._rows].T if self._t else self._a[self._rows, start:stop]
        x = np.asarray(part, dtype=np.float64)  # float64: a value beyond float32 must reach the range check
        if self._scale is not None:
            x = x * self._scale
        return np.ascontiguousarray(x)


Opener = Callable[..., RecordReader]
#: suffix (lower case, with the dot) → opener(path, *, fs, leads, lead_map) returning a RecordReader.
#: Other format modules add theirs with :func:`register_format`; WFDB is the fallback for the rest.
_OPENERS: dict[str, Opener] = {}


def register_format(suffixes: Sequence[str], opener: Opener) -> None:
    """Make :func:`open_record` open files ending in ``suffixes`` with ``opener``."""
    for s in suffixes:
        _OPENERS[s.lower()] = opener


# --------------------------------------------------------------------------------------------- checks
def _regular_file(p: Path, what: str = "file") -> None:
    """Refuse directories, FIFOs, sockets and devices (reading a FIFO would hang)."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise RecordReadError(f"no such {what}: {p}") from None
    except OSError as exc:
        raise RecordReadError(f"cannot open {p}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise RecordReadError(f"{p} is a directory; pass a record file (.hea, .mat, .npy, .csv) or a WFDB base name")
    if not stat.S_ISREG(st.st_mode):
        raise RecordReadError(f"{p} is not a regular file (a FIFO, socket or device); copy the recording to a file")
    if not os.access(p, os.R_OK):
        raise RecordReadError(f"cannot open {p}: permission denied")


def _check_fs_arg(fs: float | None, name: str) -> float:
    if fs is None:
        raise SamplingRateError(f"{name}: .npy and .csv files need an explicit sampling rate (--fs) and leads (--leads)")
    try:
        f = float(fs)
    except (TypeError, ValueError):
        raise SamplingRateError(f"sampling rate must be a number, got {fs!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise SamplingRateError(f"sampling rate must be a positive finite number, got {fs!r}")
    return f


_UNIT_SCALE = {"uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3, "nv": 1e-6,
               "v": 1e3, "volt": 1e3, "volts": 1e3}


def _unit_scale(unit: str) -> float:
    return _UNIT_SCALE.get(str(unit or "").strip().lower(), 1.0)


# ----------------------------------------------------------------------------------------------- WFDB
def _record_base(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() in {".hea", ".dat", ".mat", ".atr"} else path


def _hea(base: Path) -> Path:
    return base.parent / (base.name + ".hea")


def _header_lines(hea: Path) -> list[str]:
    _regular_file(hea, "header")
    raw = hea.read_bytes()
    if b"\0" in raw:
        raise InvalidHeaderError(f"{hea.name}: not a WFDB header (binary content)")
    text = raw.decode("utf-8", errors="replace")
    return [ln for ln in (line.strip() for line in text.splitlines()) if ln and not ln.startswith("#")]


def _stated_fs(record_line: str, hea: Path) -> float | None:
    """The sampling rate exactly as the record line states it (None when the field is absent)."""
    parts = record_line.split()
    if len(parts) < 2:
        raise InvalidHeaderError(f"{hea.name}: the record line {record_line!r} has no signal count")
    if len(parts) < 3:
        return None
    token = re.split(r"[/(]", parts[2], maxsplit=1)[0]
    try:
        fs = float(token)
    except ValueError:
        raise InvalidHeaderError(f"{hea.name}: sampling rate {parts[2]!r} is not a number") from None
    if not math.isfinite(fs) or fs <= 0:
        raise InvalidHeaderError(f"{hea.name}: sampling rate {parts[2]!r} is not a positive number")
    return fs


def _stated_gains(lines: list[str], hea: Path) -> list[float | None]:
    """Each signal's ADC gain exactly as a single-segment header states it (None when the field is absent).

    wfdb turns a gain of 0 or one it cannot parse (``nan/mV``) into its default of 200 silently; the
    header's own text is what counts."""
    parts = lines[0].split()
    if "/" in parts[0] or len(parts) < 2:  # a multi-segment header: its segments are checked when read
        return []
    try:
        n_sig = int(parts[1])
    except ValueError:
        raise InvalidHeaderError(f"{hea.name}: signal count {parts[1]!r} is not a whole number") from None
    out: list[float | None] = []
    for line in lines[1 : 1 + n_sig]:
        fields = line.split()
        token = re.split(r"[/(]", fields[2], maxsplit=1)[0] if len(fields) > 2 else ""
        if not token:
            out.append(None)
            continue
        try:
            out.append(float(token))
        except ValueError:
            out.append(math.nan)  # refused if that channel is read
    return out


class _WfdbReader(RecordReader):
    def __init__(self, base: Path, *, fs: float | None, leads: Sequence[str] | None, lead_map: LeadMap) -> None:
        wfdb: Any = require("wfdb", "io")
        self._wfdb = wfdb
        self._base = base
        hea = _hea(base)
        lines = _header_lines(hea)
        if not lines:
            raise InvalidHeaderError(f"{hea.name}: empty header")
        stated = _stated_fs(lines[0], hea)
        self._tmp: Any = None
        repaired: list[str] = []
        try:
            h = wfdb.rdheader(str(base))
        except Exception as exc:  # wfdb raises many kinds of errors for bad headers
            fixed = self._repair(base, lines)
            if fixed is None:
                raise InvalidHeaderError(f"cannot read WFDB header {hea}: {exc}") from exc
            base, repaired = fixed
            self._base = base
            try:
                h = wfdb.rdheader(str(base))
            except Exception:
                self.close()
                raise InvalidHeaderError(f"cannot read WFDB header {hea}: {exc}") from exc
        self.name = self._base.name if not repaired else _record_base(Path(lines[0].split()[0])).name
        self.comments = tuple(str(c) for c in (h.comments or ()))
        if stated is None:
            if fs is None:
                raise InvalidHeaderError(
                    f"{hea.name}: the header states no sampling rate (WFDB's 250 Hz default is not assumed); "
                    f"pass it with --fs"
                )
            self.fs = _check_fs_arg(fs, base.name)
        else:
            if fs is not None and abs(float(fs) - stated) > 1e-6:
                raise SamplingRateError(f"{base.name}: header says {stated:g} Hz but --fs {fs} was given")
            self.fs = stated
        self._multi = isinstance(h, wfdb.MultiRecord)
        self._check_files(h)
        if self._multi:
            probe = self._rd(0, 1, None, physical=True)
            names, units = list(probe.sig_name), list(probe.units or [])
            gains = [1.0] * len(names)  # the segments' gains are checked when each segment is read
            self._checksums: list[int | None] = [None] * len(names)
            skew = [0] * len(names)
        else:
            names, units = list(h.sig_name or []), list(h.units or [])
            gains = list(h.adc_gain or [])
            self._checksums = list(h.checksum or [None] * len(names))
            skew = [int(s or 0) for s in (h.skew or [0] * len(names))]
        if not names:
            raise RecordReadError(f"{base.name}: the header lists no signals")
        choice = select_channels(names, units, leads=leads, lead_map=lead_map, record=self.name)
        self.leads = choice.leads
        self.notes = tuple(repaired) + choice.notes
        self._selected_names = [names[i] for i in choice.indices]
        self._seg_names = list(h.seg_name or []) if self._multi else []
        self._seg_lens = [int(x or 0) for x in (h.seg_len or [])] if self._multi else []
        self._idx = list(choice.indices)
        stated_gains = [] if self._multi else _stated_gains(lines, hea)
        for i in self._idx:
            g = float(gains[i]) if i < len(gains) and gains[i] is not None else 1.0
            if i < len(stated_gains) and stated_gains[i] is not None:
                g = float(stated_gains[i])  # type: ignore[arg-type]
            if not math.isfinite(g) or g <= 0:
                raise InvalidHeaderError(
                    f"{base.name}: signal {names[i]!r} has ADC gain {gains[i]!r}; a gain must be a positive number "
                    f"(a negative gain would invert the ECG, zero means uncalibrated)"
                )
        self._scale = np.asarray([_unit_scale(units[i] if i < len(units) else "mV") for i in self._idx])
        n = h.sig_len
        self._cache: np.ndarray | None = None
        if not n:  # no signal length in the header: wfdb infers it from the file size; read it once
            rec = self._rd(0, None, self._idx, physical=True)
            self._cache = self._physical(rec)
            n = self._cache.shape[1]
        self.n_samples = int(n)
        self._sums = np.zeros(len(self._idx), dtype=np.int64)
        self._next = 0
        self._verify_idx = [
            k for k, i in enumerate(self._idx)
            if not self._multi and self._cache is None and self._checksums[i] is not None and skew[i] == 0
        ]

    def _repair(self, base: Path, lines: list[str]) -> tuple[Path, list[str]] | None:
        """Headers of the PhysioNet/CinC 2021 Georgia set name the record with its file suffix
        (``E00015.mat 12 500 5000 05-May-2020 14:50:55``) and write the date as dd-Mon-yyyy, which the WFDB
        syntax does not allow. Read such a header through a corrected copy (record name without suffix,
        base time and date left out: nothing here uses them) and say so in the notes."""
        import shutil
        import tempfile

        parts = lines[0].split()
        if len(parts) < 4:
            return None
        name = parts[0]
        stem = _record_base(Path(name)).name
        if stem != base.name:
            return None
        changed = []
        if name != stem:
            changed.append(f"record name {name!r} read as {stem!r}")
        if len(parts) > 4:
            changed.append(f"base time/date {' '.join(parts[4:])!r} ignored")
        if not changed:
            return None
        self._tmp = tempfile.TemporaryDirectory(prefix="kmerl-hea-")
        tmp = Path(self._tmp.name)
        text = _hea(base).read_text(errors="replace").splitlines()
        first = next(i for i, ln in enumerate(text) if ln.strip() and not ln.strip().startswith("#"))
        text[first] = " ".join([stem, *parts[1:4]])
        (tmp / f"{stem}.hea").write_text("\n".join(text) + "\n")
        for ln in lines[1:]:
            f = ln.split()[0]
            src = base.parent / f
            if src.is_file() and not (tmp / f).exists() and "/" not in f:
                try:
                    (tmp / f).symlink_to(src.resolve())
                except OSError:
                    shutil.copyfile(src, tmp / f)
        return tmp / stem, [f"header repaired: {'; '.join(changed)}"]

    def close(self) -> None:
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _check_files(self, h: Any) -> None:
        files: list[Path] = []
        if self._multi:
            for seg in h.seg_name or []:
                if seg and seg != "~":
                    _regular_file(self._base.parent / f"{seg}.hea", "segment header")
        else:
            for f in dict.fromkeys(h.file_name or []):
                if f and f != "~":
                    files.append(self._base.parent / f)
        for f in files:
            _regular_file(f, "signal file")

    def _rd(self, start: int, stop: int | None, channels: list[int] | None, *, physical: bool) -> Any:
        try:
            return self._wfdb.rdrecord(
                str(self._base), sampfrom=start, sampto=stop, channels=channels, physical=physical
            )
        except Exception as exc:  # wfdb raises many kinds of errors for bad files
            raise RecordReadError(f"cannot read WFDB record {self._base}: {exc}") from exc

    def _physical(self, rec: Any) -> np.ndarray:
        sig = rec.p_signal
        if sig is None:
            raise RecordReadError(f"{self.name}: WFDB record has no physical signal")
        return np.ascontiguousarray((np.asarray(sig, dtype=np.float64) * self._scale).T)

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, int(start)), min(self.n_samples, int(stop))
        if stop <= start:
            return np.zeros((len(self.leads), 0), dtype=np.float64)
        if self._cache is not None:
            return self._cache[:, start:stop]
        if self._multi:
            out = self._full(self._physical(self._rd(start, stop, self._idx, physical=True)), start, stop)
            if start == self._next:
                self._next = stop
            return out
        rec = self._rd(start, stop, self._idx, physical=False)
        d = np.asarray(rec.d_signal)
        self._full(d.T, start, stop)
        if start == self._next:
            self._sums += d.sum(axis=0, dtype=np.int64)
            self._next = stop
        try:
            p = rec.dac(expanded=False, return_res=64, inplace=False)
        except Exception as exc:
            raise RecordReadError(f"cannot convert {self.name} to physical units: {exc}") from exc
        return np.ascontiguousarray((np.asarray(p, dtype=np.float64) * self._scale).T)

    def _verify_segments(self) -> None:
        """Multi-segment records: each segment header's checksums, over the signals that were scored
        (read again in bounded pieces, as digital samples)."""
        wfdb = self._wfdb
        wanted = set(self._selected_names)
        for seg, seg_len in zip(self._seg_names, self._seg_lens):
            if not seg or seg == "~" or not seg_len:
                continue
            path = str(self._base.parent / seg)
            try:
                sh = wfdb.rdheader(path)
            except Exception as exc:
                raise RecordReadError(f"{self.name}: cannot read segment header {seg}: {exc}") from exc
            sums_want = list(sh.checksum or [])
            skews = list(sh.skew or [])
            chans = [j for j, nm in enumerate(sh.sig_name or []) if nm in wanted and j < len(sums_want)
                     and sums_want[j] is not None and not (j < len(skews) and skews[j])]
            if not chans:
                continue
            n = int(sh.sig_len or 0)
            step = max(1, 2_000_000 // len(chans))
            sums = np.zeros(len(chans), dtype=np.int64)
            for a in range(0, n, step):
                try:
                    r = wfdb.rdrecord(path, sampfrom=a, sampto=min(n, a + step), channels=chans, physical=False)
                except Exception as exc:
                    raise RecordReadError(f"{self.name}: cannot read segment {seg}: {exc}") from exc
                sums += np.asarray(r.d_signal).sum(axis=0, dtype=np.int64)
            for k, j in enumerate(chans):
                if int(sums[k]) % 65536 != int(sums_want[j]) % 65536:
                    raise ChecksumError(
                        f"{self.name}: segment {seg}, signal {sh.sig_name[j]} fails its checksum (header "
                        f"{int(sums_want[j]) % 65536}, samples {int(sums[k]) % 65536}): the file is corrupt"
                    )

    def _full(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        if x.shape[-1] != stop - start:
            raise RecordReadError(
                f"{self.name}: the header states {self.n_samples} samples but the signal file ends early "
                f"(samples {start}–{stop} gave {x.shape[-1]})"
            )
        return x

    def verify(self) -> None:
        if self._next != self.n_samples:
            return
        if self._multi:
            self._verify_segments()
            return
        for k in self._verify_idx:
            want = int(self._checksums[self._idx[k]]) % 65536  # type: ignore[arg-type]
            got = int(self._sums[k]) % 65536
            if want != got:
                raise ChecksumError(
                    f"{self.name}: signal {self.leads[k]} fails its checksum (header {want}, samples {got}): "
                    f"the file is corrupt or does not belong to this header"
                )


# ------------------------------------------------------------------------------------------- .mat files
def _open_mat(path: Path, *, fs: float | None, leads: Sequence[str] | None) -> RecordReader:
    """A ``.mat`` file without a WFDB header: the original CPSC-2018 files (struct ``ECG.data`` 12×N in mV,
    500 Hz, standard lead order), or one numeric array read with an explicit ``fs`` and ``leads``."""
    import scipy.io

    try:
        m = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises many kinds of errors for files that are not MATLAB files
        raise RecordReadError(f"{path.name}: not a readable MATLAB file ({exc})") from exc
    if "ECG" not in m:
        arrays = {k: v for k, v in m.items() if not k.startswith("__") and isinstance(v, np.ndarray)
                  and v.dtype.kind in "fiu" and v.ndim == 2 and min(v.shape) >= 1}
        if len(arrays) == 1 and fs is not None and leads is not None:  # one numeric array, e.g. CPSC 2019 'ecg'
            key, arr = next(iter(arrays.items()))
            names = canonical_leads(leads)
            transposed = arr.shape[0] != len(names) and arr.shape[1] == len(names)
            if (arr.shape[1] if transposed else arr.shape[0]) != len(names):
                raise RecordReadError(f"{path.name}: '{key}' has shape {arr.shape}; no axis of {len(names)} channels")
            return ArrayReader(arr, fs=_check_fs_arg(fs, path.name), leads=names, name=path.stem, transposed=transposed)
        hint = (f"; it holds one array '{next(iter(arrays))}' {next(iter(arrays.values())).shape}: pass --fs and "
                f"--leads to read it" if len(arrays) == 1 else "")
        raise RecordReadError(
            f"{path}: no 'val' or 'ECG' variable and no WFDB header, so nothing states the rate or leads{hint}"
        )
    try:
        data = np.asarray(m["ECG"][0, 0]["data"], dtype=np.float64)
    except Exception as exc:
        raise RecordReadError(f"{path.name}: 'ECG' is not a CPSC-2018 struct with a 'data' field") from exc
    if data.ndim != 2 or data.shape[0] != 12:
        raise RecordReadError(f"{path}: ECG.data has shape {data.shape}, expected 12 rows")
    rate = 500.0 if fs is None else _check_fs_arg(fs, path.name)
    rows = list(range(12))
    names = LEADS
    if leads is not None:
        names = canonical_leads(leads)
        rows = [LEADS.index(lead) for lead in names]
    return ArrayReader(data, fs=rate, leads=names, rows=rows, name=path.stem)


# ------------------------------------------------------------------------------------------ .npy / .csv
def _load_npy(p: Path) -> np.ndarray:
    import tokenize

    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "object" in str(exc).lower():
            raise RecordReadError(f"{p.name}: holds Python objects, not numbers; save a numeric array") from None
        raise RecordReadError(f"{p.name}: not a valid .npy file ({exc})") from None
    except (EOFError, OSError, SyntaxError) as exc:
        raise RecordReadError(f"{p.name}: not a valid (or a truncated) .npy file ({exc})") from None
    except tokenize.TokenError:  # numpy's header parser on a garbled header
        raise RecordReadError(f"{p.name}: not a valid .npy file (garbled header)") from None
    if not isinstance(arr, np.ndarray):
        raise RecordReadError(f"{p.name}: not a single array")
    if arr.dtype.kind == "c":
        raise RecordReadError(f"{p.name}: complex values; an ECG is real (save the part you mean, e.g. x.real)")
    if arr.dtype.kind not in "fiu":
        raise RecordReadError(f"{p.name}: dtype {arr.dtype} is not numeric")
    return arr


def _read_csv(p: Path) -> np.ndarray:
    raw = p.read_bytes()
    if b"\0" in raw:
        raise RecordReadError(f"{p.name}: a binary file, not a CSV text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # Latin-1 headers ("Ableitung I µV") from older devices
    lines = text.splitlines()
    if not any(ln.strip() for ln in lines):
        raise RecordReadError(f"{p.name}: empty CSV file")
    first = next(ln for ln in lines if ln.strip())
    delim = max((",", ";", "\t"), key=first.count) if any(d in first for d in ",;\t") else None

    def numeric(field_: str) -> bool:
        try:
            float(field_)
            return True
        except ValueError:
            return False

    cells = [c.strip() for c in (first.split(delim) if delim else first.split())]
    has_header = not all(numeric(c) for c in cells if c)
    try:
        arr = np.loadtxt(io.StringIO(text), delimiter=delim, skiprows=1 if has_header else 0, ndmin=2,
                         dtype=np.float64)
    except ValueError as exc:
        raise RecordReadError(f"{p.name}: not a numeric CSV: {exc}") from None
    if arr.size == 0:
        raise RecordReadError(f"{p.name}: the CSV holds no samples")
    if np.isinf(arr).any():
        raise RecordReadError(f"{p.name}: holds infinite values")
    return arr


def _open_array_file(
    p: Path,
    *,
    fs: float | None,
    leads: Sequence[str] | None,
    lead_map: LeadMap,
    units: str | None = None,
    gain: float | None = None,
) -> RecordReader:
    if fs is None or leads is None:
        raise SamplingRateError(f"{p.name}: .npy and .csv files need an explicit sampling rate (--fs) and leads (--leads)")
    rate = _check_fs_arg(fs, p.name)
    names = canonical_leads(leads)
    arr = _load_npy(p) if p.suffix.lower() == ".npy" else _read_csv(p)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise RecordReadError(f"{p.name}: expected a 2-D array (leads × samples), got shape {arr.shape}")
    if arr.size == 0:
        raise RecordReadError(f"{p.name}: the array holds no samples (shape {arr.shape})")
    # a CSV is one row per sample (samples × leads) whatever its size; a .npy may be stored either way
    transposed = p.suffix.lower() == ".csv" or (arr.shape[0] != len(names) and arr.shape[1] == len(names))
    if (arr.shape[1] if transposed else arr.shape[0]) != len(names):
        rows, cols = arr.shape
        held = f"{cols} column(s) of {rows} samples" if p.suffix.lower() == ".csv" else f"an array of shape {arr.shape} (no axis of {len(names)} channels)"
        raise RecordReadError(
            f"{p.name}: {len(names)} lead(s) named ({', '.join(names)}) but the file holds {held}; name one lead per "
            + ("column" if p.suffix.lower() == ".csv" else "row")
        )
    if arr.dtype.kind == "f":
        big = float(np.nanmax(np.abs(arr))) if not np.isnan(arr).all() else 0.0
        if not math.isfinite(big):
            raise RecordReadError(f"{p.name}: holds infinite values")
    from ._formats import unit_scale

    k = unit_scale(units, gain=gain, what=f"{p.name}: ")
    scale = None if k == 1.0 else [k] * len(names)
    return ArrayReader(arr, fs=rate, leads=names, name=p.stem, transposed=transposed, scale=scale)


def _formatted_reader(rec: Record, leads: Sequence[str] | None) -> RecordReader:
    """A wearable-format recording (:mod:`kmerl_edge._formats`) as a reader, ``leads`` selecting by name."""
    names = canonical_leads(leads) if leads is not None else rec.leads
    missing = [lead for lead in names if lead not in rec.leads]
    if missing:
        raise RecordReadError(f"{rec.name}: leads {', '.join(missing)} not in the record ({', '.join(rec.leads)})")
    rows = [rec.leads.index(lead) for lead in names]
    return ArrayReader(rec.signal, fs=rec.fs, leads=names, rows=rows, name=rec.name, comments=rec.comments)


# ---------------------------------------------------------------------------------------------- dispatch
def open_record(
    path: str | Path,
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    lead_map: LeadMap = None,
    units: str | None = None,
    gain: float | None = None,
) -> RecordReader:
    """Open a recording for reading in pieces (see the module docstring for what is refused).

    - EDF/EDF+, Apple Watch ECG CSV, Polar Sensor Logger ECG, CSV with named columns: recognised by
      content, rate and units from the file (:mod:`kmerl_edge._formats`; ``units``/``gain`` for CSVs and
      ``.npy`` whose content states no unit: ``"mV"``, ``"uV"`` or ``"adc"`` with ``gain`` in counts per mV).

    - WFDB (``.hea`` + ``.dat``, multi-segment, any storage format ``wfdb`` reads) and PhysioNet/CinC
      ``.mat`` + ``.hea``: rate and channels come from the header; ``leads`` selects standard leads by
      name; ``lead_map`` ({channel: lead} or ``"ECG 1=I,V=V5"``) names ECG channels of unknown position.
    - Original CPSC-2018 ``.mat`` (``ECG.data``, no header): 500 Hz by the dataset's definition.
    - ``.npy`` (n_leads, n_samples) and ``.csv`` (one row per sample, one column per lead, optional header
      row): ``fs`` and ``leads`` are required, because nothing in the file states them.
    """
    p = Path(path)
    if str(path).strip() == "":
        raise RecordReadError("empty record path")
    suffix = p.suffix.lower()
    if p.is_dir():
        raise RecordReadError(f"{p} is a directory; pass a record file (.hea, .mat, .npy, .csv) or a WFDB base name")
    if p.exists():
        _regular_file(p)
        from ._formats import read_formatted

        formatted = read_formatted(p, fs=fs, leads=leads, units=units, gain=gain)
        if isinstance(formatted, Record):
            return _formatted_reader(formatted, leads)
    elif suffix in {".edf", ".bdf", ".csv", ".txt", ".tsv", ".npy"}:
        raise RecordReadError(f"no such record: {p} (file not found)")
    if suffix in {".npy", ".csv"}:
        return _open_array_file(p, fs=fs, leads=leads, lead_map=lead_map, units=units, gain=gain)
    opener = _OPENERS.get(suffix)
    if opener is not None:
        return opener(p, fs=fs, leads=leads, lead_map=lead_map)
    if units is not None or gain is not None:
        raise RecordReadError(f"{p.name}: --units/--gain are for CSV and .npy files; this record states its units")
    base = _record_base(p)
    if _hea(base).exists():
        return _WfdbReader(base, fs=fs, leads=leads, lead_map=lead_map)
    if suffix == ".mat" and p.exists():
        _regular_file(p)
        return _open_mat(p, fs=fs, leads=leads)
    if p.is_file():
        raise RecordReadError(
            f"{p.name}: not a format kmerl-edge reads (WFDB .hea/.dat, PhysioNet .mat+.hea, EDF/EDF+, "
            "Apple Watch ECG CSV, Polar Sensor Logger ECG, CSV with named lead columns, .npy)"
        )
    raise RecordReadError(f"no such record: {p} (neither the file nor a WFDB header {_hea(base).name} exists)")


register_format([".npy", ".csv"], _open_array_file)


def read_record(
    path: str | Path,
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    lead_map: LeadMap = None,
    units: str | None = None,
    gain: float | None = None,
) -> Record:
    """Read a whole recording into a :class:`Record` (mV, canonical leads, NaN where samples are missing).

    See :func:`open_record` for the formats and what is refused. Long recordings are better scored with
    :meth:`kmerl_edge.Classifier.predict_record`, which reads them in pieces.
    """
    with open_record(path, fs=fs, leads=leads, lead_map=lead_map, units=units, gain=gain) as r:
        signal = r.read(0, r.n_samples)
        r.verify()
        big = float(np.nanmax(np.abs(signal))) if signal.size and not np.isnan(signal).all() else 0.0
        if signal.dtype != np.float32 and big < float(np.finfo(np.float32).max):  # else keep float64: the range
            signal = signal.astype(np.float32)  # check must see 1e308, not an Inf made by the cast
        return Record(signal, r.fs, r.leads, r.name, r.comments, r.notes)


def _fill_nan_along_time(signal: np.ndarray) -> np.ndarray:
    """Fill NaN/Inf samples of each lead by linear interpolation along time (all-NaN leads become 0).

    For training only (the trainer decides how it treats gaps); the runtime never fills gaps."""
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


