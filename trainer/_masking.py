"""Dynamic lead masking and lead-independent segment masking, as token indices to *keep*.

The encoder receives ``keep_idx`` (B, K) into the flattened lead-major token sequence of
``12 × tokens_per_lead`` tokens and ``keep_mask`` (B, K); masked tokens never enter the transformer.
Signals are stored in the canonical lead order, so lead row ``r`` has lead id ``r``.
"""

from __future__ import annotations

import torch

from ._config import MaskingConfig

__all__ = ["sample_token_keep"]


def _n_keep(n_present: int, cfg: MaskingConfig, g: torch.Generator, batch_choice: int | None = None) -> int:
    if n_present <= 0:
        return 0
    if cfg.lead_mode == "none":
        return n_present
    if n_present == 12:
        if cfg.lead_mode == "fixed":
            return 12 - cfg.fixed_mask_leads
        if batch_choice is not None:
            return 12 - batch_choice
        choices = cfg.mask_lead_choices
        k = int(torch.randint(len(choices), (1,), generator=g))
        return 12 - choices[k]
    lo, hi = cfg.few_lead_keep
    if cfg.lead_mode == "fixed":
        return min(n_present, hi)
    k = lo + int(torch.randint(hi - lo + 1, (1,), generator=g))
    return min(n_present, k)


def sample_token_keep(
    present: torch.Tensor, *, tokens_per_lead: int, cfg: MaskingConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose the tokens each sample keeps.

    ``present`` (B, 12) bool marks the leads a record has. Returns ``keep_idx`` (B, K) int64 (padded with
    0 where ``keep_mask`` is False), ``keep_mask`` (B, K) bool and ``kept_leads`` (B, 12) bool. Each kept
    lead keeps ``tokens_per_lead - round(segment_ratio × tokens_per_lead)`` of its tokens, chosen
    independently of the other leads. With ``cfg.lead_count_per == "batch"`` every 12-lead record of the batch keeps the same number of leads
    (one draw per batch). All randomness comes from ``generator``.
    """
    b, n_leads = present.shape
    t = tokens_per_lead
    n_drop = int(round(cfg.segment_ratio * t))
    n_tok = t - n_drop
    rows: list[torch.Tensor] = []
    kept = torch.zeros(b, n_leads, dtype=torch.bool)
    batch_choice = None
    if cfg.lead_count_per == "batch" and cfg.lead_mode == "dynamic":
        batch_choice = cfg.mask_lead_choices[int(torch.randint(len(cfg.mask_lead_choices), (1,), generator=generator))]
    for i in range(b):
        leads = torch.nonzero(present[i], as_tuple=False).flatten()
        k = _n_keep(int(leads.numel()), cfg, generator, batch_choice)
        chosen = leads[torch.randperm(leads.numel(), generator=generator)[:k]].sort().values
        kept[i, chosen] = True
        idx = []
        for lead in chosen.tolist():
            toks = torch.randperm(t, generator=generator)[:n_tok].sort().values
            idx.append(lead * t + toks)
        rows.append(torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long))
    kmax = max(1, max(int(r.numel()) for r in rows))
    keep_idx = torch.zeros(b, kmax, dtype=torch.long)
    keep_mask = torch.zeros(b, kmax, dtype=torch.bool)
    for i, r in enumerate(rows):
        keep_idx[i, : r.numel()] = r
        keep_mask[i, : r.numel()] = True
    return keep_idx, keep_mask, kept
