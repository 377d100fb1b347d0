"""Writing and loading the knowledge directory the trainer consumes (format in the package docstring)."""

from __future__ import annotations

import hashlib
import io
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from kmerl_edge._bundle import atomic_write_bytes

from ._errors import KnowledgeConfigError, KnowledgeFormatError
from ._types import Extraction

__all__ = ["Knowledge", "load_knowledge", "write_knowledge", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
ENTITIES_FILE = "entities.json"
LABELS_FILE = "labels.npz"
UNCERTAIN_FILE = "uncertain.npz"
RECORD_IDS_FILE = "record_ids.json"
NAMES_FILE = "entity_names.txt"


@dataclass(frozen=True)
class Knowledge:
    """A loaded knowledge directory.

    ``label_matrix`` is a ``scipy.sparse.csr_matrix`` of ``uint8`` with one row per record (in
    ``record_ids`` order) and one column per entity (in ``vocabulary`` order); 1 means the report states
    the entity positively. ``uncertain_matrix`` marks which of those 1s came from hedged statements.
    """

    vocabulary: tuple[str, ...]
    label_matrix: sp.csr_matrix
    record_ids: tuple[str | int, ...]
    superclasses: dict[str, tuple[str, ...]]
    uncertain_matrix: sp.csr_matrix
    synonyms: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    scp_codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def entity_texts(self) -> list[str]:
        """The entity names in column order: the texts the trainer embeds as cardiac queries."""
        return list(self.vocabulary)

    def superclass_of(self, entity: str) -> str:
        for sc, members in self.superclasses.items():
            if entity in members:
                return sc
        raise KeyError(entity)

    def row(self, record_id: str | int) -> np.ndarray:
        """The dense 0/1 label vector of one record."""
        try:
            i = self.record_ids.index(record_id)
        except ValueError as exc:
            raise KeyError(record_id) from exc
        return np.asarray(self.label_matrix[i].toarray()).ravel()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npz_bytes(matrix: sp.csr_matrix) -> bytes:
    buf = io.BytesIO()
    sp.save_npz(buf, matrix, compressed=True)
    return buf.getvalue()


def write_knowledge(
    extraction: Extraction,
    record_ids: Sequence[str | int],
    out_dir: str | Path,
    *,
    min_count: int = 1,
    extra_provenance: dict[str, Any] | None = None,
) -> Path:
    """Build the vocabulary (entities seen in >= ``min_count`` reports) and write the directory atomically.

    Columns are ordered by decreasing count, then name. ``entities.json`` is replaced last and records
    the SHA-256 of the files it describes, so a reader never pairs files of two different runs.
    """
    ids = list(record_ids)
    if len(ids) != len(extraction.per_report):
        raise KnowledgeConfigError(f"{len(ids)} record ids for {len(extraction.per_report)} reports")
    if len(set(ids)) != len(ids):
        dup = [k for k, v in Counter(ids).items() if v > 1][:5]
        raise KnowledgeConfigError(f"record ids must be unique; duplicated: {dup}")
    if any(not isinstance(i, (str, int)) or isinstance(i, bool) for i in ids):
        raise KnowledgeConfigError("record ids must be str or int")
    counts: Counter[str] = Counter(e for row in extraction.per_report for e in row)
    vocab = sorted((e for e, c in counts.items() if c >= min_count), key=lambda e: (-counts[e], e))
    col = {e: j for j, e in enumerate(vocab)}
    rows, cols, unc_rows, unc_cols = [], [], [], []
    for i, found in enumerate(extraction.per_report):
        for e, uncertain in found.items():
            if e in col:
                rows.append(i)
                cols.append(col[e])
                if uncertain:
                    unc_rows.append(i)
                    unc_cols.append(col[e])
    shape = (len(ids), len(vocab))
    labels = sp.csr_matrix((np.ones(len(rows), np.uint8), (rows, cols)), shape=shape, dtype=np.uint8)
    uncertain = sp.csr_matrix((np.ones(len(unc_rows), np.uint8), (unc_rows, unc_cols)), shape=shape,
                              dtype=np.uint8)
    labels.sort_indices()
    uncertain.sort_indices()
    per = np.diff(labels.indptr)
    n = len(ids)
    stats = {
        "n_reports": n,
        "n_entities": len(vocab),
        "n_positive_labels": int(labels.nnz),
        "n_uncertain_labels": int(uncertain.nnz),
        "entities_per_report_mean": float(per.mean()) if n else 0.0,
        "entities_per_report_median": float(statistics.median(per.tolist())) if n else 0.0,
        "entities_per_report_max": int(per.max()) if n else 0,
        "reports_with_none": int((per == 0).sum()),
        "coverage": float((per > 0).mean()) if n else 0.0,
        "dropped_below_min_count": sorted(e for e in counts if counts[e] < min_count),
        "counters": dict(sorted(extraction.counters.items())),
    }
    superclasses: dict[str, list[str]] = {}
    for e in vocab:
        superclasses.setdefault(extraction.superclass_of.get(e, "OTHER"), []).append(e)
    labels_bytes = _npz_bytes(labels)
    unc_bytes = _npz_bytes(uncertain)
    ids_bytes = json.dumps(ids, ensure_ascii=False).encode("utf-8")
    names_bytes = ("\n".join(vocab) + ("\n" if vocab else "")).encode("utf-8")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "vocabulary": vocab,
        "entities": [{"name": e, "superclass": extraction.superclass_of.get(e, "OTHER"), "count": counts[e],
                      "scp_codes": list(extraction.scp_codes_of.get(e, []))} for e in vocab],
        "superclasses": dict(sorted(superclasses.items())),
        "synonyms": {s: t for s, t in sorted(extraction.synonyms.items()) if t in col},
        "counts": {e: counts[e] for e in vocab},
        "stats": stats,
        "provenance": {**extraction.provenance, **(extra_provenance or {})},
        "files": {
            "labels": {"path": LABELS_FILE, "sha256": _sha256(labels_bytes), "format": "scipy.sparse csr",
                       "dtype": "uint8", "shape": list(shape)},
            "uncertain": {"path": UNCERTAIN_FILE, "sha256": _sha256(unc_bytes)},
            "record_ids": {"path": RECORD_IDS_FILE, "sha256": _sha256(ids_bytes)},
            "entity_names": {"path": NAMES_FILE, "sha256": _sha256(names_bytes)},
        },
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / LABELS_FILE, labels_bytes)
    atomic_write_bytes(out / UNCERTAIN_FILE, unc_bytes)
    atomic_write_bytes(out / RECORD_IDS_FILE, ids_bytes)
    atomic_write_bytes(out / NAMES_FILE, names_bytes)
    atomic_write_bytes(out / ENTITIES_FILE, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return out


def _load_csr(data: bytes, shape: tuple[int, int], name: str) -> sp.csr_matrix:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        fmt = z["format"].item()
        if (fmt.decode() if isinstance(fmt, bytes) else str(fmt)) != "csr":
            raise KnowledgeFormatError(f"{name} is not a CSR matrix")
        m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(x) for x in z["shape"]))
    if m.shape != shape:
        raise KnowledgeFormatError(f"{name} has shape {m.shape}, entities.json says {shape}")
    return m


