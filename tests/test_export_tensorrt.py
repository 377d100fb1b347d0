"""TensorRT: profile/config logic and lazy imports here; engine build and run only on a GPU machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from export import EngineConfig, profile_shapes
from kmerl_edge._backend_tensorrt import select_profile
from kmerl_edge._errors import BackendUnavailableError, MissingExtraError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
FIXTURE = Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz"


def test_one_profile_per_lead_count() -> None:
    cfg = EngineConfig(precision="int8", max_leads=3, width=64, n_queries=11, batch=(1, 1, 8))
    profs = profile_shapes(cfg)
    assert len(profs) == 3
    for k, p in enumerate(profs, start=1):
        assert p["signal"] == ((1, k, 5000), (1, k, 5000), (8, k, 5000))
        assert p["lead_ids"] == ((k,), (k,), (k,))
        assert p["queries"] == ((1, 64), (11, 64), (64, 64))


def test_single_spanning_profile() -> None:
    (p,) = profile_shapes(EngineConfig(max_leads=3, per_lead_profiles=False))
    assert p["signal"][0][1] == 1 and p["signal"][1][1] == 3 and p["signal"][2][1] == 3


def test_engine_config_validation() -> None:
    for bad in (dict(precision="int4"), dict(batch=(2, 1, 8)), dict(n_queries=100, max_queries=64)):
        with pytest.raises(ValueError):
            EngineConfig(**bad)  # type: ignore[arg-type]


def test_select_profile() -> None:
    assert select_profile([[1, 1], [2, 2], [3, 3]], 2) == 1
    assert select_profile([[1, 3]], 3) == 0
    with pytest.raises(BackendUnavailableError):
        select_profile([[1, 1], [2, 2], [3, 3]], 4)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_build_engine_without_tensorrt_names_the_fix(tmp_path: Path) -> None:
    from export import build_engine

    with pytest.raises(MissingExtraError, match="JetPack"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", EngineConfig())


def test_backend_refuses_bundle_without_engine() -> None:
    import kmerl_edge

    b = kmerl_edge.load_bundle(Path(__file__).parent / "fixtures" / "test_bundle")
    with pytest.raises(BackendUnavailableError, match="no TensorRT"):
        kmerl_edge.load(b.path, backend="tensorrt")
    assert kmerl_edge.load(b.path).backend.name != "tensorrt"  # auto moves on


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and a CUDA GPU")
def test_engines_build_and_match_torch(tmp_path: Path) -> None:  # pragma: no cover - GPU machines only
    import torch

    import kmerl_edge
    from export import DistillConfig, ExportConfig, export_bundle
    from export._data import load_windows_npz
    from export.cli import build_tensorrt_engines
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    cfg = ExportConfig(student="kmerl-test-micro", distill=DistillConfig(steps=2, batch_size=2),
                       backends=("onnxruntime",), latency_iters=5, latency_warmup=1)
    b = export_bundle(create_model("kmerl-test-micro"), tmp_path / "b", cfg, data=FIXTURE)
    build_tensorrt_engines(b, precisions=("fp16", "int8"), data=FIXTURE, latency_iters=20)
    data = load_windows_npz(FIXTURE)
    ref = kmerl_edge.load(b, backend="torch")
    for backend in ("tensorrt-fp16", "tensorrt-int8", "tensorrt"):
        clf = kmerl_edge.load(b, backend=backend)
        for leads in (["I"], ["I", "II"], ["I", "II", "V2"]):
            x, lid = data.select(leads)
            want, got = ref.backend.run(x, lid), clf.backend.run(x, lid)
            err = np.sum((got - want) ** 2) / np.sum(want**2)
            assert 10 * np.log10(1 / err) >= 20
