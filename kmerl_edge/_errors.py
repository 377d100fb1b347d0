"""Named errors raised by K-MERL Edge.

Every user-facing failure is a subclass of :class:`KmerlError`, so callers (and the CLI) can catch one
type and print one clear line.
"""

from __future__ import annotations

__all__ = [
    "KmerlError",
    "LeadError",
    "UnknownLeadError",
    "DuplicateLeadError",
    "SignalError",
    "SignalShapeError",
    "NonFiniteSignalError",
    "SignalTooShortError",
    "NoUsableLeadsError",
    "SamplingRateError",
    "BundleError",
    "MissingArtifactError",
    "TamperedArtifactError",
    "UnsupportedSchemaError",
    "ConfigMismatchError",
    "BackendUnavailableError",
    "MissingExtraError",
    "UnknownModelError",
    "UnknownLabelSetError",
    "RecordReadError",
    "ConfigError",
    "ManifestError",
    "UnlistedFileError",
    "UnsafeArtifactError",
    "SignatureError",
    "BackendCrashedError",
    "ExportError",
]


class KmerlError(Exception):
    """Base class of every error K-MERL Edge raises on purpose."""


class LeadError(KmerlError, ValueError):
    """A lead name or lead set is not acceptable."""


class UnknownLeadError(LeadError):
    """A lead name that is not one of the 12 standard leads or a known alias."""


class DuplicateLeadError(LeadError):
    """The same lead appears twice (possibly under two aliases)."""


class SignalError(KmerlError, ValueError):
    """A signal cannot be processed."""


class SignalShapeError(SignalError):
    """The signal array does not have the documented (n_leads, n_samples) layout."""


class NonFiniteSignalError(SignalError):
    """The signal holds NaN or Inf samples."""


class SignalTooShortError(SignalError):
    """The recording is shorter than the minimum the model accepts (5 s)."""


class NoUsableLeadsError(SignalError):
    """Every lead was flagged unusable (flat, lead-off, saturated); nothing is left to score."""


class SamplingRateError(SignalError):
    """The sampling rate is missing, non-positive or unusable."""


class BundleError(KmerlError):
    """A model bundle cannot be used."""


class MissingArtifactError(BundleError):
    """A file the manifest lists (or requires) is not in the bundle directory."""


class TamperedArtifactError(BundleError):
    """A bundle file's SHA-256 differs from the one recorded in the manifest."""


class UnsupportedSchemaError(BundleError):
    """The manifest's schema version is not one this runtime reads."""


class ConfigMismatchError(BundleError):
    """The weights do not match the model configuration in the manifest."""


class BackendUnavailableError(KmerlError):
    """The requested backend is not installed or has no artifact in the bundle."""


class MissingExtraError(KmerlError, ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""


class UnknownModelError(KmerlError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownLabelSetError(KmerlError, KeyError):
    """A label set that the bundle does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RecordReadError(KmerlError):
    """A recording file cannot be read."""


class ConfigError(KmerlError, ValueError):
    """A configuration value (model, export, backend option) is not acceptable."""


class ManifestError(BundleError):
    """A bundle manifest lacks a field or holds a value of the wrong type."""


class UnlistedFileError(TamperedArtifactError):
    """A bundle directory holds a file that its seal does not list (a backend could read it unverified)."""


class UnsafeArtifactError(TamperedArtifactError):
    """A bundle entry is a symbolic link, a FIFO, a device or anything other than a plain file inside it."""


class SignatureError(TamperedArtifactError):
    """The bundle's Ed25519 signature is missing or does not verify against the pinned public key."""


class BackendCrashedError(BackendUnavailableError):
    """A native backend crashed (or hung) while loading a bundle's artifact in a probe process."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module} is not installed; install it with: pip install 'kmerl-edge[{extra}]'"
        ) from exc


class ExportError(KmerlError, RuntimeError):
    """An exporter step (ONNX, ExecuTorch, TensorRT lowering) could not produce its artifact."""