def load_knowledge(directory: str | Path) -> Knowledge:
    """Load a directory written by :func:`extract_knowledge`; checks schema, hashes and shapes."""
    d = Path(directory)
    try:
        doc = json.loads((d / ENTITIES_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KnowledgeFormatError(f"cannot read {d / ENTITIES_FILE}: {exc}") from exc
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise KnowledgeFormatError(f"{d / ENTITIES_FILE}: schema_version {doc.get('schema_version')!r}, "
                                   f"this reader knows {SCHEMA_VERSION}")
    blobs = {}
    for key in ("labels", "uncertain", "record_ids"):
        meta = doc["files"][key]
        try:
            data = (d / meta["path"]).read_bytes()
        except OSError as exc:
            raise KnowledgeFormatError(f"missing {meta['path']} in {d}: {exc}") from exc
        if _sha256(data) != meta["sha256"]:
            raise KnowledgeFormatError(f"{d / meta['path']} does not match the hash in entities.json "
                                       "(files from different runs, or edited)")
        blobs[key] = data
    vocab = tuple(doc["vocabulary"])
    ids = tuple(json.loads(blobs["record_ids"].decode("utf-8")))
    shape = (len(ids), len(vocab))
    labels = _load_csr(blobs["labels"], shape, "labels.npz")
    uncertain = _load_csr(blobs["uncertain"], shape, "uncertain.npz")
    return Knowledge(
        vocabulary=vocab,
        label_matrix=labels,
        record_ids=ids,
        superclasses={k: tuple(v) for k, v in doc["superclasses"].items()},
        uncertain_matrix=uncertain,
        synonyms=dict(doc.get("synonyms", {})),
        counts=dict(doc.get("counts", {})),
        scp_codes={e["name"]: tuple(e.get("scp_codes", [])) for e in doc.get("entities", [])},
        stats=dict(doc.get("stats", {})),
        provenance=dict(doc.get("provenance", {})),
    )
