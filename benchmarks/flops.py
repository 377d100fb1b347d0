"""Floating-point operations per window, computed analytically from the model config (no torch).

Convention (the one of ``torch.utils.flop_counter.FlopCounterMode``): a matrix product of (M×K)·(K×N)
costs 2·M·N·K FLOPs; bias adds, normalisation, softmax and activations are not counted (they are a few
percent of the total and memory-bound). A test cross-checks these formulas against FlopCounterMode.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmerl_edge._config import ModelConfig

__all__ = ["FlopBreakdown", "kmerl_flops", "merl_baseline_flops"]


@dataclass(frozen=True)
class FlopBreakdown:
    patch_embed: int
    encoder: int
    query_head: int

    @property
    def total(self) -> int:
        return self.patch_embed + self.encoder + self.query_head

    @property
    def gflop(self) -> float:
        return self.total / 1e9


def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def _attention(nq: int, nk: int, width: int, *, kv_proj: bool = True) -> int:
    """q, k, v, out projections and the two attention products (summed over heads: heads × head_dim = width)."""
    f = _mm(nq, width, width) * 2  # q and out
    if kv_proj:
        f += _mm(nk, width, width) * 2  # k and v
    f += _mm(nq, width, nk)  # Q·Kᵀ
    f += _mm(nq, nk, width)  # softmax(QKᵀ)·V
    return f


def kmerl_flops(cfg: ModelConfig, n_leads: int, n_queries: int, *, batch: int = 1) -> FlopBreakdown:
    """FLOPs of :class:`kmerl_edge._model.DeviceGraph` for ``batch`` windows of ``n_leads`` leads and
    ``n_queries`` precomputed query vectors (the text projection is not on the device)."""
    if n_leads < 1 or n_queries < 1 or batch < 1:
        raise ValueError("n_leads, n_queries and batch must be >= 1")
    w = cfg.width
    n = n_leads * cfg.tokens_per_lead
    patch = _mm(n, cfg.patch_len, w)
    block = _attention(n, n, w) + _mm(n, w, cfg.mlp_dim) + _mm(n, cfg.mlp_dim, w)
    q = n_queries
    layer = _attention(q, n, w) + _mm(q, w, cfg.query_mlp_dim) + _mm(q, cfg.query_mlp_dim, w)
    if cfg.query_self_attention:
        layer += _attention(q, q, w)
    head = cfg.query_layers * layer + _mm(q, w, 1)
    return FlopBreakdown(batch * patch, batch * cfg.depth * block, batch * head)


def merl_baseline_flops(
    *,
    n_leads: int = 12,
    n_samples: int = 5000,
    patch: int = 50,
    width: int = 192,
    depth: int = 12,
    mlp_dim: int = 768,
    proj_dim: int = 256,
    n_queries: int = 11,
    batch: int = 1,
) -> FlopBreakdown:
    """FLOPs of :class:`benchmarks.merl_baseline.MerlViTBaseline`: the Conv1d patch embedding always sees
    all ``n_leads`` (zero-filled) leads; zero-shot = projection of the pooled token + dot with the class
    text embeddings (``n_queries``)."""
    t = n_samples // patch
    embed = _mm(t, n_leads * patch, width)
    block = _attention(t, t, width) + _mm(t, width, mlp_dim) + _mm(t, mlp_dim, width)
    head = _mm(1, width, proj_dim) + _mm(1, proj_dim, n_queries)
    return FlopBreakdown(batch * embed, batch * depth * block, batch * head)
