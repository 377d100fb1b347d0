"""A corpus of WFDB records in every storage format ``wfdb`` reads, scored as a user would score them.

Records are made from real recordings (``../shared/data`` by default, the test fixtures with ``--small``)
with ``wfdb.wrsamp`` where ``wfdb`` writes the format, and by packing the digital samples ourselves where
it only reads it (formats 8, 61, 160, 310, 311), checked by reading them back. Beside the formats: multi-
segment (fixed and variable layout with a null segment), skewed signals, no signal length, monitor and
patch channel names (``II, V, PLETH``; ``ECG 1``; ``MCL1``; EEG and markers beside ECG; PTB with Frank
leads), gaps, and records that must be refused (too short, no ECG, no rate, negative rate, negative gain,
bad checksum). Real records found under the data root are added as they are.

Each record is scored with :meth:`kmerl_edge.Classifier.predict_record` (with the lead map a user would
pass where the channels are ECG of unknown position, and the first ``max_leads`` standard leads where a
record has more than the bundle serves). Counts: **scored**, **refused** with a named error (by reason),
and **failed** (a traceback, or a record holding ≥ 5 s of ECG that was not scored). Goal: failed = 0.

    python -m benchmarks.records_corpus [--small] [--out DIR] [--bundle PATH] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = next((p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()),
            REPO.parent / "shared" / "data")
FIXTURES = REPO / "tests" / "fixtures" / "records"

WFDB_WRITES = ("16", "24", "32", "80", "212", "508", "516", "524")
PACKED_HERE = ("8", "61", "160", "310", "311")
FORMATS = WFDB_WRITES + PACKED_HERE
_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12, "310": 10, "311": 10,
         "508": 8, "516": 16, "524": 24}


@dataclass
class Item:
    name: str
    path: str
    kind: str
    expect: str  # "scored" or "refused"
    lead_map: str | None = None
    fs: float | None = None
    leads: tuple[str, ...] | None = None


# ------------------------------------------------------------------------------------------- writing
def _digital(x: np.ndarray, fmt: str) -> tuple[np.ndarray, list[float]]:
    """(n, ch) int digital samples and per-channel gains that fit ``fmt`` (format 8: first differences)."""
    top = 0.45 * 2 ** (_BITS[fmt] - 1)
    gains = []
    for ch in range(x.shape[1]):
        amp = float(np.nanmax(np.abs(x[:, ch]))) or 1.0
        g = top / amp
        if fmt == "8":
            step = float(np.nanmax(np.abs(np.diff(x[:, ch])))) or 1.0
            g = min(g * 100, 100.0 / step)
        gains.append(g)
    d = np.round(x * np.asarray(gains)).astype(np.int64)
    return d, gains


def _pack(d: np.ndarray, fmt: str) -> bytes:
    flat = d.reshape(-1)  # frames, channels interleaved
    if fmt == "61":
        return flat.astype(">i2").tobytes()
    if fmt == "160":
        return (flat + 32768).astype("<u2").tobytes()
    if fmt == "8":
        diffs = np.diff(d, axis=0, prepend=d[:1])
        return diffs.reshape(-1).astype(np.int8).tobytes()
    u = (flat & 0x3FF).astype(np.int64)
    u = np.concatenate([u, np.zeros((-len(u)) % 3, dtype=np.int64)])
    a, b, c = u[0::3], u[1::3], u[2::3]
    out = np.zeros((len(a), 4), dtype=np.uint8)
    if fmt == "310":
        out[:, 0] = (a & 0x7F) << 1
        out[:, 1] = ((a >> 7) & 0x07) | ((c & 0x1F) << 3)
        out[:, 2] = (b & 0x7F) << 1
        out[:, 3] = ((b >> 7) & 0x07) | (((c >> 5) & 0x1F) << 3)
    else:  # 311
        out[:, 0] = a & 0xFF
        out[:, 1] = ((a >> 8) & 0x03) | ((b & 0x3F) << 2)
        out[:, 2] = ((b >> 6) & 0x0F) | ((c & 0x0F) << 4)
        out[:, 3] = (c >> 4) & 0x3F
    return out.tobytes()


def write_record(out: Path, name: str, x: np.ndarray, fs: float, names: list[str], units: list[str] | None = None,
                 fmt: str = "16") -> Path:
    """Write (n, ch) mV ``x`` as WFDB record ``out/name`` in storage format ``fmt``."""
    import wfdb

    units = units or ["mV"] * len(names)
    if fmt in WFDB_WRITES:
        wfdb.wrsamp(name, fs=fs, units=units, sig_name=names, p_signal=x, fmt=[fmt] * len(names),
                    write_dir=str(out))
        return out / name
    d, gains = _digital(x, fmt)
    wfdb.wrsamp(name, fs=fs, units=units, sig_name=names, d_signal=d, fmt=["16"] * len(names),
                adc_gain=gains, baseline=[0] * len(names), write_dir=str(out))
    (out / f"{name}.dat").write_bytes(_pack(d, fmt))
    hea = out / f"{name}.hea"
    lines = hea.read_text().splitlines()
    for i in range(1, 1 + len(names)):
        parts = lines[i].split()
        parts[1] = fmt
        if fmt == "8":
            parts[5] = str(int(d[0, i - 1]))  # initial value: the first difference is from here
        lines[i] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")
    back = wfdb.rdrecord(str(out / name), physical=False).d_signal
    if back.shape != d.shape or not np.array_equal(back, d):
        raise RuntimeError(f"format {fmt}: packed samples do not read back")
    return out / name


def _edit(base: Path, fn: Any) -> None:
    hea = base.parent / (base.name + ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(fn(lines)) + "\n")


def _sources(small: bool) -> list[tuple[str, np.ndarray, float, list[str]]]:
    """(name, (n, ch) mV, fs, lead names) of the real recordings the corpus is made from."""
    import kmerl_edge as ke

    if small:
        paths = [FIXTURES / "data_101_6"]
    else:
        paths = [DATA / "cpsc2021" / "data_8_4", DATA / "wfdb_samples" / "100", FIXTURES / "00001_hr"]
    out = []
    for p in paths:
        r = ke.read_record(p)
        n = min(r.signal.shape[1], int((20 if small else 60) * r.fs))
        out.append((p.name, r.signal[:2, :n].T.astype(np.float64), r.fs, list(r.leads[:2])))
    return out


def make_corpus(out: Path, *, small: bool = False) -> list[Item]:
    """Write the synthetic part of the corpus under ``out`` and list it with what each should give."""

    items: list[Item] = []
    formats = ("16", "212", "311", "8", "524") if small else FORMATS
    for src, x, fs, leads in _sources(small):
        for fmt in formats:
            name = f"{src}_fmt{fmt}"
            items.append(Item(name, str(write_record(out, name, x, fs, leads, fmt=fmt)), f"format {fmt}", "scored"))
    src, x, fs, leads = _sources(small)[0]
    n = x.shape[0]
    # multi-segment, fixed layout
    half = n // 2
    write_record(out, "ms_0", x[:half], fs, leads)
    write_record(out, "ms_1", x[half:], fs, leads)
    (out / "multiseg.hea").write_text(f"multiseg/2 2 {fs:g} {n}\nms_0 {half}\nms_1 {n - half}\n")
    items.append(Item("multiseg", str(out / "multiseg"), "multi-segment", "scored"))
    # multi-segment, variable layout with a null (missing) segment in the middle
    third = n // 3
    write_record(out, "vl_1", x[:third], fs, leads)
    write_record(out, "vl_2", x[2 * third :], fs, leads)
    layout = "\n".join(f"vl_0.dat 16 200/mV 16 0 0 0 0 {lead}" for lead in leads)
    (out / "vl_0.hea").write_text(f"vl_0 {len(leads)} {fs:g} 0\n" + layout.replace("vl_0.dat", "~") + "\n")
    (out / "varlayout.hea").write_text(
        f"varlayout/4 {len(leads)} {fs:g} {n}\nvl_0 0\nvl_1 {third}\n~ {2 * third - third}\nvl_2 {n - 2 * third}\n"
    )
    items.append(Item("varlayout", str(out / "varlayout"), "multi-segment, variable layout, null segment", "scored"))
    # skewed signals
    b = write_record(out, "skewed", x, fs, leads)
    _edit(b, lambda ls: [ls[0]] + [s.replace(" 16 ", " 16:3 ", 1) if i == len(ls) - 2 else s
                                   for i, s in enumerate(ls[1:])])
    items.append(Item("skewed", str(out / "skewed"), "skewed", "scored"))
    # no signal length in the header
    b = write_record(out, "nosiglen", x, fs, leads)
    _edit(b, lambda ls: [" ".join(ls[0].split()[:3])] + [" ".join(s.split()[:5]) + " 0 0 0 " + s.split()[-1] for s in ls[1:]])
    items.append(Item("nosiglen", str(b), "no signal length", "scored"))
    # channel names from monitors and patches
    ecg1, ecg2 = x[:, 0], x[:, 1] if x.shape[1] > 1 else x[:, 0]
    pleth = 50 + 10 * np.sin(np.arange(n) / fs * 7)
    resp = np.sin(np.arange(n) / fs * 1.5)
    named: list[tuple[str, list[np.ndarray], list[str], list[str], str, str | None]] = [
        ("monitor_II_V_PLETH", [ecg2, ecg1, pleth], ["II", "V", "PLETH"], ["mV", "mV", "NU"], "scored", None),
        ("monitor_ABP_II", [80 + 20 * resp, ecg2], ["ABP", "II"], ["mmHg", "mV"], "scored", None),
        ("monitor_RESP_MLII", [resp, ecg2], ["RESP", "MLII"], ["Ohm", "mV"], "scored", None),
        ("eeg_and_ecg", [resp, resp, ecg1], ["EEG Fpz-Cz", "EOG horizontal", "ECG"], ["uV", "uV", "mV"], "scored",
         "ECG=II"),
        ("markers_and_ecg", [np.zeros(n), ecg1], ["Marker", "ECG 1"], ["", "mV"], "scored", "ECG 1=I"),
        ("patch_ECG_1", [ecg1], ["ECG 1"], ["mV"], "scored", "ECG 1=I"),
        ("patch_ECG_underscore", [ecg1], ["ECG_1"], ["mV"], "scored", "ECG_1=I"),
        ("patch_col0", [ecg1, ecg2], ["col 0", "col 1"], ["mV", "mV"], "scored", "col 0=I,col 1=II"),
        ("patch_ch1", [ecg1], ["ch1"], ["mV"], "scored", "ch1=I"),
        ("holter_MCL1_V5", [ecg1, ecg2], ["MCL1", "V5"], ["mV", "mV"], "scored", None),
        ("holter_MCL1_only", [ecg1], ["MCL1"], ["mV"], "scored", "MCL1=V1"),
        ("only_pleth_resp", [pleth, resp], ["PLETH", "RESP"], ["NU", "Ohm"], "refused", None),
        ("too_short", [ecg1[: int(3 * fs)]], ["II"], ["mV"], "refused", None),
    ]
    for name, chans, names, units, expect, lmap in named:
        b = write_record(out, name, np.stack(chans, axis=1), fs, names, units)
        items.append(Item(name, str(b), "channel names", expect, lmap))
    # gaps: 30 % missing
    g = x.copy()
    g[int(0.2 * n) : int(0.5 * n)] = np.nan
    items.append(Item("gaps_30pct", str(write_record(out, "gaps_30pct", g, fs, leads, fmt="212")), "gaps", "scored"))
    # headers that make no sense, a corrupted file
    for name, fn in [
        ("no_fs", lambda ls: [" ".join(ls[0].split()[:2])] + ls[1:]),
        ("fs_negative", lambda ls: [ls[0].replace(f" {fs:g} ", f" -{fs:g} ", 1)] + ls[1:]),
        ("fs_nan", lambda ls: [ls[0].replace(f" {fs:g} ", " nan ", 1)] + ls[1:]),
        ("gain_negative", lambda ls: [ls[0]] + [s.replace(s.split()[2], "-" + s.split()[2], 1) for s in ls[1:]]),
    ]:
        b = write_record(out, name, x, fs, leads)
        _edit(b, fn)
        items.append(Item(name, str(b), "bad header", "refused"))
    b = write_record(out, "bad_checksum", x, fs, leads)
    raw = bytearray((out / "bad_checksum.dat").read_bytes())
    raw[len(raw) // 2] ^= 0x04
    (out / "bad_checksum.dat").write_bytes(bytes(raw))
    items.append(Item("bad_checksum", str(b), "corrupt file", "refused"))
    # a real 12-lead PTB record with Frank leads beside the standard leads
    ptb = FIXTURES / "s0010_re_10s"
    items.append(Item("ptb_s0010_re_frank_leads", str(ptb), "real record, extra channels", "scored"))
    return items


def real_records(limit_per_dir: int = 200) -> list[Item]:
    """Every real WFDB/.mat record under ``../shared/data`` (at most ``limit_per_dir`` per folder)."""
    items: list[Item] = []
    if not DATA.is_dir():
        return items
    for d in sorted(p for p in DATA.iterdir() if p.is_dir()):
        heas = sorted(d.rglob("*.hea"))[:limit_per_dir]
        for h in heas:
            items.append(Item(f"{d.name}/{h.stem}", str(h.with_suffix("")), f"real ({d.name})", "scored"))
        if not heas:
            for m in sorted(d.rglob("*.mat"))[:limit_per_dir]:
                if m.parent.name == "ref":  # CPSC 2019 R-peak positions, not an ECG
                    items.append(Item(f"{d.name}/{m.stem}", str(m), f"not an ECG ({d.name})", "refused"))
                elif d.name == "cpsc2019":  # 10-s single-lead 500-Hz arrays: the user states rate and lead
                    items.append(Item(f"{d.name}/{m.stem}", str(m), "real .mat array (--fs 500 --leads II)",
                                      "scored", fs=500.0, leads=("II",)))
                else:
                    items.append(Item(f"{d.name}/{m.stem}", str(m), f"real .mat without header ({d.name})", "scored"))
    return items


# ------------------------------------------------------------------------------------------- scoring
def score_corpus(items: list[Item], clf: Any) -> dict[str, Any]:
    """Score every item; count scored / refused (by error name) / failed."""
    from kmerl_edge import KmerlError, LeadError, open_record

    rows = []
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for it in items:
        outcome, detail = "", ""
        try:
            leads = list(it.leads) if it.leads else None
            with open_record(it.path, fs=it.fs, leads=leads, lead_map=it.lead_map) as r:
                if len(r.leads) > clf.max_leads:
                    leads = list(r.leads[: clf.max_leads])
            p = clf.predict_record(it.path, fs=it.fs, leads=leads, lead_map=it.lead_map)
            outcome, detail = "scored", f"{','.join(p.leads)}; {len(p.window_starts_s)} windows"
        except (KmerlError, LeadError) as exc:
            outcome, detail = "refused", f"{type(exc).__name__}: {exc}"
            reasons[type(exc).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - a traceback is exactly what this benchmark counts
            outcome, detail = "failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if it.expect != "any" and outcome != it.expect and outcome != "failed":
            detail = f"expected {it.expect}: {detail}"
            outcome = "failed"
        counts[outcome] += 1
        rows.append({"name": it.name, "kind": it.kind, "expect": it.expect, "lead_map": it.lead_map,
                     "outcome": outcome, "detail": detail[:300]})
    return {"n": len(items), "scored": counts["scored"], "refused": counts["refused"], "failed": counts["failed"],
            "refused_by_reason": dict(reasons), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a few formats from the test fixtures only")
    ap.add_argument("--out", default=None, help="where to write the corpus (default: a temporary folder)")
    ap.add_argument("--bundle", default=None, help="bundle (default: the one shipped in the package)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--no-real", action="store_true", help="leave out the real records under ../shared/data")
    ap.add_argument("--json", default=None, help="write the full result here")
    a = ap.parse_args(argv)
    import kmerl_edge as ke

    clf = ke.load(a.bundle, backend=a.backend)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        items = make_corpus(out, small=a.small)
        if not (a.small or a.no_real):
            items += real_records()
        res = score_corpus(items, clf)
    for r in res["rows"]:
        if r["outcome"] != "scored":
            print(f"{r['outcome']:8s} {r['name']:40s} {r['detail'][:150]}")
    print(f"records {res['n']}: scored {res['scored']}, refused {res['refused']} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(res['refused_by_reason'].items()))}), failed {res['failed']}")
    if a.json:
        by_kind: dict[str, Counter[str]] = {}
        for r in res["rows"]:
            by_kind.setdefault(r["kind"], Counter())[r["outcome"]] += 1
        res["by_kind"] = {k: dict(v) for k, v in sorted(by_kind.items())}
        Path(a.json).write_text(json.dumps(res, indent=None, separators=(",", ":")) + "\n")
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
