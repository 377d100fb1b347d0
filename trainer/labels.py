"""The entity label matrix the cardiac-query BCE trains against, aligned to a dataset's record ids.

The knowledge pipeline (:mod:`trainer.knowledge`) writes it; :meth:`LabelMatrix.from_knowledge` reads it
through ``trainer.knowledge.load_knowledge``. :meth:`LabelMatrix.from_records` builds one from a
dataset's own labels (e.g. PTB-XL SCP codes named by their English descriptions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import LabelAlignmentError

__all__ = ["LabelMatrix"]


@dataclass
class LabelMatrix:
    """``matrix`` (n_records, n_entities) CSR (or dense), rows in the order of ``record_ids``;
    ``entities`` are the texts the query head is asked (one query per column)."""

    entities: tuple[str, ...]
    matrix: Any
    record_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        import scipy.sparse as sp

        self.matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        if self.matrix.shape != (len(self.record_ids), len(self.entities)):
            raise LabelAlignmentError(
                f"label matrix shape {self.matrix.shape} != ({len(self.record_ids)} records, "
                f"{len(self.entities)} entities)"
            )
        if len(set(self.record_ids)) != len(self.record_ids):
            raise LabelAlignmentError("label matrix record_ids are not unique")

    def align(self, record_ids: Sequence[str], *, missing: str = "error") -> LabelMatrix:
        """The rows for ``record_ids`` (which may repeat: several windows of one record).

        ``missing="error"`` raises :class:`LabelAlignmentError` for ids without a row; ``"zeros"`` gives
        them all-zero rows (and says how many in the error-free return's ``record_ids``).
        """
        import scipy.sparse as sp

        pos = {r: i for i, r in enumerate(self.record_ids)}
        absent = [r for r in record_ids if r not in pos]
        if absent and missing == "error":
            raise LabelAlignmentError(
                f"{len(absent)} of {len(record_ids)} records have no label row (first: {absent[:3]})"
            )
        extra = sp.csr_matrix((1, len(self.entities)), dtype=np.float32)
        m = sp.vstack([self.matrix, extra]).tocsr()
        rows = np.asarray([pos.get(r, len(self.record_ids)) for r in record_ids], dtype=np.int64)
        return LabelMatrix(self.entities, m[rows], tuple(f"{r}#{i}" for i, r in enumerate(record_ids)))

    def rows(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense float32 rows ``idx``."""
        return np.asarray(self.matrix[np.asarray(idx, dtype=np.int64)].toarray(), dtype=np.float32)

    @classmethod
    def from_records(
        cls,
        record_ids: Sequence[str],
        labels: Sequence[Sequence[str]],
        *,
        names: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
    ) -> LabelMatrix:
        """Build from per-record label lists; ``names`` maps a label code to its query text."""
        uniq: dict[str, int] = {}
        ids: list[str] = []
        rows: list[set[str]] = []
        for r, labs in zip(record_ids, labels):
            if r in uniq:
                rows[uniq[r]].update(labs)
                continue
            uniq[r] = len(ids)
            ids.append(r)
            rows.append(set(labs))
        cls_list = list(classes) if classes is not None else sorted({c for row in rows for c in row})
        col = {c: i for i, c in enumerate(cls_list)}
        y = np.zeros((len(ids), len(cls_list)), dtype=np.float32)
        for i, row in enumerate(rows):
            for c in row:
                if c in col:
                    y[i, col[c]] = 1.0
        texts = tuple((names or {}).get(c, c) for c in cls_list)
        return cls(texts, y, tuple(ids))

    @classmethod
    def from_knowledge(cls, path: str | Path) -> LabelMatrix:
        """Read the knowledge pipeline's output through ``trainer.knowledge.load_knowledge``."""
        try:
            from trainer.knowledge import load_knowledge  # type: ignore[attr-defined]
        except ImportError as exc:
            raise LabelAlignmentError(
                "trainer.knowledge.load_knowledge is not available in this installation"
            ) from exc
        k = load_knowledge(path)
        vocab = getattr(k, "vocabulary", None)
        entities = getattr(k, "entities", None)
        if entities is None and vocab is not None:
            entities = getattr(vocab, "entities", vocab)
        names = tuple(e if isinstance(e, str) else getattr(e, "name", str(e)) for e in (entities or ()))
        return cls(names, k.label_matrix, tuple(str(r) for r in k.record_ids))
