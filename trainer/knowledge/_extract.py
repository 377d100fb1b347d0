"""``extract_knowledge``: run an extractor backend over reports and write the knowledge directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cache import AnswerCache
from ._lexicon import LexiconBackend
from ._llm import LLMBackend
from ._store import write_knowledge
from ._types import ExtractorBackend

__all__ = ["extract_knowledge", "dry_run"]


def extract_knowledge(
    reports: Sequence[str],
    record_ids: Sequence[str | int],
    *,
    out_dir: str | Path,
    backend: ExtractorBackend | None = None,
    cache: AnswerCache | str | Path | None = None,
    min_count: int = 1,
    progress: bool = False,
    superclass_labels: bool = True,
) -> Path:
    """Extract cardiac entities from ``reports`` and write ``out_dir`` (see the package docstring).

    ``backend`` defaults to :class:`LexiconBackend`; pass ``LLMBackend(OpenAIChatBackend(...))`` for the
    paper's pipeline, with ``cache`` a SQLite path so an interrupted run resumes without asking twice.
    Row ``i`` of the label matrix belongs to ``record_ids[i]``. ``superclass_labels`` adds the superclass
    aggregation (a subtype's superclass name as a label too; see :func:`write_knowledge`). Returns ``out_dir``.
    """
    reports = [r if isinstance(r, str) else "" for r in reports]
    if len(reports) != len(record_ids):
        raise ValueError(f"{len(reports)} reports but {len(record_ids)} record ids")
    backend = backend if backend is not None else LexiconBackend()
    t0 = time.time()
    extraction = backend.extract(list(reports), cache=cache, progress=progress)
    return write_knowledge(extraction, record_ids, out_dir, min_count=min_count, superclass_labels=superclass_labels,
                           extra_provenance={"seconds": round(time.time() - t0, 3), "min_count": min_count,
                                             "superclass_labels": superclass_labels})


def dry_run(reports: Sequence[str], backend: ExtractorBackend | None = None,
            cache: AnswerCache | str | Path | None = None) -> dict[str, Any]:
    """Count reports and estimate the LLM calls a run would make (nothing is asked)."""
    reports = [r if isinstance(r, str) else "" for r in reports]
    if isinstance(backend, LLMBackend):
        return backend.estimate(reports, cache=cache)
    unique = {r for r in reports if r.strip()}
    return {"n_reports": len(reports), "n_unique_nonempty_reports": len(unique),
            "n_empty_reports": sum(1 for r in reports if not r.strip()),
            "estimated_calls": {"total": 0}, "model": None}
