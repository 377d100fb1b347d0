"""The extractor-neutral result both backends produce (lexicon and LLM give the trainer the same thing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Extraction", "ExtractorBackend"]


@dataclass
class Extraction:
    """What an extractor found in a list of reports, before it is written to disk.

    ``per_report[i]`` maps each positive entity (canonical name) of report ``i`` to ``True`` when the
    mention was uncertain ("possible", "nicht auszuschliessen", ...). ``synonyms`` maps every surface
    form seen (lexicon) or every original LLM entity string (LLM) to its canonical name.
    ``superclass_names`` maps a superclass id of ``superclass_of`` to the label text the superclass
    aggregation writes for it (e.g. ``MI`` → "myocardial infarction"); ids without a name (the lexicon's
    RHYTHM, FORM, OTHER: kinds of statement, not diagnoses) get no aggregated label.
    """

    per_report: list[dict[str, bool]]
    synonyms: dict[str, str]
    superclass_of: dict[str, str]
    scp_codes_of: dict[str, list[str]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    superclass_names: dict[str, str] = field(default_factory=dict)


class ExtractorBackend(Protocol):
    """Anything :func:`trainer.knowledge.extract_knowledge` can run: the lexicon or the LLM pipeline."""

    def extract(self, reports: list[str], *, cache: Any = None, progress: bool = False) -> Extraction: ...

    def describe(self) -> dict[str, Any]: ...
