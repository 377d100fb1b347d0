"""TensorRT engine builder (Jetson / GPU machines): fp16 from the fp32 ONNX, int8 from the QDQ ONNX.

TensorRT does not install from PyPI on every platform (on Jetson it ships with JetPack), so ``tensorrt``
is imported only inside :func:`build_engine`. One optimisation profile per lead count (1..max_leads) gives
each lead count its own tuned kernels; the runtime backend selects the profile by lead count.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmerl_edge._errors import ConfigError, ExportError, MissingExtraError

__all__ = ["EngineConfig", "profile_shapes", "build_engine", "engine_file_name"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineConfig:
    """What :func:`build_engine` builds.

    - ``precision``: ``"fp16"`` (build from ``model.onnx``, fp16 kernels allowed) or ``"int8"`` (build
      from the int8 QDQ ONNX: explicit quantization, fp16 allowed for the non-quantized ops);
    - ``max_leads``: one optimisation profile per lead count 1..max_leads (``per_lead_profiles``), or a
      single profile spanning them;
    - ``batch``: (min, opt, max) batch size of every profile; ``n_queries``: the bundle's query count (the
      profile's opt/max; min 1); ``max_queries`` leaves room for label sets added after the build.
    """

    precision: str = "fp16"
    max_leads: int = 3
    n_samples: int = 5000
    width: int = 64
    n_queries: int = 11
    max_queries: int = 64
    batch: tuple[int, int, int] = (1, 1, 8)
    per_lead_profiles: bool = True
    workspace_mb: int = 512

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "int8"):
            raise ConfigError("precision must be fp16 or int8")
        if not 1 <= self.max_leads <= 12:
            raise ConfigError("max_leads must be within 1..12")
        b0, b1, b2 = self.batch
        if not 1 <= b0 <= b1 <= b2:
            raise ConfigError(f"batch (min, opt, max) must be increasing and ≥ 1, got {self.batch}")
        if not 1 <= self.n_queries <= self.max_queries:
            raise ConfigError("need 1 ≤ n_queries ≤ max_queries")


def profile_shapes(cfg: EngineConfig) -> list[dict[str, tuple[Shape, Shape, Shape]]]:
    """The optimisation profiles: a list of {input name: (min shape, opt shape, max shape)}.

    With ``per_lead_profiles`` profile ``k-1`` serves exactly ``k`` leads; otherwise one profile serves
    1..max_leads with opt at max_leads.
    """
    b0, b1, b2 = cfg.batch
    q = (1, cfg.n_queries, cfg.max_queries)

    def prof(lmin: int, lopt: int, lmax: int) -> dict[str, tuple[Shape, Shape, Shape]]:
        return {
            "signal": ((b0, lmin, cfg.n_samples), (b1, lopt, cfg.n_samples), (b2, lmax, cfg.n_samples)),
            "lead_ids": ((lmin,), (lopt,), (lmax,)),
            "queries": ((q[0], cfg.width), (q[1], cfg.width), (q[2], cfg.width)),
        }

    if cfg.per_lead_profiles:
        return [prof(k, k, k) for k in range(1, cfg.max_leads + 1)]
    return [prof(1, cfg.max_leads, cfg.max_leads)]


def engine_file_name(precision: str) -> str:
    return f"model.{precision}.engine"


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise MissingExtraError(
            "tensorrt is not installed: it ships with JetPack on Jetson and with NVIDIA's TensorRT wheels/"
            "containers on GPU machines (see README 'TensorRT'); build the engine there"
        ) from exc
    return trt


def build_engine(onnx_path: str | Path, out_path: str | Path, cfg: EngineConfig) -> Path:
    """Parse ``onnx_path`` and build a serialized TensorRT engine at ``out_path`` (atomically)."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = Path(onnx_path).read_bytes()
    if not parser.parse(data):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {Path(onnx_path).name}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    config.set_flag(trt.BuilderFlag.FP16)
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes
    for shapes in profile_shapes(cfg):
        prof = builder.create_optimization_profile()
        for name, (mn, opt, mx) in shapes.items():
            prof.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(prof)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build a {cfg.precision} engine from {Path(onnx_path).name}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(serialized))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
