"""Dataset readers. Each returns a :class:`Dataset` of :class:`EcgItem` (a reference to one record or
window, its English report and labels) and maps leads by name into :data:`kmerl_edge.LEADS`.

Readers: :func:`read_mimic_iv_ecg`, :func:`read_ptbxl`, :func:`read_cinc` (PhysioNet/CinC 2020-2021
WFDB/.mat with SNOMED ``# Dx:``), :func:`read_cpsc2018` (original ``.mat`` + ``REFERENCE.csv``),
:func:`read_cpsc2021_af` (AF episodes → labelled 10-s windows) and :func:`read_merl_split` (the MERL
benchmark split CSVs). Nothing is dropped silently: :attr:`Dataset.skipped` counts every left-out row by
reason.
"""

from __future__ import annotations

import ast
import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kmerl_edge._io import Record, read_record
from kmerl_edge._io import _fill_nan_along_time as fill_nan_along_time
from kmerl_edge._leads import LEADS

from ._errors import DatasetFormatError

__all__ = [
    "EcgItem",
    "Dataset",
    "load_item",
    "clean_mimic_report",
    "read_mimic_iv_ecg",
    "read_ptbxl",
    "read_cinc",
    "read_cpsc2018",
    "read_cpsc2021_af",
    "read_merl_split",
    "MERL_TASKS",
    "CPSC2018_CLASSES",
    "MIMIC_RECORD_LIST_COLUMNS",
    "MIMIC_MEASUREMENT_COLUMNS",
]

MIMIC_RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
MIMIC_MEASUREMENT_COLUMNS = (
    ("subject_id", "study_id", "cart_id", "ecg_time")
    + tuple(f"report_{i}" for i in range(18))
    + (
        "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
        "p_axis", "qrs_axis", "t_axis",
    )
)
#: CPSC-2018 REFERENCE.csv label numbers → MERL's icbeb class codes.
CPSC2018_CLASSES: dict[int, str] = {
    1: "NORM", 2: "AFIB", 3: "1AVB", 4: "CLBBB", 5: "CRBBB", 6: "PAC", 7: "VPC", 8: "STD", 9: "STE",
}
#: MERL benchmark task → split CSV path pattern (relative to the merl_splits root).
MERL_TASKS: dict[str, str] = {
    "ptbxl_super": "ptbxl/super_class/ptbxl_super_class_{split}.csv",
    "ptbxl_sub": "ptbxl/sub_class/ptbxl_sub_class_{split}.csv",
    "ptbxl_form": "ptbxl/form/ptbxl_form_{split}.csv",
    "ptbxl_rhythm": "ptbxl/rhythm/ptbxl_rhythm_{split}.csv",
    "icbeb": "icbeb/icbeb_{split}.csv",
    "chapman": "chapman/chapman_{split}.csv",
}


