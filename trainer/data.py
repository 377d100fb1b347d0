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

from ._errors import DatasetFormatError, SplitError

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
    "ptbxl_folds",
    "patient_split",
    "select_split",
    "select_benchmark_split",
    "merl_split_ids",
    "MERL_SOURCE_TASKS",
    "PTBXL_SPLIT_FOLDS",
    "PTBXL_SUBCLASS_TEXT",
    "PTBXL_SUPERCLASS_TEXT",
    "SPLITS",
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


#: PTB-XL's recommended split by ``strat_fold`` (patients never cross folds): 1–8 train, 9 val, 10 test.
PTBXL_SPLIT_FOLDS: dict[str, tuple[int, ...]] = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9,), "test": (10,)}
#: The splits every reader and ``kmerl-train prepare`` accept.
SPLITS = ("train", "val", "test")

#: PTB-XL diagnostic subclass (as in the ``ptbxl_folds1_8`` index and MERL's ``sub_class`` task) → English.
PTBXL_SUBCLASS_TEXT: dict[str, str] = {
    "NORM": "normal ECG",
    "STTC": "ST/T change",
    "NST": "non-specific ST changes",
    "ISC": "non-specific ischemic",
    "ISCA": "ischemic in anterior leads",
    "ISCI": "ischemic in inferior leads",
    "LVH": "left ventricular hypertrophy",
    "RVH": "right ventricular hypertrophy",
    "SEHYP": "septal hypertrophy",
    "LAO/LAE": "left atrial overload/enlargement",
    "RAO/RAE": "right atrial overload/enlargement",
    "AMI": "anterior myocardial infarction",
    "IMI": "inferior myocardial infarction",
    "LMI": "lateral myocardial infarction",
    "PMI": "posterior myocardial infarction",
    "LAFB/LPFB": "left anterior/left posterior fascicular block",
    "IRBBB": "incomplete right bundle branch block",
    "ILBBB": "incomplete left bundle branch block",
    "CLBBB": "complete left bundle branch block",
    "CRBBB": "complete right bundle branch block",
    "IVCD": "non-specific intraventricular conduction disturbance",
    "AVB": "AV block",
    "WPW": "Wolff-Parkinson-White syndrome",
}
#: PTB-XL diagnostic superclass code → English.
PTBXL_SUPERCLASS_TEXT: dict[str, str] = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}


