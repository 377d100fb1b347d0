"""Parity metrics and the failing-parity path (named error, no partial bundle)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from export import ExportConfig, ParityConfig, ParityError, check_parity, sqnr_db, top1_agreement
from export._data import load_windows_npz, sample_lead_subset
from kmerl_edge import KmerlError

FIXTURE = Path(__file__).parent / "fixtures" / "export" / "ptbxl_windows.npz"


def test_sqnr_and_top1() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 11)).astype(np.float32)
    assert sqnr_db(ref, ref) == float("inf")
    noisy = ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    assert 35 < sqnr_db(ref, noisy) < 45
    assert top1_agreement(ref, ref, [slice(0, 5), slice(5, 11)]) == 1.0
    assert top1_agreement(ref, -ref, [slice(0, 5)]) < 0.2


def test_check_parity_bounds() -> None:
    ref = np.linspace(-3, 3, 22, dtype=np.float32).reshape(2, 11)
    cfg = ParityConfig()
    ok = check_parity(ref, ref + 5e-5, precision="fp32", leads=("I",), groups=[slice(0, 11)], config=cfg)
    bad = check_parity(ref, ref + 5e-4, precision="fp32", leads=("I",), groups=[slice(0, 11)], config=cfg)
    assert ok.ok and not bad.ok
    q = check_parity(ref, ref * 1.01, precision="int8", leads=("I", "II"), groups=[slice(0, 11)], config=cfg)
    assert q.ok and q.sqnr_db == pytest.approx(40.0, abs=0.1)
    with pytest.raises(ParityError):
        check_parity(ref, ref[:1], precision="fp32", leads=("I",), groups=[slice(0, 11)], config=cfg)
    assert issubclass(ParityError, KmerlError)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ExportConfig(backends=("coreml",))
    with pytest.raises(ValueError):
        ExportConfig(onnx_int8="float8")
    two = ExportConfig(max_leads=2)  # parity/latency lead sets are trimmed to the device's lead count
    assert two.parity.lead_sets == (("I",), ("I", "II"))
    assert two.to_dict()["max_leads"] == 2
    with pytest.raises(ValueError):
        ExportConfig(max_leads=1, parity=ParityConfig(lead_sets=(("I", "II"),)))


def test_lead_subsets_stay_within_max_leads() -> None:
    rng = np.random.default_rng(0)
    sizes = {len(sample_lead_subset(rng, 3)) for _ in range(200)}
    assert sizes == {1, 2, 3}


def test_fixture_is_real_ptbxl() -> None:
    d = load_windows_npz(FIXTURE)
    assert d.windows.shape == (8, 12, 5000) and d.label_set == "ptbxl_superclass"
    assert np.allclose(d.windows.mean(-1), 0, atol=0.05) and np.allclose(d.windows.std(-1), 1, atol=0.05)
    assert set(d.folds.tolist()) >= {10}


class _HashedText:
    """A deterministic stand-in text encoder (keeps this error-path test fast; the pipeline test uses
    the real all-MiniLM-L6-v2)."""

    dim = 384
    spec = "hashed-test"

    def encode(self, texts: list[str]):  # type: ignore[no-untyped-def]
        import hashlib

        import torch

        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little"))
            .standard_normal(self.dim)
            for t in texts
        ]
        return torch.from_numpy(np.stack(rows).astype(np.float32))


def test_failing_parity_raises_and_writes_nothing(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from export import DistillConfig, export_bundle
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    cfg = ExportConfig(
        student="kmerl-test-micro",
        distill=DistillConfig(steps=1, batch_size=2),
        backends=("onnxruntime-int8",),
        onnx_int8="dynamic",
        qdq_for_tensorrt=False,
        latency_iters=2,
        latency_warmup=1,
        eval_auc=False,
    )
    cfg = replace(cfg, parity=replace(cfg.parity, int8_min_sqnr_db=200.0))  # int8 can never reach this
    out = tmp_path / "never"
    with pytest.raises(ParityError, match=r"model\.int8\.onnx \(int8\): 1 lead\(s\): SQNR"):
        export_bundle(create_model("kmerl-test-micro"), out, cfg, data=FIXTURE, text_encoder=_HashedText())
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging leftovers either


def test_tie_tolerance_forgives_only_reference_near_ties():
    import numpy as np

    from export import ParityConfig, check_parity, top1_agreement

    ref = np.array([[1.000, 0.999, -2.0], [2.0, 0.0, -1.0]], dtype=np.float32)
    out = np.array([[0.998, 1.001, -2.0], [0.0, 2.0, -1.0]], dtype=np.float32)  # a near-tie flip, a real flip
    g = [slice(0, 3)]
    assert top1_agreement(ref, out, g) == 0.0
    assert top1_agreement(ref, out, g, tie_tolerance=0.01) == 0.5  # the real flip still counts
    strict = check_parity(ref, out, precision="int8", leads=("I",), groups=g, config=ParityConfig())
    tol = check_parity(ref, out, precision="int8", leads=("I",), groups=g,
                       config=ParityConfig(top1_tie_tolerance=0.01, int8_min_sqnr_db=0.0))
    assert not strict.ok and strict.top1_agreement_strict == 0.0
    assert tol.top1_agreement == 0.5 and tol.top1_agreement_strict == 0.0 and tol.tie_tolerance == 0.01


def test_int8_keep_fp32_finds_the_patch_embedding_matmul(tmp_path):
    """The static int8 paths keep the patch embedding in fp32; the lookup must find exactly that MatMul."""
    import onnx
    import torch

    from export._onnx import export_onnx, nodes_in_scopes
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    p = export_onnx(create_model("kmerl-test-micro").eval(), tmp_path / "m.onnx", max_leads=3)
    found = nodes_in_scopes(p, ["encoder.patch_embed"])
    assert len(found) == 1
    node = next(n for n in onnx.load(str(p)).graph.node if n.name == found[0])
    assert node.op_type in ("MatMul", "Gemm")
    assert nodes_in_scopes(p, []) == []
    assert len(nodes_in_scopes(p, ["encoder.blocks.0.attn"])) == 6  # q, k, v, out + QK^T and AV


def test_distillation_only_uses_the_leads_a_window_has():
    """A 2-lead Holter window (other rows zero) is never shown to teacher or student with absent leads."""
    import numpy as np
    import torch

    from export import DistillConfig, EcgWindows
    from export._distill import distill_student
    from kmerl_edge._model import create_model

    torch.manual_seed(0)
    teacher, student = create_model("kmerl-test-micro"), create_model("kmerl-test-micro")
    rng = np.random.default_rng(0)
    w = np.zeros((6, 12, 5000), np.float32)
    w[:3] = rng.standard_normal((3, 12, 5000))  # 12-lead records
    w[3:, :2] = rng.standard_normal((3, 2, 5000))  # leads I and II only
    seen: dict[str, list[tuple[int, ...]]] = {"teacher": [], "student": []}
    zero_lead_rows = {"teacher": 0, "student": 0}

    def spy(name, enc):
        orig = enc.forward

        def forward(x, lead_ids, *a, **k):
            ids = lead_ids if lead_ids.dim() == 2 else lead_ids.unsqueeze(0).expand(x.shape[0], -1)
            for row_x, row_ids in zip(x, ids):
                seen[name].append(tuple(int(i) for i in row_ids))
                zero_lead_rows[name] += int(bool((row_x.abs().amax(-1) == 0).any()))
            return orig(x, lead_ids, *a, **k)

        enc.forward = forward

    spy("teacher", teacher.encoder)
    spy("student", student.encoder)
    emb = {"rhythm": torch.randn(3, teacher.cfg.text_dim)}
    cfg = DistillConfig(steps=40, batch_size=6)
    distill_student(teacher, student, emb, EcgWindows(w), max_leads=3, config=cfg)
    # teacher targets: the 12-lead rows on all 12 leads, the Holter rows on I and II only
    assert set(seen["teacher"]) == {tuple(range(12)), (0, 1)}
    # no row given to either model holds a lead its recording lacks; Holter rows were used
    assert zero_lead_rows == {"teacher": 0, "student": 0}
    assert any(ids in {(0,), (1,), (0, 1)} for ids in seen["student"])
    assert all(1 <= len(ids) <= 3 for ids in seen["student"])


def test_distill_config_rejects_an_unknown_teacher_lead_mode():
    from export import DistillConfig

    with pytest.raises(ValueError, match="teacher_leads"):
        DistillConfig(teacher_leads="most")
