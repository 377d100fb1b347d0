"""Inference backends behind one small interface: ``run(signal, lead_ids) -> logits``.

``signal`` is (batch, n_leads, 5000) float32 (already preprocessed), ``lead_ids`` (n_leads,) int64;
the result is (batch, Q) float32 logits for every query of the bundle, in :meth:`Bundle.all_queries`
order. Query vectors are bound when the backend is created: a device never runs a text encoder.

Backends are registered by name; each imports its library lazily and raises
:class:`BackendUnavailableError` (library or artifact missing) so ``backend="auto"`` can move on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._bundle import Artifact, Bundle
from ._errors import BackendUnavailableError, ConfigError

__all__ = [
    "Backend",
    "BACKENDS",
    "AUTO_ORDER",
    "register_backend",
    "create_backend",
    "choose_backend",
    "auto_plan",
    "BackendChoice",
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
#: Tie-break order of ``backend="auto"`` among backends of equal expected cost.
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
        from ._model import KMERLModel

        model = KMERLModel(bundle.model_config)
        state = {k: torch.from_numpy(v) for k, v in bundle.weights().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed = {k for k in missing if k.startswith(("ecg_proj.", "text_proj."))}
        if set(missing) - allowed or unexpected:  # check_weights already refused these; belt and braces
            raise BackendUnavailableError(f"weights do not fit the model: {missing} {unexpected}")
        q, _ = bundle.all_queries()
        self._init(model, q, threads)

    def _init(self, model: Any, queries: np.ndarray, threads: int | None) -> None:
        import torch

        from ._model import DeviceGraph

        if threads:
            torch.set_num_threads(_threads(threads))
        self.graph = DeviceGraph(model.eval()).eval()
        self.queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        self._torch = torch

    @classmethod
    def from_model(cls, model: Any, queries: np.ndarray, threads: int | None = None) -> TorchBackend:
        """The same backend over an in-memory ``KMERLModel`` (the exporter's reference for parity)."""
        self = cls.__new__(cls)
        self._init(model, queries, threads)
        return self

    def run(self, signal: np.ndarray, lead_ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.graph(
                torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(lead_ids, dtype=np.int64)),
                self.queries,
            )
        return out.numpy()


def _threads(threads: int | None) -> int:
    n = 1 if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
        raise ConfigError(f"threads must be an integer in 1..1024, not {threads!r}")
    return n


class OnnxRuntimeBackend:
    """ONNX Runtime on CPU for an fp32 or int8 ONNX file.

    The session is built from the verified bytes of the artifact (never from its path). External-data
    files the manifest lists are written, as verified, into a private temporary directory that ONNX
    Runtime is pointed at; a model that references anything else fails to load.
    """

    def __init__(self, bundle: Bundle, threads: int | None = None, precision: str = "fp32") -> None:
        art = _one_artifact(bundle, "onnxruntime", precision)
        name = "onnxruntime" if precision == "fp32" else f"onnxruntime-{precision}"
        external = {x: bundle.read(x) for x in art.external_data}
        q, _ = bundle.all_queries()
        self._init(bundle.read(art.file), q, threads, name, art.file, external)

    @classmethod
    def from_bytes(
        cls, model: bytes, queries: np.ndarray, threads: int | None = None, *, name: str = "onnxruntime",
        artifact: str = "model.onnx", external: dict[str, bytes] | None = None,
    ) -> OnnxRuntimeBackend:
        """The same backend over ONNX bytes (the exporter measures parity and latency through this)."""
        self = cls.__new__(cls)
        self._init(model, queries, threads, name, artifact, external or {})
        return self

    def _init(self, model: bytes, queries: np.ndarray, threads: int | None, name: str, artifact: str,
              external: dict[str, bytes]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "onnxruntime is not installed: pip install 'kmerl-edge[onnx]'"
            ) from exc
        self.name = name
        self.artifact = artifact
        so = ort.SessionOptions()
        so.intra_op_num_threads = _threads(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        private = tempfile.mkdtemp(prefix="kmerl-ort-")  # 0700, ours alone
        try:
            src: bytes | str = model
            if external:  # the verified bytes of the model and its external data, in a directory of ours
                src = os.path.join(private, "model.onnx")
                for fname, data in {**external, "model.onnx": model}.items():
                    with open(os.path.join(private, fname), "xb") as f:
                        f.write(data)
            else:  # from bytes; any external reference resolves in an empty directory of ours, never the cwd
                so.add_session_config_entry("session.model_external_initializers_file_folder_path", private)
            try:
                self.session = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT raises its own exception types for unusable models
                raise BackendUnavailableError(f"ONNX Runtime cannot load {artifact}: {str(exc)[:300]}") from None
        finally:
            shutil.rmtree(private, ignore_errors=True)
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
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
        return np.asarray(self.session.run(None, feeds)[0])


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


#: The library each backend family imports, and the seconds a cold process takes to import it and load
#: the shipped bundle on it (median, ``python -m benchmarks.load_time`` on a shared 2-core machine:
#: onnxruntime 0.46 s, torch 5.1 s, executorch 15.2 s; TensorRT not measured here, an estimate). ``auto``
#: weighs this one-off cost against the per-window latency the exporter measured.
FAMILIES: dict[str, tuple[str, float]] = {
    "onnxruntime": ("onnxruntime", 0.5),
    "torch": ("torch", 5.0),
    "executorch": ("executorch", 15.0),
    "tensorrt": ("tensorrt", 8.0),
}
#: Windows over which ``auto`` amortises the load cost (about 1 h of a stream at a 2-s hop, or 100
#: recordings of 1 min): total = load_s + AUTO_HORIZON_WINDOWS × per-window latency.
AUTO_HORIZON_WINDOWS = 2000
#: Backends whose artifacts run native code that a corrupted file can crash: probed in a subprocess once
#: per bundle before they are loaded in this process.
NATIVE_PROBED = ("executorch", "tensorrt")


def _family(name: str) -> str:
    return name.split("-", 1)[0]


@dataclass(frozen=True)
class Candidate:
    """One row of the ``auto`` plan."""

    name: str
    installed: bool
    load_s: float
    latency_ms: float | None  # median per-window latency measured at export (batch 1), if recorded
    parity_ok: bool

    @property
    def cost_s(self) -> float:
        lat = self.latency_ms if self.latency_ms is not None else 50.0  # unmeasured: assume slow
        return self.load_s + AUTO_HORIZON_WINDOWS * lat / 1e3

    def describe(self) -> str:
        lat = f"{self.latency_ms:.2f} ms/window" if self.latency_ms is not None else "latency not measured"
        state = "" if self.installed else ", not installed"
        bad = ", failed parity at export" if not self.parity_ok else ""
        return f"{self.name} (load ~{self.load_s:g} s, {lat}, ~{self.cost_s:.1f} s per {AUTO_HORIZON_WINDOWS} windows{state}{bad})"


@dataclass(frozen=True)
class BackendChoice:
    """What ``create_backend`` chose and why (``kmerl-edge info``, ``classify --verbose``)."""

    requested: str
    chosen: str
    reason: str
    plan: tuple[Candidate, ...] = ()
    skipped: tuple[str, ...] = ()
    load_s: float = 0.0

    def lines(self) -> list[str]:
        out = [f"backend: {self.chosen} ({self.reason}; loaded in {self.load_s:.2f} s)"]
        out += [f"  skipped {s}" for s in self.skipped]
        return out


def _latencies(bundle: Bundle) -> dict[str, tuple[float, bool]]:
    """Backend name → (median batch-1 latency in ms, parity ok) as the exporter wrote them."""
    out: dict[str, tuple[float, bool]] = {}
    for art in bundle.artifacts.values():
        lat = art.extra.get("latency_ms")
        name = art.extra.get("backend_name")
        if art.kind == "model" and isinstance(lat, dict) and name:
            vals = [float(v) for v in lat.values() if isinstance(v, (int, float))]
            if vals:
                out[str(name)] = (float(np.median(vals)), bool(art.extra.get("parity_ok", True)))
    tl = bundle.spec.metrics.get("torch", {}).get("latency_ms") if bundle.spec is not None else None
    if isinstance(tl, dict):
        vals = [float(v) for v in tl.values() if isinstance(v, (int, float))]
        if vals:
            out["torch"] = (float(np.median(vals)), True)
    return out


def _installed(family: str) -> bool:
    import importlib.util

    lib = FAMILIES.get(family, (family, 0.0))[0]
    try:
        return importlib.util.find_spec(lib) is not None
    except (ImportError, ValueError):  # pragma: no cover
        return False


def auto_plan(bundle: Bundle) -> list[Candidate]:
    """The backends ``auto`` would try for ``bundle``, cheapest expected total cost first."""
    lat = _latencies(bundle)
    rows = []
    for name in available_backends(bundle):
        fam = _family(name)
        if fam not in FAMILIES or name not in BACKENDS:
            continue
        latency, ok = lat.get(name, (None, True))
        rows.append(Candidate(name, _installed(fam), FAMILIES[fam][1], latency, ok))
    return sorted(rows, key=lambda c: (not c.installed, not c.parity_ok, c.cost_s, AUTO_ORDER.index(c.name)
                                       if c.name in AUTO_ORDER else len(AUTO_ORDER)))


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


def _create(bundle: Bundle, name: str, threads: int | None) -> Backend:
    if _family(name) in NATIVE_PROBED:
        from ._probe import probe_backend

        probe_backend(bundle, name, threads)
    return BACKENDS[name](bundle, threads)


def choose_backend(bundle: Bundle, name: str = "auto", threads: int | None = None) -> tuple[Backend, BackendChoice]:
    """Create backend ``name`` for ``bundle`` and say why; ``"auto"`` weighs each backend's load time
    against the per-window latency measured at export and takes the cheapest that loads here (a native
    artifact that crashes its probe process is skipped with a message)."""
    _load_optional_backends()
    if threads is not None:
        _threads(threads)
    if name != "auto":
        if name not in BACKENDS:
            raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
        t0 = time.perf_counter()
        be = _create(bundle, name, threads)
        return be, BackendChoice(name, be.name, "requested", load_s=time.perf_counter() - t0)
    plan = auto_plan(bundle)
    skipped: list[str] = []
    for cand in plan:
        if not cand.installed:
            skipped.append(f"{cand.name}: its library is not installed")
            continue
        if not cand.parity_ok:
            skipped.append(f"{cand.name}: its artifact failed the parity check at export")
            continue
        t0 = time.perf_counter()
        try:
            be = _create(bundle, cand.name, threads)
        except BackendUnavailableError as exc:
            skipped.append(f"{cand.name}: {exc}")
            continue
        others = [c for c in plan if c is not cand and c.installed and c.parity_ok]
        reason = "auto: lowest load time + " + f"{AUTO_HORIZON_WINDOWS} windows × latency: {cand.describe()}"
        if others:
            reason += "; next: " + "; ".join(c.describe() for c in others[:2])
        return be, BackendChoice("auto", be.name, reason, tuple(plan), tuple(skipped), time.perf_counter() - t0)
    raise BackendUnavailableError("no backend could run this bundle: " + "; ".join(skipped))


def create_backend(bundle: Bundle, name: str = "auto", threads: int | None = None) -> Backend:
    """Create backend ``name`` for ``bundle``; ``"auto"``: see :func:`choose_backend`."""
    return choose_backend(bundle, name, threads)[0]
