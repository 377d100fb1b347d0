"""The two training losses: ECG–report contrastive (gathered across DDP ranks) and the query BCE."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["contrastive_loss", "query_bce_loss", "gather_features", "SAME_REPORT_MODES"]

#: How pairs whose reports are the same (same group id) are treated by :func:`contrastive_loss`.
SAME_REPORT_MODES = ("mask", "positive", "negative")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B, …) from every rank (equal B per rank) **with gradient**: the backward pass
    sends each rank the gradient of every rank's loss with respect to its own rows
    (:func:`torch.distributed.nn.functional.all_gather`), so DDP's gradient average equals the
    single-process gradient of the full-batch loss."""
    if not _distributed():
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; it is the documented one
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()))


def _gather_ids(ids: torch.Tensor) -> torch.Tensor:
    if not _distributed():
        return ids
    parts = [torch.zeros_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


def contrastive_loss(
    ecg: torch.Tensor,
    text: torch.Tensor,
    *,
    temperature: float,
    gather: bool = True,
    groups: torch.Tensor | None = None,
    same_report: str = "mask",
) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised ECG and report embeddings (B, D).

    With ``gather`` every rank scores its local samples against the whole global batch, gathered with
    gradient (:func:`gather_features`); targets are the local samples' global positions, and the loss is
    the mean over local rows, so the DDP average over ranks is the full-batch loss.

    ``groups`` (B,) int64: samples with equal ids have the same report (or the same entity set). With
    ``same_report="mask"`` such pairs are removed from each other's negatives; ``"positive"`` makes
    them positives (the target spreads evenly over the group); ``"negative"`` ignores ``groups`` (plain
    CLIP, where identical reports fight each other).
    """
    if same_report not in SAME_REPORT_MODES:
        raise ValueError(f"same_report must be one of {SAME_REPORT_MODES}, not {same_report!r}")
    if gather and _distributed():
        all_ecg, all_text = gather_features(ecg), gather_features(text)
        offset = dist.get_rank() * ecg.shape[0]
        all_groups = _gather_ids(groups) if groups is not None else None
    else:
        all_ecg, all_text, offset, all_groups = ecg, text, 0, groups
    b = ecg.shape[0]
    target = torch.arange(b, device=ecg.device) + offset
    logits_e = ecg.float() @ all_text.float().t() / temperature
    logits_t = text.float() @ all_ecg.float().t() / temperature
    if groups is None or all_groups is None or same_report == "negative":
        return 0.5 * (F.cross_entropy(logits_e, target) + F.cross_entropy(logits_t, target))
    same = groups.view(-1, 1) == all_groups.view(1, -1)  # (B, N) pairs with the same report
    own = F.one_hot(target, all_groups.shape[0]).bool()
    if same_report == "mask":
        drop = same & ~own
        logits_e = logits_e.masked_fill(drop, float("-inf"))
        logits_t = logits_t.masked_fill(drop, float("-inf"))
        return 0.5 * (F.cross_entropy(logits_e, target) + F.cross_entropy(logits_t, target))
    soft = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits_e, soft) + F.cross_entropy(logits_t, soft))


def query_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the cardiac-query logits (B, E) against the entity labels (B, E)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
