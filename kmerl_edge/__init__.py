"""K-MERL Edge: the on-device runtime of K-MERL (knowledge-enhanced multimodal ECG learning with
arbitrary-lead inputs).

>>> import kmerl_edge
>>> clf = kmerl_edge.load()                                  # the default bundle shipped in the package
>>> pred = clf.predict(signal, fs=500.0, leads=["I", "II"])  # signal: (n_leads, n_samples) in mV
>>> pred.scores, pred.quality

Heavy libraries (torch, onnxruntime, executorch, tensorrt, pyserial) are imported only by the parts
that need them; the runtime itself needs numpy, scipy and safetensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._bundle import Bundle, load_bundle
from ._classifier import Classifier, Prediction, default_bundle_path, default_companion_path, load
from ._config import ModelConfig, get_config, list_models
from ._errors import (
    BackendCrashedError,
    BackendUnavailableError,
    BundleError,
    ChecksumError,
    ConfigError,
    ConfigMismatchError,
    DuplicateLeadError,
    InvalidArgumentError,
    InvalidHeaderError,
    KmerlError,
    LeadError,
    LeadMapRequiredError,
    ManifestError,
    MissingArtifactError,
    MissingExtraError,
    MissingLeadError,
    NoEcgChannelError,
    NonFiniteSignalError,
    NoUsableLeadsError,
    RecordReadError,
    SamplingRateError,
    SignalError,
    SignalRangeError,
    SignalShapeError,
    SignalTooShortError,
    SignatureError,
    TamperedArtifactError,
    UnknownLabelSetError,
    UnknownLeadError,
    UnknownModelError,
    UnlistedFileError,
    UnsafeArtifactError,
    UnsupportedSchemaError,
)
from ._io import Record, RecordReader, open_record, read_record
from ._leads import LEADS, PAPER_LEAD_ORDER, canonical_lead, canonical_leads, lead_ids, parse_leads
from ._preprocess import PreprocessConfig, Preprocessed, QualityConfig, QualityReport, preprocess
from ._scoring import Coverage

if TYPE_CHECKING:  # pragma: no cover
    from ._model import KMERLModel

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # leads
    "LEADS",
    "PAPER_LEAD_ORDER",
    "canonical_lead",
    "canonical_leads",
    "lead_ids",
    "parse_leads",
    # signals
    "PreprocessConfig",
    "QualityConfig",
    "QualityReport",
    "Preprocessed",
    "preprocess",
    "Record",
    "read_record",
    # models
    "ModelConfig",
    "list_models",
    "get_config",
    "create_model",
    # bundles and inference
    "Bundle",
    "load_bundle",
    "load",
    "default_bundle_path",
    "default_companion_path",
    "Classifier",
    "Prediction",
    # errors
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
    "InvalidHeaderError",
    "ChecksumError",
    "NoEcgChannelError",
    "MissingLeadError",
    "LeadMapRequiredError",
    "SignalRangeError",
    "InvalidArgumentError",
    # reading records
    "RecordReader",
    "open_record",
    "Coverage",
    "ConfigError",
    "ManifestError",
    "UnlistedFileError",
    "UnsafeArtifactError",
    "SignatureError",
    "BackendCrashedError",
]


def create_model(name: str | ModelConfig, **overrides: Any) -> KMERLModel:
    """Build a randomly initialised :class:`KMERLModel` by registry name (needs torch)."""
    try:
        from ._model import create_model as _create
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise MissingExtraError("torch is not installed: pip install 'kmerl-edge[torch]'") from exc
    return _create(name, **overrides)
