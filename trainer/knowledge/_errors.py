"""Named errors of the knowledge-extraction pipeline (all subclass :class:`KmerlError`)."""

from __future__ import annotations

from kmerl_edge._errors import KmerlError

__all__ = [
    "KnowledgeError",
    "KnowledgeFormatError",
    "LLMBackendError",
    "LLMRequestError",
    "MalformedOutputError",
]


class KnowledgeError(KmerlError):
    """Base class of knowledge-extraction failures."""


class KnowledgeFormatError(KnowledgeError, ValueError):
    """An ``entities.json`` / ``labels.npz`` directory is missing, inconsistent or of another schema."""


class LLMBackendError(KnowledgeError, RuntimeError):
    """An LLM endpoint kept failing (timeouts, 5xx, connection errors) after all retries."""


class LLMRequestError(LLMBackendError):
    """An LLM endpoint rejected a request (4xx other than 429): retrying would not help."""


class MalformedOutputError(KnowledgeError, ValueError):
    """An LLM answer could not be parsed into the requested format, even after repair."""
