"""Named errors of the knowledge-extraction pipeline (all subclass :class:`KmerlError`)."""

from __future__ import annotations

from kmerl_edge._errors import KmerlError

__all__ = [
    "KnowledgeError",
    "KnowledgeFormatError",
    "LLMBackendError",
    "LLMRequestError",
    "MalformedOutputError",
    "LLMResponseError",
    "LLMResponseTooLargeError",
    "KnowledgeConfigError",
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


class LLMResponseError(LLMBackendError):
    """An LLM endpoint answered HTTP 200 with a body that is not a usable chat-completions response (not
    JSON, nested beyond reason, no ``choices``, an error object)."""


class LLMResponseTooLargeError(LLMBackendError):
    """An LLM endpoint sent more than ``HTTPConfig.max_response_bytes``; reading stopped there."""


class KnowledgeConfigError(KnowledgeError, ValueError):
    """An option of the knowledge pipeline (HTTP endpoint, LLM pipeline, record ids) is not acceptable."""
