"""Inference backends behind one small interface: ``run(signal, lead_ids) -> logits``.

``signal`` is (batch, n_leads, 5000) float32 (already preprocessed), ``lead_ids`` (n_leads,) int64;
the result is (batch, Q) float32 logits for every query of the bundle, in :meth:`Bundle.all_queries`
order. Query vectors are bound when the backend is created: a device never runs a text encoder.

Backends are registered by name; each imports its library lazily and raises
:class:`BackendUnavailableError` (library or artifact missing) so ``backend="auto"`` can move on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ._bundle import Artifact, Bundle
from ._errors import BackendUnavailableError

__all__ = [
    "Backend",
    "BACKENDS",
    "AUTO_ORDER",
    "register_backend",
    "create_backend",
    "available_backends",
    "TorchBackend",
    "OnnxRuntimeBackend",
]


class Backend(Protocol):
    name: str
    artifact: str

    def run(self, signal: np.ndarray, lead_ids: np.ndarray) -> np.ndarray: ...


BackendFactory = Callable[[Bundle, "int | None"], Backend]
BACKENDS: dict[str, BackendFactory] = {}
#: Preference order of ``backend="auto"`` when the bundle records no measured latency.
AUTO_ORDER = ["tensorrt", "onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8", "torch"]


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def deco(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return deco


def _one_artifact(bundle: Bundle, backend: str, precision: str) -> Artifact:
    arts = bundle.artifacts_for(backend, precision)
    if not arts:
        raise BackendUnavailableError(
            f"bundle {bundle.path.name} has no {backend} {precision} artifact "
            f"(it has: {', '.join(sorted(a.file for a in bundle.artifacts.values() if a.kind == 'model')) or 'none'})"
        )
    return arts[0]


class TorchBackend:
    """Eager PyTorch fp32, built from ``weights.safetensors`` (the reference for every parity check)."""

    name = "torch"
    artifact = "weights.safetensors"

    def __init__(self, bundle: Bundle, threads: int | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("torch is not installed: pip install 'kmerl-edge[torch]'") from exc
        from ._model import DeviceGraph, KMERLModel

        if threads:
            torch.set_num_threads(threads)
        model = KMERLModel(bundle.model_config)
        state = {k: torch.from_numpy(v) for k, v in bundle.weights().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed = {k for k in missing if k.startswith(("ecg_proj.", "text_proj."))}
        if set(missing) - allowed or unexpected:  # check_weights already refused these; belt and braces
            raise BackendUnavailableError(f"weights do not fit the model: {missing} {unexpected}")
        self.graph = DeviceGraph(model.eval()).eval()
        q, _ = bundle.all_queries()
        self.queries = torch.from_numpy(q)
        self._torch = torch

    def run(self, signal: np.ndarray, lead_ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.graph(
                torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(lead_ids, dtype=np.int64)),
                self.queries,
            )
        return out.numpy()


class OnnxRuntimeBackend:
    """ONNX Runtime on CPU (or CUDA when onnxruntime-gpu is installed) for an fp32 or int8 ONNX file."""

    def __init__(self, bundle: Bundle, threads: int | None = None, precision: str = "fp32") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "onnxruntime is not installed: pip install 'kmerl-edge[onnx]'"
            ) from exc
        art = _one_artifact(bundle, "onnxruntime", precision)
        self.name = "onnxruntime" if precision == "fp32" else f"onnxruntime-{precision}"
        self.artifact = art.file
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads) if threads else 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(bundle.path / art.file), so, providers=["CPUExecutionProvider"]
        )
        q, _ = bundle.all_queries()
        self.queries = q
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, signal: np.ndarray, lead_ids: np.ndarray) -> np.ndarray:
        feeds = dict(
            zip(
                self.input_names,
                (
                    np.ascontiguousarray(signal, dtype=np.float32),
                    np.ascontiguousarray(lead_ids, dtype=np.int64),
                    self.queries,
                ),
            )
        )
        return self.session.run(None, feeds)[0]


@register_backend("torch")
def _torch(bundle: Bundle, threads: int | None) -> Backend:
    return TorchBackend(bundle, threads)


@register_backend("onnxruntime")
def _ort(bundle: Bundle, threads: int | None) -> Backend:
    return OnnxRuntimeBackend(bundle, threads, "fp32")


@register_backend("onnxruntime-int8")
def _ort8(bundle: Bundle, threads: int | None) -> Backend:
    return OnnxRuntimeBackend(bundle, threads, "int8")


def _load_optional_backends() -> None:
    """Register backends that live in optional modules (ExecuTorch, TensorRT) if those modules exist."""
    import importlib

    for mod in ("kmerl_edge._backend_executorch", "kmerl_edge._backend_tensorrt"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def _measured_order(bundle: Bundle) -> list[str]:
    """Backends ordered by the latency the exporter measured and wrote into the manifest, if any."""
    timed: list[tuple[float, str]] = []
    for art in bundle.artifacts.values():
        lat = art.extra.get("latency_ms")
        name = art.extra.get("backend_name")
        if art.kind == "model" and isinstance(lat, dict) and name and art.extra.get("parity_ok", True):
            vals = [float(v) for v in lat.values() if isinstance(v, (int, float))]
            if vals:
                timed.append((float(np.median(vals)), str(name)))
    return [n for _, n in sorted(timed)]


def available_backends(bundle: Bundle) -> list[str]:
    """Backend names that have an artifact in ``bundle`` (whether or not their library is installed)."""
    _load_optional_backends()
    names = ["torch"]
    for art in bundle.artifacts.values():
        if art.kind != "model":
            continue
        n = art.extra.get("backend_name") or (
            art.backend if art.precision == "fp32" else f"{art.backend}-{art.precision}"
        )
        if n not in names:
            names.append(str(n))
    return names


def create_backend(bundle: Bundle, name: str = "auto", threads: int | None = None) -> Backend:
    """Create backend ``name`` for ``bundle``; ``"auto"`` picks the fastest one that loads here."""
    _load_optional_backends()
    if name != "auto":
        if name not in BACKENDS:
            raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
        return BACKENDS[name](bundle, threads)
    order = _measured_order(bundle) + [n for n in AUTO_ORDER]
    reasons = []
    seen = set()
    for cand in order:
        if cand in seen or cand not in BACKENDS:
            continue
        seen.add(cand)
        try:
            return BACKENDS[cand](bundle, threads)
        except BackendUnavailableError as exc:
            reasons.append(f"{cand}: {exc}")
    raise BackendUnavailableError("no backend could run this bundle: " + "; ".join(reasons))
