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
    probes, optional-kernel notices). Failures still surface as Python exceptions."""
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
        try:
            with _quiet_native_stderr():
                import torch
                from executorch.runtime import Runtime
        except ImportError as exc:
            raise BackendUnavailableError(
                "executorch is not installed: pip install 'kmerl-edge[executorch]'"
            ) from exc
        art = _one_artifact(bundle, "executorch", precision)
        self.name = "executorch" if precision == "fp32" else f"executorch-{precision}"
        self.artifact = art.file
        if threads:
            torch.set_num_threads(int(threads))
        q, _ = bundle.all_queries()
        self._torch = torch
        self.queries = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
        self.max_batch = int(art.extra.get("max_batch", 64))
        with _quiet_native_stderr():
            if art.extra.get("needs_quantized_kernels"):
                try:
                    import executorch.kernels.quantized  # noqa: F401
                except ImportError as exc:  # pragma: no cover - depends on the executorch build
                    raise BackendUnavailableError(f"{art.file} needs executorch.kernels.quantized") from exc
            runtime = Runtime.get()
            self._program = runtime.load_program(str(bundle.path / art.file))
            self._method: Any = self._program.load_method("forward")
            n = bundle.model_config.n_samples  # one warm-up call: thread pools and kernels initialise here
            self.run(np.zeros((1, 1, n), np.float32), np.zeros(1, np.int64))

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