def ptbxl_folds(split: str | None = None, folds: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """The ``strat_fold`` values of ``split`` (train 1–8, val 9, test 10) or the explicit ``folds``;
    ``None`` when neither is given (all folds). Both at once, an unknown split or a fold outside 1–10
    raise :class:`SplitError`."""
    if split is not None and folds is not None:
        raise SplitError("give a split or folds, not both")
    if split is not None:
        if split not in PTBXL_SPLIT_FOLDS:
            raise SplitError(f"unknown split {split!r}; PTB-XL splits: {', '.join(PTBXL_SPLIT_FOLDS)}")
        return PTBXL_SPLIT_FOLDS[split]
    if folds is not None:
        out = tuple(sorted({int(f) for f in folds}))
        if not out or any(not 1 <= f <= 10 for f in out):
            raise SplitError(f"PTB-XL strat_fold values are 1..10, got {list(folds)}")
        return out
    return None


def _embedded_scp_statements() -> Any:
    import json

    from trainer.knowledge._lexicon import _data_text
    from trainer.knowledge._scp import ScpStatement

    table = json.loads(_data_text("lexicon.json"))["scp_statements"]
    return {
        code: ScpStatement(code, str(v["description"]), v.get("kind") == "diagnostic", v.get("kind") == "form",
                           v.get("kind") == "rhythm", str(v.get("diagnostic_class") or ""),
                           str(v.get("diagnostic_subclass") or ""))
        for code, v in table.items()
    }


def _superclasses_of(codes: Mapping[str, float], statements: Any) -> tuple[str, ...]:
    out = []
    for c in codes:
        st = statements.get(c) if hasattr(statements, "get") else None
        cls = getattr(st, "diagnostic_class", None) or (st.get("diagnostic_class") if isinstance(st, dict) else None)
        if cls and cls not in out:
            out.append(str(cls))
    return tuple(sorted(out))


def read_ptbxl(
    root: str | Path,
    *,
    rate: int | None = None,
    split: str | None = None,
    folds: Sequence[int] | None = None,
    check_files: bool = True,
) -> Dataset:
    """PTB-XL, from either layout, restricted to a split:

    - a PhysioNet download: ``ptbxl_database.csv`` + ``scp_statements.csv`` + ``records500/`` and/or
      ``records100/`` (``rate`` 500 (default) or 100). The English report is composed from the SCP
      descriptions; the German free text is kept in ``meta['report_de']``; labels are the SCP codes.
    - the ``ptbxl_folds1_8`` layout: ``index.csv`` (ecg_id, record, patient_id, strat_fold, super, sub,
      form, rhythm) + ``records250/`` (``rate`` 250). The report is composed from the rhythm, diagnostic
      subclass and form statements (no free text); labels are those codes.

    ``split`` (``train`` = folds 1–8, ``val`` = 9, ``test`` = 10) or ``folds`` selects records by
    ``strat_fold``; neither means every fold (the caller then splits; ``kmerl-train prepare`` always
    passes one). ``meta`` holds ``strat_fold``, ``patient_id``, ``superclasses`` (NORM, MI, STTC, CD, HYP)
    and ``scp_codes``. ``skipped`` counts rows of other folds (``other_split``) and missing files.
    """
    root = Path(root)
    keep = ptbxl_folds(split, folds)
    if (root / "ptbxl_database.csv").is_file():
        return _read_ptbxl_download(root, 500 if rate is None else rate, keep, split, check_files)
    if (root / "index.csv").is_file() and (root / "records250").is_dir():
        if rate not in (None, 250):
            raise DatasetFormatError(f"{root} holds 250 Hz records (records250/), not {rate} Hz")
        return _read_ptbxl_folds_layout(root, keep, split, check_files)
    raise DatasetFormatError(
        f"{root} is not a PTB-XL directory: expected ptbxl_database.csv + records500/ or records100/ "
        "(PhysioNet download) or index.csv + records250/ (ptbxl_folds1_8 layout)")


def _read_ptbxl_download(root: Path, rate: int, keep: tuple[int, ...] | None, split: str | None,
                         check_files: bool) -> Dataset:
    if rate not in (500, 100):
        raise DatasetFormatError(f"PTB-XL records exist at 500 or 100 Hz, not {rate}")
    rows = _read_csv(root / "ptbxl_database.csv", ("ecg_id", "report", "scp_codes", "strat_fold",
                                                   "filename_lr", "filename_hr"))
    statements = _scp_statements(root)
    col = "filename_hr" if rate == 500 else "filename_lr"
    items: list[EcgItem] = []
    skipped: Counter[str] = Counter()
    classes: set[str] = set()
    for row in rows:
        eid = str(int(float(row["ecg_id"])))
        fold = int(float(row["strat_fold"]))
        if keep is not None and fold not in keep:
            skipped["other_split"] += 1
            continue
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
                meta={"report_de": row["report"], "strat_fold": fold, "scp_codes": codes,
                      "patient_id": _patient_id(row.get("patient_id")),
                      "superclasses": _superclasses_of(codes, statements), "split": split},
            )
        )
    name = f"ptbxl_{rate}" + (f":{split}" if split else "")
    return Dataset(name, items, tuple(sorted(classes)), dict(skipped))


def _patient_id(v: str | None) -> str:
    v = (v or "").strip()
    try:
        return str(int(float(v)))
    except ValueError:
        return v


def _codes(cell: str | None) -> list[str]:
    return [c.strip() for c in (cell or "").split("|") if c.strip()]


def _read_ptbxl_folds_layout(root: Path, keep: tuple[int, ...] | None, split: str | None,
                             check_files: bool) -> Dataset:
    rows = _read_csv(root / "index.csv", ("ecg_id", "record", "patient_id", "strat_fold", "super", "sub",
                                          "form", "rhythm"))
    statements = _embedded_scp_statements()

    def scp(c: str) -> str:  # the index drops PTB-XL's trailing underscore (NST_, STD_, STE_)
        return c if c in statements or f"{c}_" not in statements else f"{c}_"

    items: list[EcgItem] = []
    skipped: Counter[str] = Counter()
    classes: set[str] = set()
    for row in rows:
        eid = str(int(float(row["ecg_id"])))
        fold = int(float(row["strat_fold"]))
        if keep is not None and fold not in keep:
            skipped["other_split"] += 1
            continue
        rhythm, sub, form = _codes(row["rhythm"]), _codes(row["sub"]), _codes(row["form"])
        sentences: list[str] = []
        for c in rhythm + form:
            if scp(c) not in statements:
                raise DatasetFormatError(f"{root / 'index.csv'}: ecg_id {eid}: unknown SCP code {c!r}")
        for c in sub:
            if c not in PTBXL_SUBCLASS_TEXT:
                raise DatasetFormatError(f"{root / 'index.csv'}: ecg_id {eid}: unknown diagnostic subclass {c!r}")
        texts = ([statements[c].description for c in rhythm] + [PTBXL_SUBCLASS_TEXT[c] for c in sub]
                 + [statements[scp(c)].description for c in form])
        for t in texts:
            t = _english_sentence(t)
            if t not in sentences:
                sentences.append(t)
        path = root / row["record"]
        if check_files and not path.with_suffix(".hea").is_file():
            skipped["missing_file"] += 1
            continue
        labels = tuple(dict.fromkeys(rhythm + sub + form))
        classes.update(labels)
        items.append(
            EcgItem(
                record_id=eid,
                path=str(path),
                report=" ".join(sentences),
                labels=labels,
                meta={"strat_fold": fold, "patient_id": _patient_id(row["patient_id"]),
                      "superclasses": tuple(sorted(_codes(row["super"]))), "split": split,
                      "scp_codes": {c: 100.0 for c in rhythm + [scp(c) for c in form]}},
            )
        )
    name = "ptbxl_folds_250" + (f":{split}" if split else "")
    return Dataset(name, items, tuple(sorted(classes)), dict(skipped))


