"""ONNX lowering of the device graph with the dynamo exporter (dynamic batch, lead and query axes)."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kmerl_edge._model import KMERLModel

__all__ = [
    "export_onnx",
    "quantize_onnx_dynamic",
    "quantize_onnx_static",
    "ort_session",
    "ONNX_INPUTS",
    "ONNX_OUTPUT",
]

ONNX_INPUTS = ("signal", "lead_ids", "queries")
ONNX_OUTPUT = "logits"


def export_onnx(model: KMERLModel, out_path: str | Path, *, max_leads: int = 12, opset: int = 18) -> Path:
    """Export ``DeviceGraph(model)`` to ``out_path``: inputs ``signal`` (batch, leads, n_samples) float32,
    ``lead_ids`` (leads,) int64, ``queries`` (queries, width) float32; output ``logits`` (batch, queries).

    Uses ``torch.onnx.export(dynamo=True)``; the file is written atomically.
    """
    import torch

    from kmerl_edge._model import DeviceGraph

    cfg = model.cfg
    graph = DeviceGraph(model).eval()
    n_leads = min(3, max_leads)
    example = (
        torch.randn(2, n_leads, cfg.n_samples),
        torch.arange(n_leads, dtype=torch.int64),
        torch.randn(5, cfg.width),
    )
    batch = torch.export.Dim("batch", min=1, max=4096)
    # a Dim with max 1..2 is specialised by torch.export; the graph itself is lead-count agnostic
    leads = torch.export.Dim("leads", min=1, max=max(max_leads, 3))
    queries = torch.export.Dim("queries", min=1, max=4096)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    level = logging.getLogger("torch").level
    try:
        logging.getLogger("torch").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                graph,
                example,
                dynamo=True,
                input_names=list(ONNX_INPUTS),
                output_names=[ONNX_OUTPUT],
                dynamic_shapes={"signal": {0: batch, 1: leads}, "lead_ids": {0: leads}, "queries": {0: queries}},
                opset_version=opset,
                optimize=True,
                verbose=False,
                external_data=False,
            )
        assert prog is not None
        prog.save(tmp)
        os.replace(tmp, out)
    finally:
        logging.getLogger("torch").setLevel(level)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def ort_session(path: str | Path, threads: int = 1) -> object:
    """A CPU ONNX Runtime session configured as :class:`kmerl_edge._backends.OnnxRuntimeBackend` does."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _preprocessed(src: Path, tmpdir: Path) -> Path:
    """``quant_pre_process`` (no symbolic shape inference: it fails on dynamo exports) with the dynamo
    exporter's ``value_info`` cleared (stale shapes there break the quantizers)."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    m = onnx.load(str(src))
    del m.graph.value_info[:]
    clean = tmpdir / "clean.onnx"
    onnx.save(m, str(clean))
    pre = tmpdir / "pre.onnx"
    quant_pre_process(str(clean), str(pre), skip_symbolic_shape=True)
    m = onnx.load(str(pre))
    del m.graph.value_info[:]
    onnx.save(m, str(pre))
    return pre


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def quantize_onnx_dynamic(
    src: str | Path, out_path: str | Path, *, per_channel: bool = False, keep_fp32: Sequence[str] = ()
) -> Path:
    """int8 weights, dynamically quantized activations, for ``MatMul``/``Gemm`` only (ONNX Runtime CPU).

    On x86 CPUs this uses the u8s8 integer GEMMs; it keeps every non-linear op in fp32, and the MatMuls of
    the module scopes in ``keep_fp32`` (see :func:`nodes_in_scopes`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out_path)
    tmp = _atomic_target(out)
    try:
        with tempfile.TemporaryDirectory() as td:
            pre = _preprocessed(Path(src), Path(td))
            quantize_dynamic(
                str(pre),
                str(tmp),
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=nodes_in_scopes(pre, keep_fp32),
                extra_options={"MatMulConstBOnly": True},
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


class _Calibration:
    """ONNX Runtime ``CalibrationDataReader`` over real windows."""

    def __init__(self, feeds: Sequence[Mapping[str, Any]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> Mapping[str, Any] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - used by some calibrators
        pass


def nodes_in_scopes(path: str | Path, scopes: Sequence[str]) -> list[str]:
    """Names of the MatMul/Gemm nodes exported from the modules named in ``scopes`` (or their children)."""
    import onnx

    if not scopes:
        return []
    out = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        meta = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
        if any(f"'{s}'" in meta or f"'{s}." in meta for s in scopes):
            out.append(node.name)
    return out


def quantize_onnx_static(
    src: str | Path,
    out_path: str | Path,
    calibration: Sequence[Mapping[str, Any]],
    *,
    target: str = "cpu",
    keep_fp32: Sequence[str] = (),
) -> Path:
    """Static int8 QDQ ONNX calibrated on real windows (``calibration``: ONNX feeds of real inputs).

    ``target="tensorrt"``: symmetric int8 activations and per-channel symmetric weights, Q/DQ around
    ``MatMul``/``Gemm`` only, which is what TensorRT's explicit-quantization builder fuses into int8
    kernels. ``target="cpu"``: uint8 activations, per-channel int8 weights (ONNX Runtime CPU QDQ).
    ``keep_fp32``: module scopes (e.g. ``"encoder.patch_embed"``) whose MatMuls stay fp32, found through the
    dynamo exporter's ``pkg.torch.onnx.name_scopes`` node metadata.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    out = Path(out_path)
    tmp = _atomic_target(out)
    trt = target == "tensorrt"
    try:
        with tempfile.TemporaryDirectory() as td:
            pre = _preprocessed(Path(src), Path(td))
            exclude = nodes_in_scopes(pre, keep_fp32)
            quantize_static(
                str(pre),
                str(tmp),
                _Calibration(calibration),  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=exclude,
                extra_options={
                    "ActivationSymmetric": trt,
                    "WeightSymmetric": True,
                    "MatMulConstBOnly": True,
                    "AddQDQPairToWeight": trt,
                    "DedicatedQDQPair": trt,
                },
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
