"""ExecuTorch lowering of the device graph: ``torch.export`` (dynamic batch, lead and query axes) →
``to_edge_transform_and_lower`` with the XNNPACK partitioner → ``.pte``; int8 through ``XNNPACKQuantizer``
+ ``prepare_pt2e``/``convert_pt2e`` calibrated on real windows.

Never run constant propagation after ``convert_pt2e``: it folds the int8 weights back to fp32.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from kmerl_edge._model import KMERLModel

__all__ = ["export_pte", "PTE_MAX_BATCH", "PTE_MAX_QUERIES"]

from kmerl_edge._errors import ConfigError

PTE_MAX_BATCH = 64
PTE_MAX_QUERIES = 512


def _quiet() -> Any:
    import contextlib

    @contextlib.contextmanager
    def cm() -> Any:
        loggers = [logging.getLogger(n) for n in ("torch", "executorch", "root", "")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)

    return cm()


def export_pte(
    model: KMERLModel,
    out_path: str | Path,
    *,
    max_leads: int = 3,
    quantize: str | None = None,
    calibration: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
    keep_fp32: Sequence[str] = (),
) -> Path:
    """Lower ``DeviceGraph(model)`` to an XNNPACK ``.pte`` at ``out_path`` (written atomically).

    Inputs: ``signal`` (batch ≤ 64, leads ≤ ``max_leads``, n_samples) float32, ``lead_ids`` (leads,) int64,
    ``queries`` (Q ≤ 512, width) float32. ``quantize``: None (fp32), ``"static"`` (int8 weights per channel
    and int8 activations whose ranges come from ``calibration``: (signal, lead_ids, queries) real inputs) or
    ``"dynamic"`` (int8 weights, activation scales computed at run time).
    """
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from kmerl_edge._model import DeviceGraph

    cfg = model.cfg
    graph = DeviceGraph(model).eval()
    example = (
        torch.randn(2, min(2, max_leads), cfg.n_samples),
        torch.arange(min(2, max_leads), dtype=torch.int64),
        torch.randn(5, cfg.width),
    )
    batch = torch.export.Dim("batch", min=1, max=PTE_MAX_BATCH)
    leads = torch.export.Dim("leads", min=1, max=max(max_leads, 2))
    queries = torch.export.Dim("queries", min=1, max=PTE_MAX_QUERIES)
    dyn = {"signal": {0: batch, 1: leads}, "lead_ids": {0: leads}, "queries": {0: queries}}
    with _quiet(), torch.no_grad():
        ep = torch.export.export(graph, example, dynamic_shapes=dyn, strict=False)
        if quantize is not None:
            ep = _quantize(ep, example, dyn, quantize, calibration, keep_fp32)
        edge = to_edge_transform_and_lower(
            ep,
            partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False) if quantize else None,
        )
        prog = edge.to_executorch()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            prog.write_to_file(f)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _quantize(
    ep: Any,
    example: tuple[Any, ...],
    dyn: dict[str, Any],
    mode: str,
    calibration: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    keep_fp32: Sequence[str] = (),
) -> Any:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if mode not in ("static", "dynamic"):
        raise ConfigError(f"quantize must be 'static' or 'dynamic', not {mode!r}")
    if mode == "dynamic":
        import executorch.kernels.quantized  # noqa: F401  (registers the dynamic-activation kernels)
    elif not calibration:
        raise ConfigError("static int8 needs calibration windows")
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=(mode == "dynamic"))
    )
    if keep_fp32:  # e.g. the patch embedding, whose input is the raw normalised signal

        def outside_kept_modules(node: Any) -> bool:
            stack = node.meta.get("nn_module_stack") or {}
            names = [str(v[0]) for v in stack.values()]
            return not any(n == s or n.startswith(s + ".") for n in names for s in keep_fp32)

        quantizer.set_filter_function(outside_kept_modules)
    prepared = prepare_pt2e(ep.module(), quantizer)
    samples = list(calibration) or [tuple(t.numpy() for t in example)]
    for sig, lid, q in samples:
        prepared(
            torch.from_numpy(np.ascontiguousarray(sig, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(lid, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)),
        )
    converted = convert_pt2e(prepared, fold_quantize=True)
    # re-export the converted module; no constant propagation (it would fold weights back to fp32)
    return torch.export.export(converted, example, dynamic_shapes=dyn, strict=False)