def _english_sentence(description: str) -> str:
    text = re.sub(r"\s*\((?:former|block)[^)]*\)", "", description).strip()
    return text[:1].upper() + text[1:] + "."


# ----------------------------------------------------------------------------------------- patient split
def patient_split(patient: str, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """``train``, ``val`` or ``test`` for a patient id, from a hash of the id alone: stable across runs,
    machines and dataset versions, and every record of one patient lands in the same split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SplitError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
    import hashlib

    u = int.from_bytes(hashlib.sha256(f"kmerl-split:{patient}".encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


#: Sources whose records MERL's benchmark splits cover: source → MERL task.
MERL_SOURCE_TASKS: dict[str, str] = {"cpsc2018": "icbeb", "cinc": "chapman"}


def merl_split_ids(splits_root: str | Path, task: str) -> dict[str, set[str]]:
    """Record ids of each split (train / val / test) of a MERL benchmark task, in the ids this package's
    readers give (PTB-XL ``ecg_id``, CPSC-2018 record name, Chapman record stem)."""
    if task not in MERL_TASKS:
        raise DatasetFormatError(f"unknown MERL task {task!r}; known: {', '.join(MERL_TASKS)}")
    out: dict[str, set[str]] = {}
    for split in SPLITS:
        rows = _read_csv(Path(splits_root) / MERL_TASKS[task].format(split=split))
        if task.startswith("ptbxl"):
            out[split] = {str(int(float(r["ecg_id"]))) for r in rows}
        elif task == "icbeb":
            out[split] = {r["filename"].strip() for r in rows}
        else:
            out[split] = {Path(r["ecg_path"].strip()).stem for r in rows}
    return out


def select_benchmark_split(dataset: Dataset, split: str, splits_root: str | Path, task: str) -> Dataset:
    """The items of ``dataset`` in MERL's ``split`` of ``task``: ``val`` and ``test`` are MERL's lists;
    ``train`` is every item in neither (MERL's train list plus records outside the benchmark), so nothing
    trained on can be in the benchmark's val or test split."""
    if split not in SPLITS:
        raise SplitError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    ids = merl_split_ids(splits_root, task)
    held = ids["val"] | ids["test"]
    items = [it for it in dataset.items
             if (it.record_id not in held if split == "train" else it.record_id in ids[split])]
    skipped = dict(dataset.skipped)
    if len(items) < len(dataset.items):
        skipped["other_split"] = skipped.get("other_split", 0) + len(dataset.items) - len(items)
    return Dataset(f"{dataset.name}:{task}:{split}", items, dataset.classes, skipped)


def select_split(dataset: Dataset, split: str, patient_of: Any = None, **fractions: float) -> Dataset:
    """The items of ``dataset`` whose patient falls in ``split`` (see :func:`patient_split`).

    ``patient_of(item) -> str`` gives an item's patient (default: ``meta['patient_id']``, then
    ``meta['subject_id']``, then ``meta['record']`` (CPSC-2021 windows), then the record id). Items left
    out are counted in ``skipped['other_split']``."""
    if split not in SPLITS:
        raise SplitError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")

    def default(it: EcgItem) -> str:
        m = it.meta
        return str(m.get("patient_id") or m.get("subject_id") or m.get("patient") or m.get("record") or it.record_id)

    who = patient_of or default
    items = [it for it in dataset.items if patient_split(str(who(it)), **fractions) == split]
    skipped = dict(dataset.skipped)
    if len(items) < len(dataset.items):
        skipped["other_split"] = skipped.get("other_split", 0) + len(dataset.items) - len(items)
    return Dataset(f"{dataset.name}:{split}", items, dataset.classes, skipped)


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


def _cpsc2021_patient(name: str) -> str:
    """CPSC-2021 records are ``data_<patient>_<n>``; other names are their own patient."""
    parts = name.split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "data" else name


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
                    meta={"af_fraction": frac, "record": base.name, "patient_id": _cpsc2021_patient(base.name)},
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
