"""Masking statistics: kept leads 1-3, 25 % of each kept lead's tokens dropped, nothing of a masked lead
reaches the encoder."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from kmerl_edge import create_model
from trainer._config import MaskingConfig
from trainer._errors import TrainConfigError
from trainer._masking import sample_token_keep

T = 50


def _sample(present: torch.Tensor, cfg: MaskingConfig, seed: int = 0):
    return sample_token_keep(present, tokens_per_lead=T, cfg=cfg, generator=torch.Generator().manual_seed(seed))


def test_dynamic_lead_masking_statistics() -> None:
    present = torch.ones(3000, 12, dtype=torch.bool)
    present[2000:, 2:] = False  # 2-lead records
    keep_idx, keep_mask, kept = _sample(present, MaskingConfig())
    n_kept = kept.sum(1)
    full = Counter(n_kept[:2000].tolist())
    assert set(full) == {1, 2, 3}  # 12 - {11, 10, 9}
    for k in (1, 2, 3):
        assert abs(full[k] / 2000 - 1 / 3) < 0.05
    assert set(n_kept[2000:].tolist()) == {1, 2}  # keep 1-3 of the 2 present
    assert not (kept & ~present).any()
    # per kept lead exactly 50 - round(0.25 * 50) = 38 tokens, all of that lead, no duplicates
    for b in range(0, 3000, 97):
        idx = keep_idx[b][keep_mask[b]]
        assert idx.unique().numel() == idx.numel()
        leads = Counter((idx // T).tolist())
        assert set(leads) == set(torch.nonzero(kept[b]).flatten().tolist())
        assert all(v == 38 for v in leads.values())
    # segments are chosen independently per lead: two kept leads rarely keep the same token positions
    b = int(torch.nonzero(n_kept[:2000] == 3)[0])
    idx = keep_idx[b][keep_mask[b]]
    pos = [set((idx[idx // T == lead] % T).tolist()) for lead in torch.nonzero(kept[b]).flatten().tolist()]
    assert not (pos[0] == pos[1] == pos[2])


def test_ratios_and_modes_are_configurable() -> None:
    present = torch.ones(200, 12, dtype=torch.bool)
    _, m, kept = _sample(present, MaskingConfig(lead_mode="fixed", fixed_mask_leads=8, segment_ratio=0.5))
    assert (kept.sum(1) == 4).all() and (m.sum(1) == 4 * 25).all()
    _, m, kept = _sample(present, MaskingConfig(lead_mode="none", segment_ratio=0.0))
    assert kept.all() and (m.sum(1) == 12 * T).all()
    with pytest.raises(TrainConfigError):
        MaskingConfig(lead_mode="random")


def test_masked_tokens_do_not_reach_the_encoder() -> None:
    torch.manual_seed(0)
    model = create_model("kmerl-test-micro").eval()
    present = torch.ones(4, 12, dtype=torch.bool)
    keep_idx, keep_mask, kept = _sample(present, MaskingConfig(), seed=3)
    x = torch.randn(4, 12, 5000)
    ids = torch.arange(12)
    # the encoder sees only K tokens (compute shrinks), and changing masked leads/segments changes nothing
    tokens, pooled, _ = model.encoder(x, ids, keep_idx, keep_mask)
    assert tokens.shape[1] == keep_idx.shape[1] <= 3 * 38
    y = x.clone().reshape(4, 12 * T, 100)
    visible = torch.zeros(4, 12 * T, dtype=torch.bool)
    for b in range(4):
        visible[b, keep_idx[b][keep_mask[b]]] = True
    y[~visible] = torch.randn(int((~visible).sum()), 100) * 100
    tokens2, pooled2, _ = model.encoder(y.reshape(4, 12, 5000), ids, keep_idx, keep_mask)
    torch.testing.assert_close(pooled, pooled2)
    # and a visible token does matter
    y[visible] += 1.0
    _, pooled3, _ = model.encoder(y.reshape(4, 12, 5000), ids, keep_idx, keep_mask)
    assert not torch.allclose(pooled, pooled3)


def test_lead_count_drawn_once_per_batch() -> None:
    cfg = MaskingConfig(mask_lead_choices=(0, 6, 11), lead_count_per="batch")
    present = torch.ones(40, 12, dtype=torch.bool)
    present[30:, 2:] = False  # 2-lead records keep their own 1-2
    counts = set()
    for seed in range(30):
        _, keep_mask, kept = _sample(present, cfg, seed)
        n = kept[:30].sum(1)
        assert n.unique().numel() == 1  # one draw for every 12-lead record of the batch
        counts.add(int(n[0]))
        assert set(kept[30:].sum(1).tolist()) <= {1, 2}
    assert counts == {12, 6, 1}
    with pytest.raises(TrainConfigError, match="lead_count_per"):
        MaskingConfig(lead_count_per="epoch")


def test_cli_overrides_reach_the_masking_config() -> None:
    from trainer._config import get_preset
    from trainer.cli import _overrides

    cfg = get_preset("test", **_overrides(["masking.mask_lead_choices=[0,6,11]", "masking.lead_count_per=batch"]))
    assert cfg.masking.mask_lead_choices == (0, 6, 11) and cfg.masking.lead_count_per == "batch"
