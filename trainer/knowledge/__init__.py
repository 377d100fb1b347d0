"""Structured cardiac knowledge from ECG reports (K-MERL Sec. 2.4): entities, superclasses, labels.

Two interchangeable extractors produce the same output:

* :class:`LexiconBackend` (default, offline): an entity lexicon built from the 71 SCP-ECG statements of
  PTB-XL, the SNOMED-CT diagnoses of the PhysioNet/CinC challenges and MIMIC-IV-ECG machine statements,
  with German and Swedish PTB-XL phrases, negation ("no", "without", "resolved", "no longer", "kein",
  "ohne") and flagged uncertainty ("possible", "consider", "cannot rule out", "nicht auszuschliessen").
* :class:`LLMBackend`: the paper's four LLM steps (extract, verify, merge synonyms, superclasses) over an
  OpenAI-compatible HTTP endpoint (:class:`OpenAIChatBackend`) or a local ``transformers`` model
  (:class:`TransformersChatBackend`), with a SQLite answer cache (:class:`AnswerCache`).

Output directory (what the trainer consumes; every file written atomically, ``entities.json`` last)::

    entities.json     {"schema_version": 1,
                       "vocabulary": [entity names in label-matrix column order],
                       "entities": [{"name", "superclass", "count", "scp_codes"}...],
                       "superclasses": {superclass: [member entity names]},
                       "synonyms": {surface form or original LLM string: entity name},
                       "counts": {entity: number of reports}, "stats": {n_reports, n_entities,
                       entities_per_report_mean/median/max, coverage, reports_with_none, counters...},
                       "provenance": {extractor, model, params, config, prompts...},
                       "files": {name: {path, sha256, ...}}}
    labels.npz        scipy.sparse.save_npz CSR uint8, shape (n_records, n_entities): 1 = stated positively
    uncertain.npz     same shape: 1 where the positive label came from a hedged statement
    record_ids.json   the record ids, row order of both matrices
    entity_names.txt  one entity name per line, column order (texts for the query embeddings)

Load it with :func:`load_knowledge` (``np.load(..., allow_pickle=False)``, hashes checked).
"""

from __future__ import annotations

from ._cache import AnswerCache, cache_key
from ._errors import (
    KnowledgeConfigError,
    KnowledgeError,
    KnowledgeFormatError,
    LLMBackendError,
    LLMRequestError,
    LLMResponseError,
    LLMResponseTooLargeError,
    MalformedOutputError,
)
from ._extract import dry_run, extract_knowledge
from ._hf import TransformersChatBackend, TransformersConfig
from ._http import HTTPConfig, OpenAIChatBackend
from ._lexicon import Lexicon, LexiconBackend, LexiconConfig, Mention, default_lexicon
from ._llm import (
    EXTRACT_PROMPT,
    MERGE_PROMPT,
    SUPERCLASS_PROMPT,
    VERIFY_PROMPT,
    ChatBackend,
    LLMBackend,
    LLMConfig,
)
from ._scp import ScpStatement, compose_english_report, load_scp_statements, parse_scp_codes
from ._store import Knowledge, load_knowledge
from ._types import Extraction

__all__ = [
    "extract_knowledge",
    "load_knowledge",
    "dry_run",
    "Knowledge",
    "Extraction",
    "compose_english_report",
    "load_scp_statements",
    "parse_scp_codes",
    "ScpStatement",
    "Lexicon",
    "LexiconBackend",
    "LexiconConfig",
    "Mention",
    "default_lexicon",
    "LLMBackend",
    "LLMConfig",
    "ChatBackend",
    "OpenAIChatBackend",
    "HTTPConfig",
    "TransformersChatBackend",
    "TransformersConfig",
    "AnswerCache",
    "cache_key",
    "EXTRACT_PROMPT",
    "VERIFY_PROMPT",
    "MERGE_PROMPT",
    "SUPERCLASS_PROMPT",
    "KnowledgeError",
    "KnowledgeFormatError",
    "LLMBackendError",
    "LLMRequestError",
    "MalformedOutputError",
    "KnowledgeConfigError",
    "LLMResponseError",
    "LLMResponseTooLargeError",
]
