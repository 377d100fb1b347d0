"""Every real recording in ``../shared/data`` as one deduplicated, patient-split corpus with its source.

One row per recording (or per 10-s window of a Holter record), with

- ``source``: where the recording comes from — ``ptbxl`` (PTB-XL, Germany, Schiller devices), ``cpsc2018``
  (China Physiological Signal Challenge 2018, 11 hospitals), ``georgia`` (Georgia 12-lead, USA),
  ``chapman_ningbo`` (Chapman University / Shaoxing and Ningbo hospitals), ``cpsc_extra`` (CPSC-2018
  extra set), ``ptb`` (PTB Diagnostic, 1000 Hz) and ``cpsc2021`` (2-lead Holter, 200 Hz);
- ``origin``: the folder it was read from (``provenance_extra.csv`` names the public repository and commit of
  every record in the ``*_extra`` / ``cpsc2018_cinc2020`` folders);
- ``patient``: the patient id where the source has one (PTB-XL ``patient_id``, CPSC-2021 ``data_<patient>_*``),
  else the recording itself (the CinC sources publish one recording per patient id-less);
- ``split``: ``train``, ``val`` or ``test``, by patient: PTB-XL by ``strat_fold`` (9 is the validation fold,
  10 the benchmark's test fold, patient-disjoint by construction; neither is ever trained on), CPSC-2021 by
  patient list, the other sources by a seeded hash of the patient id (``test_fraction`` of the patients).
  Any selection (recipe, epochs, checkpoint) is made on ``val``; ``test`` is scored once, for the final model.

Duplicates are removed by recording identity: a PTB-XL ``ecg_id`` appears once (the 500 Hz mV record of
``ptbxl/`` first, then the CinC ``HR*`` copy, then the normalised 250 Hz copy of ``ptbxl_folds1_8/``); a
CPSC-2018 ``A*`` record appears once (the original ``.mat`` of ``cpsc2018/`` first, then the Challenge
re-releases). What was dropped as a duplicate is counted in :attr:`Corpus.duplicates`.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmerl_edge._errors import ExportError
from kmerl_edge._labels import DEFAULT_LABEL_SETS, PTBXL_SUPERCLASS_CODES, RHYTHM_SCP_CODES

__all__ = [
    "AF",
    "SOURCES",
    "Corpus",
    "CorpusConfig",
    "CorpusRecord",
    "build_corpus",
    "read_corpus_csv",
    "shard_records",
    "write_corpus_csv",
]

AF = "atrial fibrillation"
SOURCES = ("ptbxl", "cpsc2018", "georgia", "chapman_ningbo", "cpsc_extra", "ptb", "cpsc2021")
#: CinC record-name prefix → source
_CINC_PREFIX = {"HR": "ptbxl", "A": "cpsc2018", "E": "georgia", "JS": "chapman_ningbo", "Q": "cpsc_extra", "S": "ptb"}
#: CPSC-2018 / Challenge-2020 abbreviations → English class names
CPSC_NAMES = {
    "Normal": "sinus rhythm",
    "SNR": "sinus rhythm",
    "AF": AF,
    "AFIB": AF,
    "I-AVB": "first degree AV block",
    "IAVB": "first degree AV block",
    "1AVB": "first degree AV block",
    "LBBB": "left bundle branch block",
    "CLBBB": "left bundle branch block",
    "RBBB": "right bundle branch block",
    "CRBBB": "right bundle branch block",
    "PAC": "premature atrial contraction",
    "PVC": "premature ventricular contraction",
    "VPC": "premature ventricular contraction",
    "STD": "ST depression",
    "STE": "ST elevation",
}
#: SNOMED-CT codes whose name is a ``rhythm`` class under another wording
_SNOMED_RHYTHM = {
    "164889003": AF,
    "164890007": "atrial flutter",
    "426783006": "sinus rhythm",
    "426177001": "sinus bradycardia",
    "427084000": "sinus tachycardia",
    "427172004": "premature ventricular contraction",
    "17338001": "premature ventricular contraction",
}


@dataclass(frozen=True)
class CorpusConfig:
    """How the corpus is split (by patient) and windowed."""

    #: share of patients of each non-PTB-XL 12-lead source that go to ``test``
    test_fraction: float = 0.3
    #: PTB-XL strat folds held out (10 is the benchmark's test fold)
    ptbxl_test_folds: tuple[int, ...] = (10,)
    #: PTB-XL strat folds held out for validation (model selection); never trained on
    ptbxl_val_folds: tuple[int, ...] = (9,)
    #: CPSC-2021 Holter patients held out (8 and 66 paroxysmal/persistent AF, 35 normal, 101 AF)
    holter_test_patients: tuple[str, ...] = ("8", "35", "66", "101")
    #: Holter records are cut into consecutive windows of this length
    holter_window_s: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if set(self.ptbxl_val_folds) & set(self.ptbxl_test_folds):
            raise ValueError(f"PTB-XL folds {sorted(set(self.ptbxl_val_folds) & set(self.ptbxl_test_folds))} "
                             "are both validation and test folds")

    def ptbxl_split(self, fold: int) -> str:
        """``test``, ``val`` or ``train`` for a PTB-XL ``strat_fold``."""
        return "test" if fold in self.ptbxl_test_folds else "val" if fold in self.ptbxl_val_folds else "train"


@dataclass(frozen=True)
class CorpusRecord:
    record_id: str
    source: str
    origin: str
    patient: str
    path: str
    report: str
    labels: tuple[str, ...]
    split: str
    start_s: float | None = None
    stop_s: float | None = None
    af_fraction: float | None = None

    @property
    def af(self) -> bool:
        return AF in self.labels


@dataclass
class Corpus:
    records: list[CorpusRecord]
    duplicates: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def where(self, *, split: str | None = None, source: str | None = None,
              exclude_source: str | None = None) -> list[CorpusRecord]:
        return [r for r in self.records if (split is None or r.split == split)
                and (source is None or r.source == source) and (exclude_source is None or r.source != exclude_source)]

    def summary(self) -> dict[str, dict[str, int]]:
        """{source: {split: records, split_af: AF records, patients: n}} (splits ``train``, ``val``, ``test``)."""
        out: dict[str, dict[str, int]] = {}
        pats: dict[str, set[str]] = {}
        for r in self.records:
            d = out.setdefault(r.source, Counter())  # type: ignore[arg-type]
            d[r.split] += 1
            d[f"{r.split}_af"] += int(r.af)
            pats.setdefault(r.source, set()).add(r.patient)
        for s, d in out.items():
            d["patients"] = len(pats[s])
        return {s: dict(d) for s, d in out.items()}


def _hash_test(seed: int, source: str, patient: str, fraction: float) -> bool:
    h = hashlib.sha256(f"{seed}|{source}|{patient}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def _ptbxl_labels(codes: Sequence[str], superclasses: Sequence[str]) -> tuple[str, ...]:
    out = [RHYTHM_SCP_CODES[c] for c in codes if c in RHYTHM_SCP_CODES]
    out += [PTBXL_SUPERCLASS_CODES[s] for s in superclasses if s in PTBXL_SUPERCLASS_CODES]
    return tuple(dict.fromkeys(out))


def _dx(hea: Path) -> list[str]:
    for line in hea.read_text(errors="replace").splitlines():
        s = line.strip()
        if s.startswith("#") and s.lstrip("# ").lower().startswith("dx:"):
            return [c.strip() for c in s.split(":", 1)[1].split(",") if c.strip()]
    return []


def build_corpus(shared: str | Path, config: CorpusConfig | None = None) -> Corpus:
    """Read every source under ``shared`` (the ``../shared/data`` folder) into one :class:`Corpus`."""
    from trainer.data import _scp_statements, _snomed_names, compose_ptbxl_report

    cfg = config or CorpusConfig()
    root = Path(shared)
    recs: list[CorpusRecord] = []
    dup: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    seen: set[str] = set()  # dedup keys: ptbxl:<ecg_id>, cpsc2018:<A-name>

    def split_for(source: str, patient: str) -> str:
        return "test" if _hash_test(cfg.seed, source, patient, cfg.test_fraction) else "train"

    # --- PTB-XL, 500 Hz mV (ecg_id 1-500, all folds)
    statements = _scp_statements(root / "ptbxl")
    from trainer.data import read_ptbxl

    ptbxl = read_ptbxl(root / "ptbxl", rate=500)  # the PhysioNet download layout, every fold
    skipped["ptbxl_missing_file"] += sum(v for k, v in ptbxl.skipped.items() if "missing" in k)
    for item in ptbxl.items:
        eid = str(int(float(item.record_id)))
        scp: dict[str, float] = dict(item.meta["scp_codes"])
        ptb_sup: list[str] = list(item.meta["superclasses"])
        fold = int(item.meta["strat_fold"])
        seen.add(f"ptbxl:{eid}")
        recs.append(CorpusRecord(
            f"ptbxl:{eid}", "ptbxl", "ptbxl", f"ptbxl:{int(float(item.meta['patient_id']))}", str(item.path),
            compose_ptbxl_report(scp, statements), _ptbxl_labels(list(scp), ptb_sup),
            cfg.ptbxl_split(fold)))
    # --- CPSC-2018 originals (.mat)
    with open(root / "cpsc2018" / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            names = [CPSC_NAMES.get(c, c) for c in row["labels"].split("|") if c]
            seen.add(f"cpsc2018:{row['record']}")
            recs.append(CorpusRecord(
                f"cpsc2018:{row['record']}", "cpsc2018", "cpsc2018", f"cpsc2018:{row['record']}",
                str(root / "cpsc2018" / f"{row['record']}.mat"), ". ".join(names) + ".", tuple(names),
                split_for("cpsc2018", row["record"])))
    # --- CPSC-2018 Challenge-2020 re-release (abbreviated Dx)
    for hea in sorted((root / "cpsc2018_cinc2020").glob("*.hea")):
        key = f"cpsc2018:{hea.stem}"
        if key in seen:
            dup["cpsc2018_cinc2020"] += 1
            continue
        seen.add(key)
        names = list(dict.fromkeys(CPSC_NAMES.get(c, c) for c in _dx(hea)))
        recs.append(CorpusRecord(
            key, "cpsc2018", "cpsc2018_cinc2020", key, str(hea.with_suffix("")), ". ".join(names) + ".",
            tuple(names), split_for("cpsc2018", hea.stem)))
    # --- CinC 2021 (both folders): Georgia, Chapman-Ningbo, CPSC extra, PTB, CPSC A*, PTB-XL HR*
    snomed = _snomed_names()
    hr: list[tuple[Path, str]] = []
    for folder in ("cinc2021", "cinc2021_extra"):
        for hea in sorted((root / folder).glob("*.hea")):
            prefix = "JS" if hea.stem.startswith("JS") else "HR" if hea.stem.startswith("HR") else hea.stem[0]
            source = _CINC_PREFIX.get(prefix)
            if source is None:
                skipped[f"{folder}_unknown_prefix"] += 1
                continue
            if source == "ptbxl":
                hr.append((hea, folder))
                continue
            key = f"{source}:{hea.stem}"
            if key in seen:
                dup[folder] += 1
                continue
            seen.add(key)
            codes = _dx(hea)
            words = [snomed[c] for c in codes if snomed.get(c)]
            labels = tuple(dict.fromkeys([_SNOMED_RHYTHM[c] for c in codes if c in _SNOMED_RHYTHM] + words))
            recs.append(CorpusRecord(
                key, source, folder, key, str(hea.with_suffix("")), ". ".join(words) + "." if words else "",
                labels, split_for(source, hea.stem)))
    # --- PTB-XL folds 1-8 beyond ecg_id 500 (250 Hz, normalised units) and the CinC HR* copies of PTB-XL
    extra: dict[str, dict[str, str]] = {}
    with open(root / "ptbxl_folds1_8" / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            extra[str(int(float(row["ecg_id"])))] = row
    for hea, folder in hr:
        eid = str(int(hea.stem[2:]))
        key = f"ptbxl:{eid}"
        if key in seen:
            dup[folder] += 1
            continue
        seen.add(key)
        hit = extra.get(eid)
        codes = _dx(hea)
        words = [snomed[c] for c in codes if snomed.get(c)]
        sup = hit["super"].split("|") if hit else []
        labels = tuple(dict.fromkeys([_SNOMED_RHYTHM[c] for c in codes if c in _SNOMED_RHYTHM]
                                     + [PTBXL_SUPERCLASS_CODES[s] for s in sup if s in PTBXL_SUPERCLASS_CODES]))
        patient = f"ptbxl:{int(float(hit['patient_id']))}" if hit else key
        fold = int(hit["strat_fold"]) if hit else 0  # HR* copies are folds 1-8 (shared/README)
        recs.append(CorpusRecord(
            key, "ptbxl", folder, patient, str(hea.with_suffix("")), ". ".join(words) + "." if words else "",
            labels, cfg.ptbxl_split(fold)))
    for eid, row in extra.items():
        key = f"ptbxl:{eid}"
        if key in seen:
            dup["ptbxl_folds1_8"] += 1
            continue
        seen.add(key)
        codes = [c for col in ("sub", "form", "rhythm") for c in row[col].split("|") if c]
        codes = [c for c in dict.fromkeys(codes) if c in statements]
        report = compose_ptbxl_report({c: 100.0 for c in codes}, statements) if codes else ""
        sup = [s for s in row["super"].split("|") if s]
        fold = int(row["strat_fold"])
        recs.append(CorpusRecord(
            key, "ptbxl", "ptbxl_folds1_8", f"ptbxl:{int(float(row['patient_id']))}",
            str(root / "ptbxl_folds1_8" / row["record"]), report, _ptbxl_labels(codes, sup),
            cfg.ptbxl_split(fold)))
    # --- CPSC-2021 Holter, consecutive windows
    recs += _holter_windows(root, cfg, skipped)
    _check_patient_split(recs)
    return Corpus(recs, dict(dup), dict(skipped))


def _holter_windows(root: Path, cfg: CorpusConfig, skipped: Counter[str]) -> list[CorpusRecord]:
    import numpy as np
    import wfdb

    out: list[CorpusRecord] = []
    for folder in ("cpsc2021", "cpsc2021_extra"):
        for hea in sorted((root / folder).glob("*.hea")):
            base = hea.with_suffix("")
            if not base.with_suffix(".atr").is_file():
                skipped["cpsc2021_no_atr"] += 1
                continue
            h = wfdb.rdheader(str(base))
            fs, n = float(h.fs), int(h.sig_len)
            ann = wfdb.rdann(str(base), "atr")
            rhythm = np.zeros(n, dtype=np.int8)  # 0 normal, 1 AF, 2 flutter
            cur, start = 0, 0
            for s, note in zip(ann.sample, ann.aux_note):
                note = (note or "").strip().rstrip("\x00")
                if not note.startswith("("):
                    continue
                rhythm[start:int(s)] = cur
                cur, start = (1 if note.startswith("(AFIB") else 2 if note.startswith("(AFL") else 0), int(s)
            rhythm[start:] = cur
            patient = base.name.split("_")[1]
            split = "test" if patient in cfg.holter_test_patients else "train"
            win = int(round(cfg.holter_window_s * fs))
            for a in range(0, n - win + 1, win):
                seg = rhythm[a : a + win]
                af, afl = float((seg == 1).mean()), float((seg == 2).mean())
                labels = (AF,) if af >= 0.5 else ("atrial flutter",) if afl >= 0.5 else ("sinus rhythm",)
                out.append(CorpusRecord(
                    f"cpsc2021:{base.name}@{a / fs:g}", "cpsc2021", folder, f"cpsc2021:{patient}", str(base),
                    labels[0] + ".", labels, split, a / fs, (a + win) / fs, af))
    return out


def _check_patient_split(recs: Sequence[CorpusRecord]) -> None:
    where: dict[str, set[str]] = {}
    for r in recs:
        where.setdefault(r.patient, set()).add(r.split)
    both = [p for p, s in where.items() if len(s) > 1]
    if both:
        raise ValueError(f"patients in more than one split: {both[:5]} ({len(both)})")
    ids = Counter(r.record_id for r in recs)
    twice = [k for k, v in ids.items() if v > 1]
    if twice:
        raise ValueError(f"duplicate record ids: {twice[:5]}")


_FIELDS = ("record_id", "source", "origin", "patient", "split", "labels", "path", "start_s", "stop_s",
           "af_fraction", "report")


def write_corpus_csv(corpus: Corpus, path: str | Path) -> Path:
    """The corpus as CSV (one row per record/window; ``labels`` joined by ``|``), written atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_FIELDS)
        for r in corpus.records:
            w.writerow([r.record_id, r.source, r.origin, r.patient, r.split, "|".join(r.labels), r.path,
                        "" if r.start_s is None else f"{r.start_s:g}", "" if r.stop_s is None else f"{r.stop_s:g}",
                        "" if r.af_fraction is None else f"{r.af_fraction:.4f}", r.report])
    tmp.replace(p)
    return p


def read_corpus_csv(path: str | Path) -> Corpus:
    recs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            recs.append(CorpusRecord(
                row["record_id"], row["source"], row["origin"], row["patient"], row["path"], row["report"],
                tuple(x for x in row["labels"].split("|") if x), row["split"],
                float(row["start_s"]) if row["start_s"] else None, float(row["stop_s"]) if row["stop_s"] else None,
                float(row["af_fraction"]) if row["af_fraction"] else None))
    return Corpus(recs)


def label_classes() -> tuple[str, ...]:
    return tuple(c for cs in DEFAULT_LABEL_SETS.values() for c in cs)


def shard_records(shards: str | Path, corpus_records: Sequence[Any], *, error: type[Exception] = ExportError
                  ) -> tuple[Any, list[str], dict[str, Any]]:
    """A run's shard store, its record ids in row order and the corpus record of each id (``error`` when a
    shard record is not in the corpus: shards and corpus of different runs)."""
    from trainer.shards import open_shards

    store = open_shards(shards)
    by_id = {r.record_id: r for r in corpus_records}
    ids = list(store.record_ids)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise error(f"{len(missing)} shard records are not in the corpus (e.g. {missing[:3]}): "
                          "the shards and the corpus come from different runs")
    return store, ids, by_id
