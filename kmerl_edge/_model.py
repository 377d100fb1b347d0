"""The K-MERL model in PyTorch: lead-aware encoder, cardiac query network, contrastive projections.

Layout inside the model: ``signal`` is (batch, n_leads, n_samples) float32, ``lead_ids`` is (n_leads,)
int64 (or (batch, n_leads)) — indices into :data:`kmerl_edge.LEADS`. Each lead is cut into
``n_samples / patch_len`` tokens of 100 samples; a token is ``Linear(100→width)`` plus the lead's
embedding (indexed by lead id, never by row position) plus a temporal embedding shared by all leads.

Attention is written out as separate q/k/v/out ``Linear`` layers and an explicit softmax(QKᵀ)V: packed
multi-head attention and ``scaled_dot_product_attention`` export badly to ExecuTorch/XNNPACK and the
legacy ONNX exporter bakes the lead count into packed attention.

This module imports torch at import time; import it lazily (``kmerl_edge.create_model`` does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._config import ModelConfig, get_config, with_overrides

__all__ = [
    "Attention",
    "LeadAwareEncoder",
    "CardiacQueryHead",
    "KMERLModel",
    "DeviceGraph",
    "LinearProbe",
    "create_model",
]

#: a query row is scored by the linear head when it equals one of the head's query vectors within this
#: (max absolute difference; distinct classes' query vectors differ by far more, which the exporter checks)
PROBE_MATCH_TOLERANCE = 1e-3


class Attention(nn.Module):
    """Multi-head attention with explicit q/k/v/out projections (export-friendly)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, kv: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b, nq, d = x.shape
        nk = kv.shape[1]
        q = self.q(x).reshape(b, nq, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(kv).reshape(b, nk, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(kv).reshape(b, nk, self.heads, self.head_dim).transpose(1, 2)
        att = torch.matmul(q * self.scale, k.transpose(-2, -1))
        if key_mask is not None:
            att = att.masked_fill(~key_mask[:, None, None, :], -1e4)
        att = torch.softmax(att, dim=-1)
        out = torch.matmul(att, v).transpose(1, 2).reshape(b, nq, d)
        return self.out(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim if out is None else out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, key_mask)
        return x + self.mlp(self.norm2(x))


class LeadAwareEncoder(nn.Module):
    """Per-lead patch tokens + lead-id embedding + shared temporal embedding → transformer.

    ``forward(signal, lead_ids, keep_idx=None, keep_mask=None)`` returns ``(tokens, pooled, token_mask)``:

    - ``tokens`` (B, N, width) after the final norm; ``N = n_leads × tokens_per_lead`` or ``K`` if kept
      indices are given;
    - ``pooled`` (B, width): the mean of the valid tokens;
    - ``token_mask`` (B, N) bool, or None when every token is valid.

    ``keep_idx`` (B, K) int64 indexes the flattened (lead-major) token sequence: only those tokens enter
    the transformer, so masked leads and segments cost no compute. ``keep_mask`` (B, K) marks which of
    the K are real (rows with fewer kept tokens are padded).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.Linear(cfg.patch_len, w)
        self.lead_embed = nn.Parameter(torch.zeros(cfg.n_leads, w))
        self.time_embed = nn.Parameter(torch.zeros(cfg.tokens_per_lead, w))
        self.blocks = nn.ModuleList([Block(w, cfg.heads, cfg.mlp_dim) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(w, eps=1e-6)
        nn.init.trunc_normal_(self.lead_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)

    def embed(self, signal: Tensor, lead_ids: Tensor) -> Tensor:
        """Token embeddings (B, n_leads × T, width), lead-major."""
        b, n_leads, n = signal.shape
        t = self.cfg.tokens_per_lead
        x = self.patch_embed(signal.reshape(b, n_leads, t, self.cfg.patch_len))
        lead = self.lead_embed[lead_ids]  # (L, w) or (B, L, w)
        if lead.dim() == 2:
            lead = lead.unsqueeze(0)
        x = x + lead.unsqueeze(2) + self.time_embed.unsqueeze(0).unsqueeze(0)
        return x.reshape(b, n_leads * t, self.cfg.width)

    def forward(
        self,
        signal: Tensor,
        lead_ids: Tensor,
        keep_idx: Tensor | None = None,
        keep_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        x = self.embed(signal, lead_ids)
        if keep_idx is not None:
            x = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        for blk in self.blocks:
            x = blk(x, keep_mask)
        x = self.norm(x)
        if keep_mask is None:
            pooled = x.mean(dim=1)
        else:
            m = keep_mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return x, pooled, keep_mask


class QueryLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.width
        self.self_attention = cfg.query_self_attention
        if self.self_attention:
            self.norm_self = nn.LayerNorm(w, eps=1e-6)
            self.self_attn = Attention(w, cfg.query_heads)
        self.norm_q = nn.LayerNorm(w, eps=1e-6)
        self.norm_kv = nn.LayerNorm(w, eps=1e-6)
        self.cross_attn = Attention(w, cfg.query_heads)
        self.norm_mlp = nn.LayerNorm(w, eps=1e-6)
        self.mlp = Mlp(w, cfg.query_mlp_dim)

    def forward(self, q: Tensor, tokens: Tensor, key_mask: Tensor | None) -> Tensor:
        if self.self_attention:
            h = self.norm_self(q)
            q = q + self.self_attn(h, h)
        q = q + self.cross_attn(self.norm_q(q), self.norm_kv(tokens), key_mask)
        return q + self.mlp(self.norm_mlp(q))


class CardiacQueryHead(nn.Module):
    """The cardiac query network: queries attend to ECG tokens through N decoder layers → one logit each.

    ``queries`` (Q, width) are text embeddings of class or entity names already projected by
    :attr:`KMERLModel.query_proj`; a bundle stores them precomputed so a device runs no text encoder.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([QueryLayer(cfg) for _ in range(cfg.query_layers)])
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.classifier = nn.Linear(cfg.width, 1)

    def forward(self, queries: Tensor, tokens: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b = tokens.shape[0]
        q = queries.unsqueeze(0).expand(b, -1, -1) if queries.dim() == 2 else queries
        for layer in self.layers:
            q = layer(q, tokens, key_mask)
        return self.classifier(self.norm(q)).squeeze(-1)


class ProjectionHead(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, out)
        self.fc2 = nn.Linear(out, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LinearProbe(nn.Module):
    """A supervised linear head on the mean-pooled encoder tokens: ``weight`` (C, width), ``bias`` (C,),
    and ``queries`` (C, width), the projected query vectors of the C classes it scores — the device graph
    finds those classes' rows among its ``queries`` input by these vectors, not by row position."""

    queries: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, w = cfg.probe_classes, cfg.width
        self.mode = cfg.probe_mode
        self.weight = nn.Parameter(torch.zeros(c, w))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("queries", torch.zeros(c, w))

    def forward(self, logits: Tensor, pooled: Tensor, queries: Tensor) -> Tensor:
        """``logits`` (B, Q) of the query network for ``queries`` (Q, width) → the same logits with the
        rows whose query vector is one of :attr:`queries` scored by the head (every other row unchanged)."""
        head = pooled @ self.weight.t() + self.bias  # (B, C)
        diff = (queries.unsqueeze(1) - self.queries.unsqueeze(0)).abs().amax(dim=-1)  # (Q, C)
        hit = diff <= PROBE_MATCH_TOLERANCE
        covered = hit.any(dim=-1)  # (Q,)
        which = hit.to(torch.int64).argmax(dim=-1)  # (Q,): the head's class for each covered row
        mapped = head.index_select(1, which)  # (B, Q)
        if self.mode == "mean":  # logit of the mean of the two probabilities, without log(0)
            p = 0.5 * (torch.sigmoid(logits) + torch.sigmoid(mapped))
            q = 0.5 * (torch.sigmoid(-logits) + torch.sigmoid(-mapped))
            mapped = torch.log(p.clamp_min(1e-30)) - torch.log(q.clamp_min(1e-30))
        return torch.where(covered.unsqueeze(0), mapped, logits)


class KMERLModel(nn.Module):
    """Encoder + cardiac query head + query projection + the contrastive projection heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = LeadAwareEncoder(cfg)
        self.query_head = CardiacQueryHead(cfg)
        self.query_proj = nn.Linear(cfg.text_dim, cfg.width)
        self.ecg_proj = ProjectionHead(cfg.width, cfg.proj_dim)
        self.text_proj: nn.Module = (
            ProjectionHead(cfg.text_dim, cfg.proj_dim) if cfg.text_proj_layers == 2
            else nn.Linear(cfg.text_dim, cfg.proj_dim)
        )
        self.apply(self._init)
        # the optional supervised head (fitted after training, see export._probe); zero until loaded
        self.probe: LinearProbe | None = LinearProbe(cfg) if cfg.probe_classes else None

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def project_queries(self, text_embeddings: Tensor) -> Tensor:
        """Text embeddings (Q, text_dim) → query vectors (Q, width) for the query head."""
        return self.query_proj(text_embeddings)

    def forward(self, signal: Tensor, lead_ids: Tensor, queries: Tensor) -> Tensor:
        """Logits (B, Q) of the projected ``queries`` for ``signal`` (B, L, n_samples)."""
        tokens, _, mask = self.encoder(signal, lead_ids)
        return self.query_head(queries, tokens, mask)

    def ecg_embedding(self, pooled: Tensor) -> Tensor:
        """L2-normalised ECG embedding in the contrastive space."""
        return F.normalize(self.ecg_proj(pooled), dim=-1)

    def text_embedding(self, text: Tensor) -> Tensor:
        """L2-normalised text embedding in the contrastive space."""
        return F.normalize(self.text_proj(text), dim=-1)


class DeviceGraph(nn.Module):
    """What runs on a device: ``(signal, lead_ids, queries) -> logits``. No text input, no projections.

    With a :class:`LinearProbe` (``cfg.probe_classes > 0``) the rows of its classes come from the head on
    the mean of the tokens of the leads given; the graph still has one output."""

    def __init__(self, model: KMERLModel) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.query_head = model.query_head
        self.probe = model.probe

    def forward(self, signal: Tensor, lead_ids: Tensor, queries: Tensor) -> Tensor:
        tokens, pooled, _ = self.encoder(signal, lead_ids)
        logits = self.query_head(queries, tokens, None)
        if self.probe is None:
            return logits
        return self.probe(logits, pooled, queries)


def create_model(name: str | ModelConfig, **overrides: object) -> KMERLModel:
    """Build a randomly initialised model by registry name (see :func:`kmerl_edge.list_models`) or from a
    config; ``overrides`` replace config fields in both cases (``create_model(cfg, width=64)``)."""
    cfg = with_overrides(name, **overrides) if isinstance(name, ModelConfig) else get_config(name, **overrides)
    return KMERLModel(cfg)
