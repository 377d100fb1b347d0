"""K-MERL Edge exporter: teacher checkpoint → device bundle (distil → lower → save).

>>> from export import ExportConfig, export_bundle
>>> export_bundle("runs/teacher", "bundles/patch3", ExportConfig(student="kmerl-student-s", max_leads=3))

Artifacts: torch weights, ONNX fp32 and int8, an int8 QDQ ONNX for TensorRT, ExecuTorch fp32 and int8
(XNNPACK); TensorRT engines are built on a TensorRT machine with ``kmerl-export tensorrt``. Every artifact
is compared with the torch fp32 student on real ECG (1, 2 and 3 leads); a failure raises
:class:`ParityError` and writes nothing. Heavy libraries are imported inside the functions that use them.
"""

from __future__ import annotations

from ._config import DEFAULT_BACKENDS, DEFAULT_STUDENT, DistillConfig, ExportConfig, ParityConfig
from ._data import EcgWindows, load_ptbxl_windows, load_windows_npz, save_windows_npz
from ._parity import ParityError, ParityResult, check_parity, median_latency_ms, sqnr_db, top1_agreement
from ._pipeline import Distilled, Lowered, add_label_set, distil, export_bundle, lower, resolve_data, save
from ._teacher import TeacherSpec, load_text_encoder, resolve_teacher
from ._tensorrt import EngineConfig, build_engine, profile_shapes

__all__ = [
    "DEFAULT_BACKENDS",
    "DEFAULT_STUDENT",
    "DistillConfig",
    "ExportConfig",
    "ParityConfig",
    "EcgWindows",
    "load_ptbxl_windows",
    "load_windows_npz",
    "save_windows_npz",
    "ParityError",
    "ParityResult",
    "check_parity",
    "median_latency_ms",
    "sqnr_db",
    "top1_agreement",
    "Distilled",
    "Lowered",
    "distil",
    "lower",
    "save",
    "export_bundle",
    "resolve_data",
    "add_label_set",
    "TeacherSpec",
    "load_text_encoder",
    "resolve_teacher",
    "EngineConfig",
    "build_engine",
    "profile_shapes",
    "build_tensorrt_engines",
]


def build_tensorrt_engines(*args: object, **kwargs: object) -> object:
    """See :func:`export.cli.build_tensorrt_engines` (needs TensorRT)."""
    from .cli import build_tensorrt_engines as _b

    return _b(*args, **kwargs)  # type: ignore[arg-type]
