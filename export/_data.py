"""Real ECG windows for distillation, calibration, parity and AUC (PTB-XL from ``../shared/data``).

PTB-XL (Wagner et al., 2020) is licensed CC BY 4.0. The tests carry a few preprocessed windows of it
(``tests/fixtures/export/ptbxl_windows.npz``) so they run without the shared data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kmerl_edge._labels import DEFAULT_LABEL_SETS, PTBXL_SUPERCLASS_CODES
from kmerl_edge._leads import LEADS, canonical_leads, lead_ids
from kmerl_edge._preprocess import PreprocessConfig

__all__ = [
    "EcgWindows",
    "default_ptbxl_root",
    "load_ptbxl_windows",
    "load_windows_npz",
    "save_windows_npz",
    "sample_lead_subset",
]

PTBXL_NOTICE = (
    "PTB-XL, a large publicly available electrocardiography dataset (Wagner et al., 2020), PhysioNet. "
    "Licensed CC BY 4.0: https://creativecommons.org/licenses/by/4.0/"
)


@dataclass(frozen=True)
class EcgWindows:
    """Preprocessed 10-s windows (N, 12, 5000) float32 in :data:`kmerl_edge.LEADS` order, with optional
    multi-hot ``labels`` (N, C) over ``classes`` (class names of the ``label_set``) and each window's fold."""

    windows: np.ndarray
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    label_set: str = ""
    folds: np.ndarray | None = None
    ids: tuple[str, ...] = ()
    source: str = ""

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def subset(self, idx: np.ndarray | Sequence[int]) -> EcgWindows:
        i = np.asarray(idx, dtype=np.int64)
        return EcgWindows(
            self.windows[i],
            None if self.labels is None else self.labels[i],
            self.classes,
            self.label_set,
            None if self.folds is None else self.folds[i],
            tuple(self.ids[j] for j in i) if self.ids else (),
            self.source,
        )

    def fold(self, fold: int) -> EcgWindows:
        if self.folds is None:
            return self.subset(np.arange(0))
        return self.subset(np.flatnonzero(self.folds == fold))

    def without_fold(self, fold: int) -> EcgWindows:
        if self.folds is None:
            return self
        return self.subset(np.flatnonzero(self.folds != fold))

    def select(self, leads: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(windows of ``leads`` (N, L, 5000) float32, lead ids (L,) int64)."""
        names = canonical_leads(leads)
        rows = [LEADS.index(n) for n in names]
        return np.ascontiguousarray(self.windows[:, rows], dtype=np.float32), lead_ids(names).astype(np.int64)


def default_ptbxl_root() -> Path | None:
    """``../shared/data/ptbxl`` relative to the repository, if it is there."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared" / "data" / "ptbxl", Path("/work/shared/data/ptbxl")):
        if (cand / "ptbxl_database.csv").exists():
            return cand
    return None


def load_ptbxl_windows(
    root: str | Path | None = None,
    *,
    folds: Sequence[int] | None = None,
    max_records: int | None = None,
    config: PreprocessConfig | None = None,
) -> EcgWindows:
    """The first 10-s window of every 500 Hz PTB-XL record under ``root`` (12 leads, preprocessed with
    the shared :func:`kmerl_edge.preprocess`), labelled with the ``ptbxl_superclass`` classes."""
    from kmerl_edge._io import read_record
    from kmerl_edge._preprocess import preprocess
    from trainer.data import read_ptbxl

    r = Path(root) if root is not None else default_ptbxl_root()
    if r is None or not (r / "ptbxl_database.csv").exists():
        raise FileNotFoundError("PTB-XL not found (expected a PhysioNet download: ../shared/data/ptbxl/ptbxl_database.csv)")
    classes = DEFAULT_LABEL_SETS["ptbxl_superclass"]
    wins: list[np.ndarray] = []
    labs: list[np.ndarray] = []
    fl: list[int] = []
    ids: list[str] = []
    for item in read_ptbxl(r, rate=500, folds=folds).items:
        rec = read_record(item.path)
        pre = preprocess(rec.signal, fs=rec.fs, leads=rec.leads, config=config)
        if pre.leads != LEADS:
            continue
        wins.append(pre.windows[0].astype(np.float32))
        names = {PTBXL_SUPERCLASS_CODES[s] for s in item.meta["superclasses"] if s in PTBXL_SUPERCLASS_CODES}
        labs.append(np.array([c in names for c in classes], dtype=np.float32))
        fl.append(int(item.meta["strat_fold"]))
        ids.append(str(item.record_id))
        if max_records is not None and len(wins) >= max_records:
            break
    if not wins:
        raise FileNotFoundError(f"no PTB-XL records read under {r}")
    return EcgWindows(
        np.stack(wins), np.stack(labs), classes, "ptbxl_superclass", np.array(fl), tuple(ids), "ptbxl"
    )


def save_windows_npz(path: str | Path, data: EcgWindows, *, dtype: str = "float16") -> Path:
    """Write windows (compressed, ``dtype``) with labels, folds, ids and the PTB-XL licence notice."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "windows": data.windows.astype(dtype),
        "classes": np.array(data.classes, dtype=str),
        "label_set": np.array(data.label_set),
        "ids": np.array(data.ids, dtype=str),
        "notice": np.array(PTBXL_NOTICE),
    }
    if data.labels is not None:
        arrays["labels"] = data.labels.astype(np.uint8)
    if data.folds is not None:
        arrays["folds"] = data.folds.astype(np.int16)
    with open(p, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    return p


def load_windows_npz(path: str | Path) -> EcgWindows:
    with np.load(path, allow_pickle=False) as z:
        return EcgWindows(
            z["windows"].astype(np.float32),
            z["labels"].astype(np.float32) if "labels" in z else None,
            tuple(str(c) for c in z["classes"]),
            str(z["label_set"]),
            z["folds"].astype(np.int64) if "folds" in z else None,
            tuple(str(i) for i in z["ids"]),
            f"npz:{Path(path).name}",
        )


def sample_lead_subset(rng: np.random.Generator, max_leads: int) -> np.ndarray:
    """A random subset of 1..``max_leads`` of the 12 lead ids (uniform size, then uniform leads)."""
    k = int(rng.integers(1, max_leads + 1))
    return np.sort(rng.choice(len(LEADS), size=k, replace=False)).astype(np.int64)
