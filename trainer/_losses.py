"""The two training losses: ECG–report contrastive (gathered across DDP ranks) and the query BCE."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["contrastive_loss", "query_bce_loss", "gather_features"]


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B, D) from every rank (equal B per rank); the local slice keeps its gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def contrastive_loss(
    ecg: torch.Tensor, text: torch.Tensor, *, temperature: float, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised ECG and report embeddings (B, D).

    With ``gather`` every rank scores its local samples against the whole global batch (the
    open_clip scheme); targets are the local samples' global positions.
    """
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        all_ecg, all_text = gather_features(ecg), gather_features(text)
        offset = dist.get_rank() * ecg.shape[0]
    else:
        all_ecg, all_text, offset = ecg, text, 0
    target = torch.arange(ecg.shape[0], device=ecg.device) + offset
    logits_e = ecg.float() @ all_text.float().t() / temperature
    logits_t = text.float() @ all_ecg.float().t() / temperature
    return 0.5 * (F.cross_entropy(logits_e, target) + F.cross_entropy(logits_t, target))


def query_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the cardiac-query logits (B, E) against the entity labels (B, E)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