@dataclass(frozen=True)
class EcgItem:
    """One training / evaluation example: a record (or a window of one) and its text and labels.

    ``path`` is the WFDB record base (or ``.mat``) read by :func:`kmerl_edge.read_record`;
    ``start_s``/``stop_s`` cut a window out of a long record (CPSC2021).
    """

    record_id: str
    path: str
    report: str = ""
    labels: tuple[str, ...] = ()
    start_s: float | None = None
    stop_s: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Dataset:
    """Items plus the class vocabulary of their labels and the count of rows left out, by reason."""

    name: str
    items: list[EcgItem]
    classes: tuple[str, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def record_ids(self) -> list[str]:
        return [it.record_id for it in self.items]

    def label_matrix(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """(n_items, n_classes) float32 multi-hot of ``classes`` (default: :attr:`classes`)."""
        cls = tuple(self.classes if classes is None else classes)
        pos = {c: i for i, c in enumerate(cls)}
        y = np.zeros((len(self.items), len(cls)), dtype=np.float32)
        for r, it in enumerate(self.items):
            for lab in it.labels:
                if lab in pos:
                    y[r, pos[lab]] = 1.0
        return y


def load_item(item: EcgItem) -> Record:
    """Read an item's signal (mV, canonical lead names), cut its window and fill NaN samples along time."""
    rec = read_record(item.path)
    sig = rec.signal
    if item.start_s is not None or item.stop_s is not None:
        a = int(round((item.start_s or 0.0) * rec.fs))
        b = sig.shape[1] if item.stop_s is None else int(round(item.stop_s * rec.fs))
        if not 0 <= a < b <= sig.shape[1]:
            raise DatasetFormatError(f"{item.record_id}: window {item.start_s}-{item.stop_s} s outside the record")
        sig = sig[:, a:b]
    sig = fill_nan_along_time(sig)
    return Record(np.ascontiguousarray(sig, dtype=np.float32), rec.fs, rec.leads, item.record_id, rec.comments)


def _read_csv(path: Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetFormatError(f"missing {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise DatasetFormatError(f"{path}: missing columns {missing}")
        return list(reader)


# ------------------------------------------------------------------------------------------ MIMIC-IV-ECG
_STARS = re.compile(r"\*+")
_SPACES = re.compile(r"\s+")
_DOTS = re.compile(r"(\s*\.\s*)+")


def clean_mimic_report(parts: Sequence[str]) -> str:
    """MERL's report cleaning: join the non-empty ``report_i`` fields, clean, lower-case.

    Fields are joined with ". " (each machine statement is one sentence), asterisks dropped, ``EKG`` →
    ``ECG``, repeated dots and whitespace collapsed, then lower-cased and stripped.
    """
    texts = [p.strip() for p in parts if p is not None and p.strip() and p.strip().lower() != "nan"]
    text = ". ".join(t.rstrip(".") for t in texts)
    text = _STARS.sub(" ", text)
    text = re.sub(r"\bekg\b", "ecg", text, flags=re.IGNORECASE)
    text = _DOTS.sub(". ", text)
    text = _SPACES.sub(" ", text).strip().lower()
    return text.strip(" .")


def read_mimic_iv_ecg(root: str | Path, *, min_words: int = 4, check_files: bool = True) -> Dataset:
    """MIMIC-IV-ECG: ``record_list.csv`` joined with ``machine_measurements.csv`` **by study_id**.

    The report is built as MERL did (:func:`clean_mimic_report`); reports under ``min_words`` words are
    dropped. Records are the WFDB files under ``files/pXXXX/pXXXXXXXX/sXXXXXXXX/`` (path column of
    ``record_list.csv``), lead order I, II, III, aVR, aVF, aVL, V1–V6 mapped by name. ``skipped``
    counts rows without measurements, with short reports and with missing files.
    """
    root = Path(root)
    records = _read_csv(root / "record_list.csv", MIMIC_RECORD_LIST_COLUMNS)
    meas = _read_csv(root / "machine_measurements.csv", MIMIC_MEASUREMENT_COLUMNS)
    by_study: dict[str, dict[str, str]] = {}
    for row in meas:
        sid = row["study_id"].strip()
        if sid in by_study:
            raise DatasetFormatError(f"machine_measurements.csv: study_id {sid} appears twice")
        by_study[sid] = row
    skipped: Counter[str] = Counter()
    items: list[EcgItem] = []
    seen: set[str] = set()
    for row in records:
        sid = row["study_id"].strip()
        if sid in seen:
            raise DatasetFormatError(f"record_list.csv: study_id {sid} appears twice")
        seen.add(sid)
        m = by_study.get(sid)
        if m is None:
            skipped["no_measurements"] += 1
            continue
        if m["subject_id"].strip() != row["subject_id"].strip():
            raise DatasetFormatError(f"study {sid}: subject_id differs between record_list and measurements")
        report = clean_mimic_report([m[f"report_{i}"] for i in range(18)])
        if len(report.split()) < min_words:
            skipped["short_report"] += 1
            continue
        path = root / row["path"].strip()
        if check_files and not path.with_suffix(".hea").is_file():
            skipped["missing_file"] += 1
            continue
        items.append(
            EcgItem(
                record_id=sid,
                path=str(path),
                report=report,
                meta={"subject_id": row["subject_id"].strip(), "ecg_time": row["ecg_time"]},
            )
        )
    return Dataset("mimic_iv_ecg", items, (), dict(skipped))


# ------------------------------------------------------------------------------------------------ PTB-XL
def _scp_statements(root: Path) -> Any:
    try:
        from trainer.knowledge._scp import load_scp_statements

        return load_scp_statements(root / "scp_statements.csv")
    except ImportError:  # pragma: no cover - knowledge package absent
        rows = _read_csv(root / "scp_statements.csv", ("description",))
        return {(r.get("") or "").strip(): r for r in rows}


def compose_ptbxl_report(scp_codes: Mapping[str, float], statements: Any) -> str:
    """English report from SCP codes: ``trainer.knowledge.compose_english_report`` when available,
    else the statements' descriptions joined (rhythm first, then by likelihood)."""
    try:
        from trainer.knowledge._scp import compose_english_report
    except ImportError:  # pragma: no cover - knowledge package absent
        pass
    else:
        return str(compose_english_report(dict(scp_codes), statements))
    order = sorted(scp_codes, key=lambda c: (-scp_codes[c], c))  # pragma: no cover
    return " ".join(str(statements[c]["description"]).capitalize() + "." for c in order)  # pragma: no cover


def _parse_dict(text: str, where: str) -> dict[str, float]:
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise DatasetFormatError(f"{where}: scp_codes is not a dict literal: {text!r}") from exc
    if not isinstance(d, dict):
        raise DatasetFormatError(f"{where}: scp_codes is not a dict: {text!r}")
    return {str(k): float(v) for k, v in d.items()}


def read_ptbxl(root: str | Path, *, rate: int = 500, check_files: bool = True) -> Dataset:
    """PTB-XL: ``ptbxl_database.csv`` + ``scp_statements.csv``; English report composed from the SCP
    descriptions, the German free text kept in ``meta['report_de']``; records at 500 or 100 Hz.
    Labels are the record's SCP codes; ``meta`` holds ``strat_fold`` and the code likelihoods."""
    if rate not in (500, 100):
        raise DatasetFormatError(f"PTB-XL records exist at 500 or 100 Hz, not {rate}")
    root = Path(root)
    rows = _read_csv(root / "ptbxl_database.csv", ("ecg_id", "report", "scp_codes", "strat_fold",
                                                   "filename_lr", "filename_hr"))
    statements = _scp_statements(root)
    col = "filename_hr" if rate == 500 else "filename_lr"
    items: list[EcgItem] = []
    skipped: Counter[str] = Counter()
    classes: set[str] = set()
    for row in rows:
        eid = str(int(float(row["ecg_id"])))
        codes = _parse_dict(row["scp_codes"], f"ptbxl ecg_id {eid}")
        unknown = [c for c in codes if c not in statements]
        if unknown:
            raise DatasetFormatError(f"ptbxl ecg_id {eid}: SCP codes {unknown} not in scp_statements.csv")
        path = root / row[col]
        if check_files and not path.with_suffix(".hea").is_file():
            skipped["missing_file"] += 1
            continue
        classes.update(codes)
        items.append(
            EcgItem(
                record_id=eid,
                path=str(path),
                report=compose_ptbxl_report(codes, statements),
                labels=tuple(sorted(codes)),
                meta={"report_de": row["report"], "strat_fold": int(row["strat_fold"]), "scp_codes": codes},
            )
        )
    return Dataset(f"ptbxl_{rate}", items, tuple(sorted(classes)), dict(skipped))


# ---------------------------------------------------------------------------------------- CinC 2020-2021
def _snomed_names() -> dict[str, str]:
    p = Path(__file__).resolve().parent / "knowledge" / "data" / "snomed_ct.json"
    if not p.is_file():
        return {}
    import json

    d = json.loads(p.read_text())
    # ``text`` is the cleaned English form of the official (verbatim, sometimes misspelt) ``name``
    return {code: str(v.get("text") or v.get("name", "")) for code, v in d.get("codes", {}).items()}


def read_cinc(root: str | Path) -> Dataset:
    """PhysioNet/CinC 2020–2021 records (Georgia, Ningbo/Chapman, CPSC re-release, PTB-XL …): every
    ``.hea`` under ``root`` (recursively) with its data file; labels are the SNOMED-CT codes of the
    ``# Dx:`` line; the report is the codes' English names (the cleaned ``text`` of the knowledge package's
    SNOMED table, where known) joined as sentences."""
    root = Path(root)
    heads = sorted(root.rglob("*.hea"))
    if not heads:
        raise DatasetFormatError(f"no .hea files under {root}")
    names = _snomed_names()
    items: list[EcgItem] = []
    classes: set[str] = set()
    skipped: Counter[str] = Counter()
    for hea in heads:
        dx: list[str] | None = None
        for line in hea.read_text(errors="replace").splitlines():
            s = line.strip()
            if s.startswith("#") and s.lstrip("# ").lower().startswith("dx:"):
                dx = [c.strip() for c in s.split(":", 1)[1].split(",") if c.strip()]
        if dx is None:
            skipped["no_dx"] += 1
            continue
        words = [names[c] for c in dx if names.get(c)]
        report = ". ".join(words) + "." if words else ""
        classes.update(dx)
        items.append(EcgItem(hea.stem, str(hea.with_suffix("")), report, tuple(dx)))
    return Dataset(f"cinc:{root.name}", items, tuple(sorted(classes)), dict(skipped))


# ---------------------------------------------------------------------------------------------- CPSC2018
def read_cpsc2018(root: str | Path, *, reference: str | Path | None = None) -> Dataset:
    """Original CPSC-2018: ``A*.mat`` (``ECG.data``) + ``REFERENCE.csv`` (Recording, First_label,
    Second_label, Third_label with class numbers 1–9 → :data:`CPSC2018_CLASSES`)."""
    root = Path(root)
    ref = Path(reference) if reference is not None else root / "REFERENCE.csv"
    rows = _read_csv(ref, ("Recording", "First_label"))
    items: list[EcgItem] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        labels: list[str] = []
        for key in ("First_label", "Second_label", "Third_label"):
            v = (row.get(key) or "").strip()
            if not v:
                continue
            try:
                labels.append(CPSC2018_CLASSES[int(float(v))])
            except (KeyError, ValueError):
                raise DatasetFormatError(f"{ref}: {row['Recording']} has unknown label {v!r}") from None
        path = root / f"{row['Recording'].strip()}.mat"
        if not path.is_file():
            skipped["missing_file"] += 1
            continue
        items.append(EcgItem(row["Recording"].strip(), str(path), "", tuple(dict.fromkeys(labels))))
    return Dataset("cpsc2018", items, tuple(CPSC2018_CLASSES.values()), dict(skipped))


# ---------------------------------------------------------------------------------------------- CPSC2021
def _af_intervals(base: Path, n: int) -> list[tuple[int, int]]:
    import wfdb

    ann = wfdb.rdann(str(base), "atr")
    out: list[tuple[int, int]] = []
    start: int | None = None
    for s, sym, note in zip(ann.sample, ann.symbol, ann.aux_note):
        note = (note or "").strip().rstrip("\x00")
        if sym != "+" or not note.startswith("("):
            continue
        if note in ("(AFIB", "(AFL") and start is None:
            start = int(s)
        elif note not in ("(AFIB", "(AFL") and start is not None:
            out.append((start, int(s)))
            start = None
    if start is not None:
        out.append((start, n))
    return out


def read_cpsc2021_af(
    root: str | Path, *, window_s: float = 10.0, hop_s: float = 10.0, min_af_fraction: float = 0.5
) -> Dataset:
    """CPSC-2021: AF episodes from the ``.atr`` rhythm annotations (``(AFIB``/``(AFL`` … ``(N``) cut into
    labelled ``window_s`` windows every ``hop_s``: ``AF`` when at least ``min_af_fraction`` of the window
    lies inside an episode, else ``non-AF``. ``meta['af_fraction']`` keeps the exact fraction."""
    import wfdb

    root = Path(root)
    heads = sorted(root.glob("*.hea"))
    if not heads:
        raise DatasetFormatError(f"no .hea files under {root}")
    items: list[EcgItem] = []
    skipped: Counter[str] = Counter()
    for hea in heads:
        base = hea.with_suffix("")
        if not base.with_suffix(".atr").is_file():
            skipped["no_atr"] += 1
            continue
        h = wfdb.rdheader(str(base))
        fs, n = float(h.fs), int(h.sig_len)
        af = np.zeros(n, dtype=bool)
        for a, b in _af_intervals(base, n):
            af[a:b] = True
        win, hop = int(round(window_s * fs)), int(round(hop_s * fs))
        starts = range(0, n - win + 1, hop)
        if n < win:
            skipped["shorter_than_window"] += 1
        for s in starts:
            frac = float(af[s : s + win].mean())
            items.append(
                EcgItem(
                    f"{base.name}@{s / fs:g}",
                    str(base),
                    "",
                    ("AF",) if frac >= min_af_fraction else ("non-AF",),
                    start_s=s / fs,
                    stop_s=(s + win) / fs,
                    meta={"af_fraction": frac, "record": base.name},
                )
            )
    return Dataset("cpsc2021_af", items, ("AF", "non-AF"), dict(skipped))


# ------------------------------------------------------------------------------------------- MERL splits
_META_COLS = {
    "ecg_id", "patient_id", "strat_fold", "filename_lr", "filename_hr", "super_class", "sub_class",
    "form", "rhythm", "filename", "validation", "age", "sex", "scp_codes", "ecg_path", "diagnose",
}


def read_merl_split(
    splits_root: str | Path,
    task: str,
    split: str,
    *,
    data_root: str | Path,
    rate: int = 500,
    missing: str = "skip",
) -> Dataset:
    """A MERL benchmark split: ``task`` in :data:`MERL_TASKS`, ``split`` in train/val/test.

    Classes are the CSV's multi-hot columns, in file order. Records are looked up under ``data_root``:
    PTB-XL tasks in ``data_root`` (``filename_hr``/``filename_lr``), icbeb as ``{data_root}/{filename}.mat``
    (original CPSC-2018), chapman by the CSV's ``ecg_path`` relative to ``data_root`` (or ``{data_root}/{record}`` in a flat
    directory such as the CinC 2021 re-release). Rows whose record
    is not on disk are counted in ``skipped['missing_file']`` (``missing="error"`` raises instead).
    """
    if task not in MERL_TASKS:
        raise DatasetFormatError(f"unknown MERL task {task!r}; known: {', '.join(MERL_TASKS)}")
    if split not in ("train", "val", "test"):
        raise DatasetFormatError(f"split must be train, val or test, not {split!r}")
    if missing not in ("skip", "error"):
        raise DatasetFormatError("missing must be 'skip' or 'error'")
    path = Path(splits_root) / MERL_TASKS[task].format(split=split)
    rows = _read_csv(path)
    if not rows:
        raise DatasetFormatError(f"{path} is empty")
    classes = tuple(c for c in rows[0] if c not in _META_COLS)
    data_root = Path(data_root)
    items: list[EcgItem] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        if task.startswith("ptbxl"):
            rid = str(int(float(row["ecg_id"])))
            p = data_root / row["filename_hr" if rate == 500 else "filename_lr"]
            exists = p.with_suffix(".hea").is_file()
        elif task == "icbeb":
            rid = row["filename"].strip()
            p = data_root / f"{rid}.mat"
            exists = p.is_file()
        else:
            rel = row["ecg_path"].strip().lstrip("/")
            rid = Path(rel).stem
            p = (data_root / rel).with_suffix("")
            if not p.with_suffix(".hea").is_file():  # a flat directory of CinC-style records
                p = data_root / rid
            exists = p.with_suffix(".hea").is_file()
        if not exists:
            if missing == "error":
                raise DatasetFormatError(f"{task}/{split}: record {rid} not found at {p}")
            skipped["missing_file"] += 1
            continue
        try:
            labels = tuple(c for c in classes if float(row[c] or 0) > 0)
        except ValueError:
            raise DatasetFormatError(f"{path}: non-numeric label in row {rid}") from None
        items.append(EcgItem(rid, str(p), "", labels, meta={"split": split}))
    return Dataset(f"merl:{task}:{split}", items, classes, dict(skipped))


def lead_presence(leads: Sequence[str]) -> np.ndarray:
    """(12,) bool: which canonical leads a record has."""
    out = np.zeros(len(LEADS), dtype=bool)
    for lead in leads:
        out[LEADS.index(lead)] = True
    return out
