"""TensorRT backend (Jetson / NVIDIA GPUs) for the ``model.{fp16,int8}.engine`` files of a bundle.

``tensorrt`` and ``torch`` (CUDA tensors hold the inputs and outputs) are imported only when the backend
is created; without them it raises :class:`BackendUnavailableError` so ``backend="auto"`` moves on.
Registered as ``"tensorrt"`` (int8 engine if the bundle has one, else fp16), ``"tensorrt-int8"`` and
``"tensorrt-fp16"``. Engines carry one optimisation profile per lead count (see ``profiles`` in the
artifact's manifest entry); the backend keeps one execution context per profile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backends import Backend, register_backend
from ._bundle import Artifact, Bundle
from ._errors import BackendUnavailableError

__all__ = ["TensorRTBackend", "select_profile"]


def select_profile(profile_leads: list[list[int]], n_leads: int) -> int:
    """Index of the first profile whose [min, max] lead range holds ``n_leads``."""
    for i, (lo, hi) in enumerate(profile_leads):
        if lo <= n_leads <= hi:
            return i
    raise BackendUnavailableError(f"the TensorRT engine has no optimisation profile for {n_leads} lead(s)")


def _pick(bundle: Bundle, precision: str | None) -> Artifact:
    arts = bundle.artifacts_for("tensorrt")
    arts = [a for a in arts if a.file.endswith(".engine")]
    order = [precision] if precision else ["int8", "fp16", "fp32"]
    for p in order:
        for a in arts:
            if a.precision == p:
                return a
    raise BackendUnavailableError(
        f"bundle {bundle.path.name} has no TensorRT {precision or ''} engine (build one with "
        "`kmerl-export tensorrt --bundle B` on a TensorRT machine)"
    )


class TensorRTBackend:
    """Runs a serialized TensorRT engine: inputs ``signal``, ``lead_ids``, ``queries``; output ``logits``."""

    def __init__(self, bundle: Bundle, threads: int | None = None, precision: str | None = None) -> None:
        art = _pick(bundle, precision)
        try:
            import tensorrt as trt  # type: ignore[import-not-found]
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                "tensorrt (JetPack / NVIDIA TensorRT) and torch with CUDA are needed for the TensorRT backend"
            ) from exc
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the TensorRT backend needs a CUDA device")
        self.name = "tensorrt" if precision is None else f"tensorrt-{precision}"
        self.artifact = art.file
        self._torch = torch
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self.engine = self._runtime.deserialize_cuda_engine(bundle.read(art.file))  # verified bytes
        if self.engine is None:
            raise BackendUnavailableError(f"{art.file} cannot be deserialized by TensorRT {trt.__version__}")
        self.device = torch.device("cuda")
        self.stream = torch.cuda.Stream()
        prof = art.extra.get("profiles_leads") or [[k, k] for k in range(1, int(art.extra.get("max_leads", bundle.max_leads)) + 1)]
        self.profile_leads: list[list[int]] = [[int(a), int(b)] for a, b in prof]
        self.contexts: list[Any] = []
        for i in range(self.engine.num_optimization_profiles):
            ctx = self.engine.create_execution_context()
            ctx.set_optimization_profile_async(i, self.stream.cuda_stream)
            self.contexts.append(ctx)
        self.stream.synchronize()
        q, _ = bundle.all_queries()
        self.queries = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)).to(self.device)
        self._dtypes = {
            self.engine.get_tensor_name(i): self.engine.get_tensor_dtype(self.engine.get_tensor_name(i))
            for i in range(self.engine.num_io_tensors)
        }

    def _torch_dtype(self, name: str) -> Any:
        trt, torch = self._trt, self._torch
        return {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
        }[self._dtypes[name]]

    def run(self, signal: np.ndarray, lead_ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)).to(self.device)
        lid = torch.from_numpy(np.ascontiguousarray(lead_ids)).to(self.device, self._torch_dtype("lead_ids"))
        q = self.queries.to(self._torch_dtype("queries"))
        x = x.to(self._torch_dtype("signal"))
        ctx = self.contexts[select_profile(self.profile_leads, int(lid.shape[0]))]
        out = torch.empty((x.shape[0], q.shape[0]), dtype=self._torch_dtype("logits"), device=self.device)
        for name, t in (("signal", x), ("lead_ids", lid), ("queries", q)):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        ctx.set_tensor_address("logits", out.data_ptr())
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise BackendUnavailableError("TensorRT execution failed")
        self.stream.synchronize()
        return out.float().cpu().numpy()


@register_backend("tensorrt")
def _trt_best(bundle: Bundle, threads: int | None) -> Backend:
    return TensorRTBackend(bundle, threads, None)


@register_backend("tensorrt-int8")
def _trt8(bundle: Bundle, threads: int | None) -> Backend:
    return TensorRTBackend(bundle, threads, "int8")


@register_backend("tensorrt-fp16")
def _trt16(bundle: Bundle, threads: int | None) -> Backend:
    return TensorRTBackend(bundle, threads, "fp16")
