"""End to end: teacher → ``export_bundle`` → bundle with torch, ONNX fp32/int8, QDQ ONNX and ExecuTorch
fp32/int8, each loaded and run by ``kmerl_edge.load`` on real PTB-XL windows (a small fixture) and compared
with the torch fp32 student within the issue's bounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("executorch")
pytest.importorskip("transformers")

import kmerl_edge  # noqa: E402
from export import DistillConfig, ExportConfig, export_bundle, load_windows_npz, sqnr_db  # noqa: E402
from export.cli import main as export_main  # noqa: E402
from kmerl_edge._backends import available_backends  # noqa: E402
from kmerl_edge._errors import LeadError  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz"
LEAD_SETS = [("I",), ("I", "II"), ("I", "II", "V2")]
ALL = ("onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8")
#: CI builds these; ExecuTorch int8 lowering (~30 s more on 2 cores) is in the ``slow`` test below
CI = ("onnxruntime", "onnxruntime-int8", "executorch")


def _export(out: Path, backends: tuple[str, ...]) -> Path:
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    teacher = create_model("kmerl-test-micro")
    cfg = ExportConfig(
        student="kmerl-test-micro",
        max_leads=3,
        distill=DistillConfig(steps=4, batch_size=4, log_every=2),
        backends=backends,
        qdq_for_tensorrt="onnxruntime" in backends,
        latency_iters=10,
        latency_warmup=2,
    )
    return export_bundle(teacher, out, cfg, data=FIXTURE)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("export") / "bundle", CI)


def test_bundle_holds_every_artifact(bundle: Path) -> None:
    b = kmerl_edge.load_bundle(bundle)
    files = set(b.artifacts)
    assert {"weights.safetensors", "queries.safetensors", "model.onnx", "model.int8.onnx", "model.qdq.onnx",
            "model.pte"} <= files
    assert b.manifest["max_leads"] == 3
    assert not b.trained  # random teacher → the card says so
    assert "NOT A TRAINED MODEL" in (bundle / "MODEL_CARD.md").read_text()
    assert set(available_backends(b)) >= {"torch", *CI}
    assert "onnxruntime-qdq-tensorrt" not in available_backends(b)  # the QDQ file is a build input


def test_manifest_records_parity_latency_and_auc(bundle: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    for name in ("model.onnx", "model.int8.onnx", "model.qdq.onnx", "model.pte"):
        a = m["artifacts"][name]
        assert a["parity_ok"] is True
        assert set(a["latency_ms"]) == {"1", "2", "3"} and set(a["parity"]) == {"1", "2", "3"}
        assert all(v > 0 for v in a["latency_ms"].values())
    assert m["metrics"]["onnx_int8_choice"] in ("dynamic", "static")
    auc = m["metrics"]["auc"]
    assert auc["label_set"] == "ptbxl_superclass" and auc["meaningful"] is False
    assert set(auc["teacher"]) == {"12", "1", "2", "3"} and set(auc["student"]) == {"1", "2", "3"}
    assert "onnxruntime-int8_vs_teacher" in auc["change_points"]
    assert "AUC change" in (bundle / "MODEL_CARD.md").read_text()


def _check_backend(bundle: Path, backend: str) -> None:
    data = load_windows_npz(FIXTURE)
    ref = kmerl_edge.load(bundle, backend="torch")
    clf = kmerl_edge.load(bundle, backend=backend)
    assert clf.backend.name == backend
    for leads in LEAD_SETS:
        x, lid = data.select(leads)
        want = ref.backend.run(x, lid)
        got = clf.backend.run(x, lid)
        assert got.shape == want.shape == (len(data), 11)
        if "int8" in backend:
            assert sqnr_db(want, got) >= 20.0
            for g in (slice(0, 5), slice(5, 11)):
                assert (want[:, g].argmax(1) == got[:, g].argmax(1)).mean() >= 0.99
        else:
            assert np.max(np.abs(got - want)) <= 1e-4


@pytest.mark.parametrize("backend", CI)
def test_each_backend_matches_torch_on_real_windows(bundle: Path, backend: str) -> None:
    _check_backend(bundle, backend)


@pytest.mark.slow
def test_executorch_int8_bundle(tmp_path: Path) -> None:
    b = _export(tmp_path / "b8", ("executorch-int8",))
    m = json.loads((b / "manifest.json").read_text())
    assert m["artifacts"]["model.int8.pte"]["parity_ok"] is True
    assert "executorch-int8_vs_teacher" in m["metrics"]["auc"]["change_points"]
    _check_backend(b, "executorch-int8")


def test_predict_through_the_public_api(bundle: Path) -> None:
    rec = load_windows_npz(FIXTURE).windows[0, :2].astype(np.float64)  # 10 s of leads I, II
    for backend in ("onnxruntime-int8", "executorch"):
        pred = kmerl_edge.load(bundle, backend=backend).predict(rec, fs=500.0, leads=["I", "II"])
        assert set(pred.by_label_set) == {"ptbxl_superclass", "rhythm"}
    with pytest.raises(LeadError):
        kmerl_edge.load(bundle, backend="onnxruntime").predict(
            np.zeros((4, 5000)) + np.arange(4)[:, None], fs=500.0, leads=["I", "II", "V1", "V2"]
        )


def test_auto_picks_a_measured_backend(bundle: Path) -> None:
    clf = kmerl_edge.load(bundle)
    assert clf.backend.name in CI


def test_queries_subcommand_adds_a_label_set(bundle: Path, tmp_path: Path) -> None:
    import shutil

    b2 = tmp_path / "b2"
    shutil.copytree(bundle, b2)
    rc = export_main(["queries", "--bundle", str(b2), "--label-set", "extra", "--classes",
                      "left bundle branch block, right bundle branch block"])
    assert rc == 0
    b = kmerl_edge.load_bundle(b2)
    assert b.label_sets["extra"] == ("left bundle branch block", "right bundle branch block")
    x, lid = load_windows_npz(FIXTURE).select(["II"])
    want = kmerl_edge.load(b2, backend="torch").backend.run(x, lid)
    for backend in ("onnxruntime", "executorch"):  # the graphs take queries as input: no re-export
        got = kmerl_edge.load(b2, backend=backend).backend.run(x, lid)
        assert got.shape == (len(x), 13)
        assert np.max(np.abs(got - want)) <= 1e-4


def _export_int8_only(out: Path, fallback: tuple[str, ...]) -> Path:
    """ONNX int8 (dynamic) under a bound only an un-quantized graph meets (SQNR ≥ 90 dB vs torch fp32)."""
    from dataclasses import replace

    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    cfg = ExportConfig(
        student="kmerl-test-micro", max_leads=3, distill=DistillConfig(steps=2, batch_size=4),
        backends=("onnxruntime-int8",), onnx_int8="dynamic", qdq_for_tensorrt=False, latency_iters=3,
        latency_warmup=1, eval_auc=False, int8_fallback_fp32=fallback,
    )
    cfg = replace(cfg, parity=replace(cfg.parity, int8_min_sqnr_db=90.0))
    return export_bundle(create_model("kmerl-test-micro"), out, cfg, data=FIXTURE)


def test_int8_falls_back_to_fp32_modules_when_no_candidate_passes_parity(tmp_path: Path) -> None:
    """No int8 candidate passes → a second round keeps ``int8_fallback_fp32`` in fp32; the manifest says
    which candidate was chosen and what it kept. Without a fallback the export fails and leaves nothing."""
    from export import ParityError

    out = _export_int8_only(tmp_path / "b", ("encoder", "query_head"))
    m = json.loads((out / "manifest.json").read_text())
    cands = m["metrics"]["onnx_int8_candidates"]
    assert cands["dynamic"]["parity_ok"] is False and cands["dynamic"]["kept_fp32"] == []
    fb = "dynamic+fp32:encoder,query_head"
    assert cands[fb]["parity_ok"] is True and cands[fb]["kept_fp32"] == ["encoder", "query_head"]
    assert m["metrics"]["onnx_int8_choice"] == fb
    assert m["artifacts"]["model.int8.onnx"]["kept_fp32"] == ["encoder", "query_head"]
    kmerl_edge.load(out, backend="onnxruntime-int8")  # verified and loadable
    with pytest.raises(ParityError, match="model.int8.onnx"):
        _export_int8_only(tmp_path / "c", ())
    assert not (tmp_path / "c").exists()


def test_no_distillation_with_a_student_of_another_architecture_is_refused(tmp_path: Path) -> None:
    """--distill-steps 0 exports the student as initialised: with an architecture the teacher does not
    share, nothing would train it (a random model that only the quality gate would catch)."""
    from kmerl_edge._errors import ConfigError
    from kmerl_edge._model import create_model

    teacher = create_model("kmerl-test-micro")
    cfg = ExportConfig(student="kmerl-student-xs", max_leads=3, distill=DistillConfig(steps=0),
                       backends=("onnxruntime",), latency_iters=2, latency_warmup=1)
    out = tmp_path / "bundle"
    with pytest.raises(ConfigError, match="shares"):
        export_bundle(teacher, out, cfg, data=FIXTURE)
    assert not out.exists()


def test_the_default_model_build_refuses_that_before_training(tmp_path: Path) -> None:
    from export.default_model import build_default_model
    from kmerl_edge._errors import ConfigError

    with pytest.raises(ConfigError, match="--student kmerl-student-xs"):
        build_default_model(tmp_path / "shared", tmp_path / "work", tmp_path / "out", teacher_model="kmerl-student-xs",
                            distill_steps=0, student="kmerl-student-s")
    assert not (tmp_path / "work").exists()


def test_bad_lead_mask_choices_are_refused_before_the_data_are_read(tmp_path: Path) -> None:
    from export.default_model import build_default_model, main
    from kmerl_edge._errors import KmerlError

    with pytest.raises(KmerlError, match="mask_lead_choices"):
        build_default_model(tmp_path / "shared", tmp_path / "work", tmp_path / "out",
                            teacher_model="kmerl-student-s", distill_steps=0, lead_mask_choices=[12])
    assert not (tmp_path / "work").exists()
    assert main(["--shared", str(tmp_path / "shared"), "--work", str(tmp_path / "work"), "--out",
                 str(tmp_path / "out"), "--teacher-model", "kmerl-student-s", "--distill-steps", "0",
                 "--lead-mask-choices", "0,three"]) == 2
    assert not (tmp_path / "work").exists()
