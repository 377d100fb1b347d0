"""The lead-aware model: lead identity not row position, kept-token dropping, registry, config shapes."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kmerl_edge as ke  # noqa: E402
from kmerl_edge._config import expected_weight_shapes  # noqa: E402
from kmerl_edge._model import DeviceGraph  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ke.create_model("kmerl-test-micro").eval()


def test_registry_has_the_paper_encoder_and_a_student():
    assert {"kmerl-vit-tiny", "kmerl-student-s"} <= set(ke.list_models())
    cfg = ke.get_config("kmerl-vit-tiny")
    assert (cfg.width, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.patch_len) == (192, 12, 3, 768, 100)
    assert (cfg.query_layers, cfg.query_heads) == (4, 4)
    with pytest.raises(ke.UnknownModelError, match="kmerl-vit-tiny"):
        ke.get_config("vit-huge")


@pytest.mark.parametrize("name", ["kmerl-vit-tiny", "kmerl-student-s", "kmerl-test-micro"])
def test_config_derived_shapes_match_the_torch_model(name):
    m = ke.create_model(name)
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert got == expected_weight_shapes(m.cfg)
    assert ke.ModelConfig.from_dict(json.loads(json.dumps(m.cfg.to_dict()))) == m.cfg


def test_tokens_are_100_sample_patches_per_lead(model):
    x = torch.randn(2, 3, 5000)
    tokens, pooled, mask = model.encoder(x, torch.tensor([0, 1, 7]))
    assert tokens.shape == (2, 150, 32) and pooled.shape == (2, 32) and mask is None


def test_lead_embedding_is_indexed_by_lead_id_not_row():
    torch.manual_seed(1)
    model = ke.create_model("kmerl-test-micro").eval()
    with torch.no_grad():
        model.encoder.lead_embed.normal_(0.0, 1.0)  # distinct leads, as after training
    x = torch.randn(1, 3, 5000)
    enc = model.encoder
    with torch.no_grad():
        a = enc(x, torch.tensor([0, 1, 7]))[0]
        b = enc(x[:, [2, 0, 1]], torch.tensor([7, 0, 1]))[0]  # same leads, other rows
        c = enc(x, torch.tensor([1, 0, 7]))[0]  # rows relabelled: different leads
    # tokens are lead-major: b's rows are (V2, I, II); bring them back to (I, II, V2)
    b = torch.cat([b[:, 50:100], b[:, 100:150], b[:, 0:50]], dim=1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert (a - c).abs().max() > 0.1


def test_any_number_of_leads(model):
    g = DeviceGraph(model)
    q = torch.randn(3, 32)
    with torch.no_grad():
        for n in (1, 2, 3, 6, 12):
            assert g(torch.randn(2, n, 5000), torch.arange(n), q).shape == (2, 3)


def test_kept_tokens_equal_running_on_the_subset(model):
    """Dropping tokens via keep_idx gives the same result as never having those leads."""
    x = torch.randn(1, 12, 5000)
    ids = torch.arange(12)
    keep = torch.cat([torch.arange(0, 50), torch.arange(350, 400)]).unsqueeze(0)  # leads I and V2
    with torch.no_grad():
        _, pooled_keep, _ = model.encoder(x, ids, keep_idx=keep, keep_mask=torch.ones(1, 100, dtype=torch.bool))
        _, pooled_sub, _ = model.encoder(x[:, [0, 7]], torch.tensor([0, 7]))
    torch.testing.assert_close(pooled_keep, pooled_sub, atol=1e-5, rtol=0)


def test_padded_keep_mask_ignores_padding(model):
    x = torch.randn(2, 2, 5000)
    ids = torch.tensor([0, 1])
    keep = torch.stack([torch.arange(100), torch.cat([torch.arange(50), torch.zeros(50, dtype=torch.long)])])
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, 50:] = False
    with torch.no_grad():
        _, pooled, _ = model.encoder(x, ids, keep_idx=keep, keep_mask=mask)
        _, ref, _ = model.encoder(x[1:, :1], ids[:1])
    torch.testing.assert_close(pooled[1:], ref, atol=1e-5, rtol=0)


def test_query_scores_do_not_depend_on_other_queries(model):
    g = DeviceGraph(model)
    x = torch.randn(1, 2, 5000)
    q = torch.randn(5, 32)
    with torch.no_grad():
        all5 = g(x, torch.tensor([0, 1]), q)
        two = g(x, torch.tensor([0, 1]), q[[1, 3]])
    torch.testing.assert_close(all5[:, [1, 3]], two, atol=1e-6, rtol=0)


def test_attention_is_explicit_no_sdpa():
    import inspect

    from kmerl_edge import _model

    src = inspect.getsource(_model)
    assert "scaled_dot_product_attention(" not in src and "MultiheadAttention(" not in src
    _ = np  # keep numpy import used


def test_create_model_from_a_config_honours_overrides():
    import kmerl_edge as ke
    from kmerl_edge._model import create_model

    cfg = ke.get_config("kmerl-test-micro")
    m = create_model(cfg, width=64, heads=2, query_heads=2)
    assert m.cfg.width == 64 and m.cfg.name == cfg.name
    with pytest.raises(ke.ConfigError, match="unknown model config field"):
        create_model(cfg, widht=64)
    with pytest.raises(ke.ConfigError, match="divisible"):
        ke.get_config("kmerl-test-micro", width=33)
