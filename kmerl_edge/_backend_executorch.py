"""ExecuTorch backend (``.pte`` lowered to XNNPACK), through ``executorch.runtime``.

Registered as ``"executorch"`` (fp32 ``model.pte``) and ``"executorch-int8"`` (``model.int8.pte``). The
bundle's query vectors are bound at creation; ``run(signal, lead_ids) -> logits (B, Q)``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._backends import Backend, _one_artifact, register_backend
from ._bundle import Bundle
from ._errors import BackendUnavailableError

__all__ = ["ExecuTorchBackend"]


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what the ExecuTorch runtime and torchao print straight to fd 2 while they load (cpuinfo
    probes, optional-kernel notices). Failures still surface as Python exceptions. A probe process (see
    :mod:`kmerl_edge._probe`) keeps stderr, so a native crash leaves its message."""
    if os.environ.get("KMERL_EDGE_PROBE_CHILD"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class ExecuTorchBackend:
    """Runs a ``.pte`` program's ``forward(signal, lead_ids, queries)`` with the ExecuTorch runtime."""

    def __init__(self, bundle: Bundle, threads: int | None = None, precision: str = "fp32") -> None:
        art = _one_artifact(bundle, "executorch", precision)
        q, _ = bundle.all_queries()
        self._init(
            bundle.read(art.file), q, threads,
            name="executorch" if precision == "fp32" else f"executorch-{precision}", artifact=art.file,
            max_batch=int(art.extra.get("max_batch", 64)),
            quantized_kernels=bool(art.extra.get("needs_quantized_kernels")), n_samples=bundle.model_config.n_samples,
        )

    @classmethod
    def from_bytes(
        cls, program: bytes, queries: np.ndarray, threads: int | None = None, *, name: str = "executorch",
        artifact: str = "model.pte", max_batch: int = 64, quantized_kernels: bool = False, n_samples: int = 5000,
    ) -> ExecuTorchBackend:
        """The same backend over ``.pte`` bytes (the exporter measures parity and latency through this)."""
        self = cls.__new__(cls)
        self._init(program, queries, threads, name=name, artifact=artifact, max_batch=max_batch,
                   quantized_kernels=quantized_kernels, n_samples=n_samples)
        return self

    def _init(self, program: bytes, queries: np.ndarray, threads: int | None, *, name: str, artifact: str,
              max_batch: int, quantized_kernels: bool, n_samples: int) -> None:
        try:
            with _quiet_native_stderr():
                import torch
                from executorch.runtime import Runtime
        except ImportError as exc:
            raise BackendUnavailableError(
                "executorch is not installed: pip install 'kmerl-edge[executorch]'"
            ) from exc
        self.name = name
        self.artifact = artifact
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        self.max_batch = max_batch
        with _quiet_native_stderr():
            if quantized_kernels:
                try:
                    import executorch.kernels.quantized  # noqa: F401
                except ImportError as exc:  # pragma: no cover - depends on the executorch build
                    raise BackendUnavailableError(f"{artifact} needs executorch.kernels.quantized") from exc
            runtime = Runtime.get()
            try:  # the verified bytes, never the path: what was hashed is what runs
                self._program = runtime.load_program(program)
                self._method: Any = self._program.load_method("forward")
            except (RuntimeError, ValueError) as exc:
                raise BackendUnavailableError(f"ExecuTorch cannot load {artifact}: {exc}") from None
            # one warm-up call: thread pools and kernels initialise here
            self.run(np.zeros((1, 1, n_samples), np.float32), np.zeros(1, np.int64))

    def run(self, signal: np.ndarray, lead_ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = np.ascontiguousarray(signal, dtype=np.float32)
        lid = torch.from_numpy(np.ascontiguousarray(lead_ids, dtype=np.int64))
        outs = []
        for i in range(0, x.shape[0], self.max_batch):  # the program's batch axis is bounded
            res = self._method.execute([torch.from_numpy(x[i : i + self.max_batch]), lid, self.queries])
            outs.append(np.asarray(res[0].numpy(), dtype=np.float32).copy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs)


@register_backend("executorch")
def _et(bundle: Bundle, threads: int | None) -> Backend:
    return ExecuTorchBackend(bundle, threads, "fp32")


@register_backend("executorch-int8")
def _et8(bundle: Bundle, threads: int | None) -> Backend:
    return ExecuTorchBackend(bundle, threads, "int8")
