"""kmerl-bench: the analytic FLOP formulas against torch's FlopCounterMode, and the MERL baseline."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.flops import kmerl_flops, merl_baseline_flops  # noqa: E402
from kmerl_edge._config import get_config  # noqa: E402
from kmerl_edge._model import DeviceGraph, create_model  # noqa: E402


def _count(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("self_attention", [False, True])
@pytest.mark.parametrize("n_leads,batch", [(1, 1), (3, 2)])
def test_kmerl_flops_match_flop_counter(self_attention, n_leads, batch):
    cfg = get_config("kmerl-test-micro", n_samples=1000, depth=2, query_layers=2, query_self_attention=self_attention)
    g = DeviceGraph(create_model(cfg)).eval()
    q = 7
    counted = _count(lambda: g(torch.randn(batch, n_leads, 1000), torch.arange(n_leads), torch.randn(q, cfg.width)))
    assert kmerl_flops(cfg, n_leads, q, batch=batch).total == counted


def test_kmerl_flops_by_hand():
    # 1 lead, 10 tokens of 100 samples, width 32, depth 1, 1 query layer, 2 queries, MLPs 64.
    cfg = get_config("kmerl-test-micro", n_samples=1000)
    n, w, q = 10, 32, 2
    patch = 2 * n * 100 * w
    block = 4 * 2 * n * w * w + 2 * 2 * n * n * w + 2 * 2 * n * w * 64
    head = 2 * 2 * q * w * w + 2 * 2 * n * w * w + 2 * 2 * q * n * w + 2 * 2 * q * w * 64 + 2 * q * w
    f = kmerl_flops(cfg, 1, q)
    assert (f.patch_embed, f.encoder, f.query_head) == (patch, block, head)
    assert f.gflop == pytest.approx((patch + block + head) / 1e9)
    with pytest.raises(ValueError):
        kmerl_flops(cfg, 0, q)


def test_baseline_flops_match_flop_counter():
    from benchmarks.merl_baseline import MerlViTBaseline

    m = MerlViTBaseline(n_samples=1000, depth=2, n_queries=5).eval()
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel is not counted by FlopCounterMode
        counted = _count(lambda: m(torch.randn(1, 12, 1000)))
    assert merl_baseline_flops(n_samples=1000, depth=2, n_queries=5).total == counted


def test_baseline_is_merl_vit_tiny_layout():
    from benchmarks.merl_baseline import MerlViTBaseline

    m = MerlViTBaseline(n_queries=11).eval()
    assert isinstance(m.patch_embed, torch.nn.Conv1d)
    assert (m.patch_embed.in_channels, m.patch_embed.out_channels) == (12, 192)
    assert m.patch_embed.kernel_size == (50,) and m.patch_embed.stride == (50,)
    assert len(m.blocks) == 12 and m.blocks[0].attn.num_heads == 3
    assert m.blocks[0].mlp[0].out_features == 768 and m.pos_embed.shape == (1, 100, 192)
    with torch.inference_mode():
        assert m(torch.zeros(1, 12, 5000)).shape == (1, 11)
    # 12-lead cost whatever the patch records: ~1.18 GFLOP per window
    assert merl_baseline_flops().gflop == pytest.approx(1.177, abs=1e-3)


def test_zero_fill_places_leads_by_name_and_zeros_the_rest():
    from benchmarks.merl_baseline import MerlViTBaseline, zero_fill

    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 2, 5000)).astype(np.float32)
    out = zero_fill(w, ["V2", "I"])  # any order, by name
    assert out.shape == (2, 12, 5000) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 7], w[:, 0])  # V2 is index 7 of LEADS
    np.testing.assert_array_equal(out[:, 0], w[:, 1])
    others = [i for i in range(12) if i not in (0, 7)]
    assert not out[:, others].any()
    # the baseline sees exactly a 12-lead input whose missing leads are zero
    full = np.zeros((2, 12, 5000), np.float32)
    full[:, 0], full[:, 7] = w[:, 1], w[:, 0]
    m = MerlViTBaseline(n_queries=3).eval()
    with torch.inference_mode():
        np.testing.assert_allclose(m(torch.from_numpy(out)).numpy(), m(torch.from_numpy(full)).numpy(), rtol=0, atol=0)
    with pytest.raises(ValueError):
        zero_fill(w, ["I"])
