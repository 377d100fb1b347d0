"""A MERL-style baseline: MERL's ViT-tiny ECG encoder layout, eager PyTorch fp32.

Conv1d(12, 192, kernel_size=50, stride=50) over all 12 leads → 100 tokens + learned position embedding
→ 12 pre-norm transformer blocks (width 192, 3 heads, MLP 768, ``nn.MultiheadAttention`` + GELU MLP, as
timm's ViT) → LayerNorm → mean pool → linear projection into the text space → dot product with the
class text embeddings (zero-shot). It has one input layout, 12 leads, so a wearable with fewer leads
serves it by zero-filling the missing ones (:func:`zero_fill`): the cost is that of 12 leads whatever
the patch records. Random weights: only its speed is measured.

Imports torch at import time; import this module lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from kmerl_edge._leads import LEADS, canonical_leads

__all__ = ["MerlViTBaseline", "zero_fill", "BASELINE_NAME"]

BASELINE_NAME = "merl-vit-tiny (eager fp32, zero-filled 12 leads)"


def zero_fill(windows: np.ndarray, leads: Sequence[str], n_leads: int = 12) -> np.ndarray:
    """(B, L, S) windows of the named ``leads`` → (B, 12, S) in :data:`kmerl_edge.LEADS` order, zeros for
    every lead the device does not record."""
    names = canonical_leads(leads)
    w = np.asarray(windows, dtype=np.float32)
    if w.ndim != 3 or w.shape[1] != len(names):
        raise ValueError(f"windows must be (batch, {len(names)}, samples), got {w.shape}")
    out = np.zeros((w.shape[0], n_leads, w.shape[2]), dtype=np.float32)
    out[:, [LEADS.index(x) for x in names]] = w
    return out


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MerlViTBaseline(nn.Module):
    """``forward(signal (B, 12, 5000)) -> logits (B, Q)`` against ``class_embeddings`` (Q, proj_dim)."""

    def __init__(
        self,
        *,
        n_leads: int = 12,
        n_samples: int = 5000,
        patch: int = 50,
        width: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_dim: int = 768,
        proj_dim: int = 256,
        n_queries: int = 11,
    ) -> None:
        super().__init__()
        self.n_leads = n_leads
        self.patch_embed = nn.Conv1d(n_leads, width, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, n_samples // patch, width) * 0.02)
        self.blocks = nn.ModuleList([_Block(width, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, proj_dim)
        self.class_embeddings: Tensor
        self.register_buffer("class_embeddings", nn.functional.normalize(torch.randn(n_queries, proj_dim), dim=-1))

    def forward(self, signal: Tensor) -> Tensor:
        x = self.patch_embed(signal).transpose(1, 2) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        z = nn.functional.normalize(self.proj(self.norm(x).mean(dim=1)), dim=-1)
        return z @ self.class_embeddings.T
