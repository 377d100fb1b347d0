"""Readers for the files wearables and consumer ECG apps write, recognised by content and extension.

- **EDF / EDF+** (``.edf``, ``.bdf`` or an EDF header): through ``pyedflib`` (pip extra ``io``); rate,
  units (``uV``, ``mV``, ``V``) and lead labels (``ECG I``, ``EKG II``, ``Lead V2``…) from the header.
  Non-ECG channels (respiration, SpO2, annotations) are skipped; an EDF+D file (discontinuous) is
  refused, because its gaps cannot be scored as a continuous signal.
- **Apple Watch ECG export** (Health app ``electrocardiograms/ecg_*.csv``): key/value header lines
  (``Sample Rate,512 hertz``, ``Lead,Lead I``, ``Unit,µV``) then one sample per line (decimal point or,
  in some locales, decimal comma).
- **Polar Sensor Logger** (``Polar_H10_..._ECG.txt``): ``Phone timestamp;sensor timestamp [ns];
  timestamp [ms];ecg [uV]``. The rate is measured from the sensor's own nanosecond clock; a hole in it
  (a lost Bluetooth packet) is reported as an error with its position and length, never filled. The file
  does not name its lead (a chest strap), so ``leads`` must name it.
- **CSV with named columns** (AliveCor/Kardia exports, spreadsheets, other apps): a header row with lead
  names (``I``, ``Lead II``, ``V2 [uV]``, ``ECG aVF (mV)``) and optionally a time column (``time``,
  ``time [s]``, ``time (ms)``, ``timestamp``) from which the rate is measured; ``units`` / ``gain``
  say what the numbers are when the header does not.

Each reader returns a :class:`kmerl_edge.Record` in mV, or raises :class:`RecordReadError` /
:class:`SamplingRateError` with the file name and what is wrong.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._errors import LeadError, RecordReadError, SamplingRateError, require
from ._leads import canonical_lead, canonical_leads

__all__ = ["UNITS", "read_formatted", "sniff_format", "unit_scale"]

#: Accepted ``units`` values (case-insensitive): what one number in the file means.
UNITS = ("mV", "uV", "adc")

_UNIT_TO_MV = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,
    "μv": 1e-3,
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
    "nv": 1e-6,
}

_TEXT_SUFFIXES = {".csv", ".txt", ".tsv"}
_EDF_SUFFIXES = {".edf", ".bdf", ".rec"}
_POLAR_HEADER = re.compile(r"^phone timestamp\s*;\s*sensor timestamp \[ns\]\s*;", re.IGNORECASE)
_TIME_COLUMN = re.compile(
    r"^(time|t|timestamp|elapsed( time)?|seconds|sec|ms|time_?(s|sec|ms))\s*(\[(s|ms|sec)\]|\((s|ms|sec)\))?$",
    re.IGNORECASE,
)
_UNIT_IN_NAME = re.compile(r"[\[(]\s*([µμu]?v|mv|millivolts?|microvolts?|adc|counts?)\s*[\])]", re.IGNORECASE)


def unit_scale(unit: str | None, *, gain: float | None = None, what: str = "") -> float:
    """Factor that turns numbers in ``unit`` into mV (``adc``: ``1 / gain``, gain in counts per mV)."""
    if unit is None:
        if gain is not None:
            raise SamplingRateError(f"{what}--gain is for ADC counts: give --units adc as well")
        return 1.0
    key = unit.strip().lower()
    if key in {"adc", "count", "counts"}:
        if gain is None or not np.isfinite(gain) or gain <= 0:
            raise SamplingRateError(f"{what}ADC counts need --gain (counts per mV, a positive number)")
        return 1.0 / float(gain)
    if gain is not None:
        raise SamplingRateError(f"{what}--gain applies only to --units adc (the file is in {unit})")
    try:
        return _UNIT_TO_MV[key]
    except KeyError:
        raise RecordReadError(f"{what}unknown unit {unit!r}; expected one of mV, uV, V or adc with --gain") from None


# ---------------------------------------------------------------------------------------------- sniffing
def _head_text(p: Path, n: int = 4096) -> str:
    with p.open("rb") as f:
        raw = f.read(n)
    if b"\x00" in raw:
        return ""
    return raw.decode("utf-8-sig", errors="replace")


def _is_edf(p: Path) -> bool:
    with p.open("rb") as f:
        head = f.read(8)
    # EDF: version "0" padded with spaces; BDF: 0xFF "BIOSEMI".
    return head == b"0       " or head == b"\xffBIOSEMI"


def sniff_format(path: str | Path) -> str | None:
    """``"edf"``, ``"apple_watch"``, ``"polar"``, ``"named_csv"`` or ``None`` (not one of these)."""
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix.lower() in _EDF_SUFFIXES or _is_edf(p):
        return "edf"
    text = _head_text(p)
    if not text:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    first = next((ln for ln in lines if ln), "")
    if _POLAR_HEADER.match(first):
        return "polar"
    keys = {ln.split(",", 1)[0].strip().lower() for ln in lines[:40] if "," in ln}
    if "sample rate" in keys and ("lead" in keys or "unit" in keys):
        return "apple_watch"
    if any(c.isalpha() for c in first) and _named_columns(first) is not None and _fully_named(first):
        return "named_csv"
    return None


# ---------------------------------------------------------------------------------------------- EDF
def _edf_lead(label: str) -> str | None:
    """Canonical lead of an EDF signal label, or None for a non-ECG channel."""
    s = re.sub(r"[\[(].*?[\])]", "", label).strip()
    s = re.sub(r"^(ecg|ekg)[\s_:-]*", "", s, flags=re.IGNORECASE)
    s = re.sub(r"^lead[\s_:-]*", "", s, flags=re.IGNORECASE)
    s = re.sub(r"[-_\s]*(ref|ecg|ekg)$", "", s, flags=re.IGNORECASE)
    if not s:
        return None
    try:
        return canonical_lead(s)
    except LeadError:
        return None


def _read_edf(p: Path, leads: Sequence[str] | None) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...]]:
    pyedflib = require("pyedflib", "io")
    try:
        f = pyedflib.EdfReader(str(p))  # type: ignore[attr-defined]
    except OSError as exc:
        raise RecordReadError(f"{p.name}: not a readable EDF/EDF+ file: {exc}") from exc
    try:
        header = f.getHeader()
        with p.open("rb") as raw:
            reserved = raw.read(236)[192:236].decode("ascii", errors="replace")  # EDF header field
        if reserved.startswith(("EDF+D", "BDF+D")):
            raise RecordReadError(f"{p.name}: EDF+D (discontinuous) recordings have gaps and are not read")
        labels = [str(x) for x in f.getSignalLabels()]
        n = len(labels)
        ecg: list[tuple[int, str]] = []
        for i, lab in enumerate(labels):
            lead = _edf_lead(lab)
            if lead is not None:
                ecg.append((i, lead))
        named_by_user = False
        if not ecg:
            generic = [i for i, lab in enumerate(labels) if re.match(r"^\s*(ecg|ekg)", lab, re.IGNORECASE)]
            if generic and leads is not None and len(canonical_leads(leads)) == len(generic):
                ecg = list(zip(generic, canonical_leads(leads)))
                named_by_user = True
            elif generic:
                raise RecordReadError(
                    f"{p.name}: ECG channel(s) {', '.join(labels[i] for i in generic)} do not name a lead; "
                    f"name them with --leads (as many as there are ECG channels: {len(generic)})"
                )
            else:
                raise RecordReadError(f"{p.name}: no ECG channel among its {n} signals ({', '.join(labels)})")
        seen: dict[str, int] = {}
        for i, lead in ecg:
            if lead in seen:
                raise RecordReadError(f"{p.name}: lead {lead} appears twice ({labels[seen[lead]]!r}, {labels[i]!r})")
            seen[lead] = i
        rates = {float(f.getSampleFrequency(i)) for i, _ in ecg}
        if len(rates) != 1:
            detail = ", ".join(f"{labels[i]} {f.getSampleFrequency(i):g} Hz" for i, _ in ecg)
            raise SamplingRateError(f"{p.name}: ECG channels have different rates ({detail})")
        fs = rates.pop()
        rows = []
        for i, _ in ecg:
            x = np.asarray(f.readSignal(i), dtype=np.float64)
            dim = str(f.getPhysicalDimension(i) or "").strip()
            if not dim:
                raise RecordReadError(f"{p.name}: signal {labels[i]!r} states no physical dimension (µV, mV)")
            rows.append(x * unit_scale(dim, what=f"{p.name}, {labels[i]}: "))
        length = min(len(r) for r in rows)
        signal = np.stack([r[:length] for r in rows]).astype(np.float32)
        comments = tuple(
            f"{k}: {v}" for k, v in header.items() if k in {"equipment", "recording_additional"} and v
        )
        if named_by_user:
            comments += ("leads named by the user",)
        return signal, fs, tuple(lead for _, lead in ecg), comments
    finally:
        f.close()


# ---------------------------------------------------------------------------------------------- Apple Watch
def _number(text: str) -> float:
    t = text.strip().strip('"')
    if "," in t and "." not in t:  # decimal comma (one value per line in these files)
        t = t.replace(",", ".")
    return float(t)


def _read_apple_watch(p: Path) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...], float]:
    meta: dict[str, str] = {}
    values: list[float] = []
    with p.open(encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.strip(",") == "":
                continue
            if values or _looks_numeric(s):
                try:
                    values.append(_number(s))
                except ValueError:
                    raise RecordReadError(f"{p.name}, line {lineno}: not a sample value: {s[:40]!r}") from None
                continue
            row = next(csv.reader([s]))
            if row:
                meta[row[0].strip().lower()] = ",".join(row[1:]).strip()
    rate_text = meta.get("sample rate", "")
    m = re.match(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*(hertz|hz)?\s*$", rate_text, re.IGNORECASE)
    if not m:
        raise SamplingRateError(f"{p.name}: 'Sample Rate' header is {rate_text!r}, not a rate in hertz")
    fs = _number(m.group(1))
    lead_text = meta.get("lead", "")
    if not lead_text:
        raise RecordReadError(f"{p.name}: no 'Lead' header line")
    try:
        lead = canonical_lead(lead_text)
    except LeadError as exc:
        raise RecordReadError(f"{p.name}: 'Lead' header {lead_text!r}: {exc}") from None
    unit = meta.get("unit")
    if not unit:
        raise RecordReadError(f"{p.name}: no 'Unit' header line (the file must say µV or mV)")
    scale = unit_scale(unit, what=f"{p.name}: ")
    if not values:
        raise RecordReadError(f"{p.name}: header only, no samples")
    comments = tuple(
        f"{k}: {meta[k]}" for k in ("recorded date", "classification", "device", "software version") if meta.get(k)
    )
    return np.asarray(values, dtype=np.float64)[None, :], fs, (lead,), comments, scale


def _looks_numeric(s: str) -> bool:
    return re.fullmatch(r'"?[-+]?[0-9]+(?:[.,][0-9]+)?(?:[eE][-+]?[0-9]+)?"?', s) is not None


# ---------------------------------------------------------------------------------------------- Polar
def _read_polar(p: Path, leads: Sequence[str] | None) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...]]:
    with p.open(encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline().strip()
        cols = [c.strip().lower() for c in header.split(";")]
        try:
            i_ns = cols.index("sensor timestamp [ns]")
        except ValueError:
            raise RecordReadError(f"{p.name}: Polar file without a 'sensor timestamp [ns]' column") from None
        ecg_cols = [i for i, c in enumerate(cols) if c.startswith("ecg")]
        if len(ecg_cols) != 1:
            raise RecordReadError(f"{p.name}: expected one 'ecg [uV]' column, found {len(ecg_cols)}")
        i_ecg = ecg_cols[0]
        unit_m = _UNIT_IN_NAME.search(cols[i_ecg])
        unit = unit_m.group(1) if unit_m else None
        if unit is None:
            raise RecordReadError(f"{p.name}: the ECG column {cols[i_ecg]!r} states no unit")
        ns: list[int] = []
        val: list[float] = []
        for lineno, line in enumerate(fh, 2):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split(";")
            try:
                ns.append(int(parts[i_ns]))
                val.append(float(parts[i_ecg]))
            except (ValueError, IndexError):
                raise RecordReadError(f"{p.name}, line {lineno}: malformed row {line.strip()[:60]!r}") from None
    if len(ns) < 3:
        raise RecordReadError(f"{p.name}: {len(ns)} samples; too few to measure a rate")
    t = np.asarray(ns, dtype=np.int64)
    d = np.diff(t)
    if (d <= 0).any():
        k = int(np.argmax(d <= 0))
        raise RecordReadError(f"{p.name}: sensor timestamps go backwards or repeat at row {k + 2}")
    step = float(np.median(d))
    gaps = np.flatnonzero(d > 1.5 * step)
    if gaps.size:
        k = int(gaps[0])
        lost = d[k] / step - 1
        raise RecordReadError(
            f"{p.name}: {gaps.size} gap(s) in the sensor clock; the first after "
            f"{(t[k] - t[0]) / 1e9:.3f} s: about {lost:.0f} samples ({d[k] / 1e9:.3f} s) missing. "
            "Gaps are not filled; cut the file at the gap to score each part"
        )
    fs = (len(t) - 1) / ((t[-1] - t[0]) / 1e9)
    if leads is None:
        raise RecordReadError(
            f"{p.name}: a Polar Sensor Logger file does not name its lead (a chest strap); "
            "name it with --leads (for example --leads I for a Polar H10 worn as usual)"
        )
    names = canonical_leads(leads)
    if len(names) != 1:
        raise RecordReadError(f"{p.name}: the file holds one ECG channel but {len(names)} leads were named")
    scale = unit_scale(unit, what=f"{p.name}: ")
    sig = (np.asarray(val, dtype=np.float64) * scale)[None, :]
    return sig, round(fs, 3), names, (f"rate measured from the sensor clock: {fs:.4f} Hz",)


# ---------------------------------------------------------------------------------------------- named CSV
def _split_row(line: str) -> tuple[list[str], str]:
    delim = ";" if line.count(";") > line.count(",") else ("\t" if "\t" in line else ",")
    return next(csv.reader([line], delimiter=delim)), delim


def _column_lead(name: str) -> str | None:
    s = _UNIT_IN_NAME.sub("", name).strip()
    return _edf_lead(s) if s else None


def _named_columns(header_line: str) -> tuple[int | None, list[tuple[int, str]]] | None:
    cols, _ = _split_row(header_line)
    time_col = None
    lead_cols: list[tuple[int, str]] = []
    for i, c in enumerate(cols):
        if time_col is None and _TIME_COLUMN.match(c.strip()):
            time_col = i
            continue
        lead = _column_lead(c)
        if lead is not None:
            lead_cols.append((i, lead))
    if not lead_cols:
        return None
    return time_col, lead_cols


def _fully_named(header_line: str) -> bool:
    """Every column of the header is a time column or names a lead (else the positional CSV reader,
    with ``--leads``, reads it: a header such as ``Ableitung I (µV),II`` is not a lead per column)."""
    cols, _ = _split_row(header_line)
    return all(
        not c.strip() or _TIME_COLUMN.match(c.strip()) or _column_lead(c) is not None for c in cols
    )


def _unit_key(unit: str) -> str:
    k = unit.strip().lower()
    if k in {"count", "counts", "adc"}:
        return "adc"
    return {"µv": "uv", "μv": "uv", "microvolt": "uv", "microvolts": "uv", "millivolt": "mv", "millivolts": "mv"}.get(k, k)


def _time_unit(name: str) -> float:
    n = name.lower()
    return 1e-3 if ("ms" in n or "milli" in n) else 1.0


def _read_named_csv(
    p: Path, fs: float | None, units: str | None, gain: float | None
) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...], float]:
    with p.open(encoding="utf-8-sig", errors="replace") as fh:
        header_line = fh.readline().strip()
        body = fh.read()
    parsed = _named_columns(header_line)
    if parsed is None:
        raise RecordReadError(f"{p.name}: no column of the header names a lead ({header_line[:80]!r})")
    time_col, lead_cols = parsed
    cols, delim = _split_row(header_line)
    leads = canonical_leads([lead for _, lead in lead_cols])
    if delim == ";" and "," in body and "." not in body:  # European export: "0,123;-0,045"
        body = body.replace(",", ".")
    try:
        data = np.loadtxt(io.StringIO(body), delimiter=delim, ndmin=2, usecols=[i for i, _ in lead_cols]
                          + ([time_col] if time_col is not None else []))
    except ValueError as exc:
        raise RecordReadError(f"{p.name}: not numeric below its header: {exc}") from exc
    if data.shape[0] < 2:
        raise RecordReadError(f"{p.name}: {data.shape[0]} sample row(s)")
    sig = data[:, : len(lead_cols)].T
    header_units = {m.group(1).lower() for _, c in ((i, cols[i]) for i, _ in lead_cols) if (m := _UNIT_IN_NAME.search(c))}
    if len(header_units) > 1:
        raise RecordReadError(f"{p.name}: lead columns in different units ({', '.join(sorted(header_units))})")
    header_unit = header_units.pop() if header_units else None
    if units is not None and header_unit is not None and _unit_key(units) != _unit_key(header_unit):
        raise RecordReadError(f"{p.name}: the header says {header_unit} but --units {units} was given")
    unit = units if units is not None else header_unit
    scale = unit_scale(unit, gain=gain, what=f"{p.name}: ")
    comments: tuple[str, ...] = () if unit is not None else ("units: mV assumed (neither the header nor --units says)",)
    if time_col is not None:
        t = data[:, -1] * _time_unit(cols[time_col])
        d = np.diff(t)
        if (d <= 0).any():
            raise RecordReadError(f"{p.name}: time column '{cols[time_col]}' is not increasing")
        step = float(np.median(d))
        gaps = np.flatnonzero(d > 1.5 * step)
        if gaps.size:
            k = int(gaps[0])
            raise RecordReadError(
                f"{p.name}: {gaps.size} gap(s) in the time column; the first at {t[k] - t[0]:.3f} s "
                f"({d[k]:.3f} s without samples). Gaps are not filled"
            )
        measured = (len(t) - 1) / (t[-1] - t[0])
        if fs is not None and abs(fs - measured) > 0.01 * fs:
            raise SamplingRateError(f"{p.name}: the time column says {measured:.3f} Hz but --fs {fs:g} was given")
        rate = float(fs) if fs is not None else round(measured, 3)
        comments += (f"rate measured from the time column: {measured:.4f} Hz",)
    else:
        if fs is None:
            raise SamplingRateError(
                f"{p.name}: no time column ({', '.join(cols)}); give the sampling rate with --fs"
            )
        rate = float(fs)
    return sig, rate, leads, comments, scale


# ---------------------------------------------------------------------------------------------- dispatch
def read_formatted(
    path: str | Path,
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str | None = None,
    gain: float | None = None,
) -> object | None:
    """Read ``path`` if it is one of this module's formats (a :class:`kmerl_edge.Record`), else ``None``.

    ``leads`` names the channel of a file that does not (Polar); elsewhere the caller selects with it.
    ``units``/``gain`` apply to named-column CSVs whose header states no unit (``adc`` needs ``gain``,
    counts per mV); files that state their unit (EDF, Apple Watch, Polar) refuse a contradicting one.
    """
    from ._io import Record

    p = Path(path)
    kind = sniff_format(p)
    if kind is None:
        return None
    if fs is not None:
        from ._io import _check_fs_arg

        fs = _check_fs_arg(fs, p.name)  # a positive finite number, or SamplingRateError
    if kind != "named_csv" and (units is not None or gain is not None):
        raise RecordReadError(f"{p.name}: a {kind} file states its own units; --units/--gain are for CSVs")
    scale = 1.0
    if kind == "edf":
        sig, rate, names, comments = _read_edf(p, leads)
    elif kind == "apple_watch":
        sig, rate, names, comments, scale = _read_apple_watch(p)
    elif kind == "polar":
        sig, rate, names, comments = _read_polar(p, leads)
    else:
        sig, rate, names, comments, scale = _read_named_csv(p, fs, units, gain)
    if kind in {"edf", "apple_watch", "polar"} and fs is not None and abs(fs - rate) > 0.01 * rate:
        raise SamplingRateError(f"{p.name}: the file says {rate:g} Hz but --fs {fs:g} was given")
    signal = np.ascontiguousarray((sig * scale).astype(np.float32))
    if not np.isfinite(signal).all():
        raise RecordReadError(f"{p.name}: non-finite samples (gaps are reported, not filled)")
    return Record(signal, float(rate), tuple(names), p.stem, (f"format: {kind}",) + tuple(comments))

