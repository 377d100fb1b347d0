"""Model configuration and the registry of named models (no torch needed here).

The config names every size; :func:`expected_weight_shapes` derives the exact tensor shapes from it, so
a bundle can be checked against its config on a device that has no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from ._errors import ConfigError, ConfigMismatchError, UnknownModelError

__all__ = ["ModelConfig", "PROBE_MODES", "list_models", "get_config", "expected_weight_shapes", "register_model"]

#: how a supervised linear head's logit enters the rows it scores (see :class:`ModelConfig`)
PROBE_MODES = ("replace", "mean")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a K-MERL model. JSON-serialisable (:meth:`to_dict` / :meth:`from_dict`).

    - ``patch_len`` samples per token (100 at 500 Hz = 0.2 s); ``n_samples`` per lead (5000 = 10 s),
      hence ``n_samples // patch_len`` tokens per lead, each with a shared temporal embedding.
    - ``width``/``depth``/``heads``/``mlp_dim``: the lead-aware transformer encoder.
    - ``query_layers``/``query_heads``/``query_mlp_dim``: the cardiac query network (decoder layers in
      which query vectors attend to the ECG tokens). ``query_self_attention`` adds self-attention among
      queries; it is off by default so that a class's score does not depend on which other classes are
      asked at the same time (label sets can be added to a bundle after export).
    - ``text_dim``: the text encoder's embedding size (384 for all-MiniLM-L6-v2, 768 for Med-CPT);
      ``proj_dim``: the shared ECG-text space of the contrastive loss. Both projections are non-linear
      (Linear → GELU → Linear) as in the paper; ``text_proj_layers=1`` is the single Linear text
      projection of models trained before (a stored config without the key means 1).
    - ``probe_classes``: outputs of the optional supervised linear head on the mean-pooled encoder tokens
      (0: no head, the default). With a head, the device graph scores the rows of ``queries`` that equal
      the head's stored query vectors (one label set's classes, matched by their query vector, not by
      row position) with the head: ``probe_mode`` ``"replace"`` uses the head's logit, ``"mean"`` the
      logit of the mean of the query network's and the head's probabilities. Every other row is the
      query network's logit, bit for bit. A config without a head writes neither key.
    """

    #: fields a stored config may omit (and that :meth:`to_dict` omits when they hold their default)
    optional_fields: ClassVar[tuple[str, ...]] = ("probe_classes", "probe_mode")

    name: str
    patch_len: int = 100
    n_samples: int = 5000
    n_leads: int = 12
    width: int = 192
    depth: int = 12
    heads: int = 3
    mlp_dim: int = 768
    query_layers: int = 4
    query_heads: int = 4
    query_mlp_dim: int = 768
    query_self_attention: bool = False
    text_dim: int = 384
    proj_dim: int = 256
    temperature: float = 0.07
    text_proj_layers: int = 2
    probe_classes: int = 0
    probe_mode: str = "replace"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"ModelConfig.name must be a string, got {self.name!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            low = 0 if f.name == "probe_classes" else 1
            if f.type in ("int", int) and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ConfigError(f"ModelConfig.{f.name} must be a whole number >= {low}, got {v!r}")
        if self.probe_mode not in PROBE_MODES:
            raise ConfigError(f"ModelConfig.probe_mode must be one of {PROBE_MODES}, got {self.probe_mode!r}")
        if not isinstance(self.query_self_attention, bool):
            raise ConfigError(f"ModelConfig.query_self_attention must be true or false, got {self.query_self_attention!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ConfigError(f"ModelConfig.temperature must be a positive number, got {t!r}")
        if self.text_proj_layers not in (1, 2):
            raise ValueError("text_proj_layers must be 1 (legacy linear) or 2 (Linear-GELU-Linear)")
        if self.n_samples % self.patch_len:
            raise ConfigError(f"n_samples ({self.n_samples}) must be a multiple of patch_len ({self.patch_len})")
        if self.width % self.heads or self.width % self.query_heads:
            raise ConfigError(
                f"width ({self.width}) must be divisible by heads ({self.heads}) and query_heads ({self.query_heads})"
            )

    @property
    def tokens_per_lead(self) -> int:
        return self.n_samples // self.patch_len

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.probe_classes == 0:  # no head: the config a runtime without heads reads
            for k in self.optional_fields:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigMismatchError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        d.setdefault("text_proj_layers", 1)  # configs written before the non-linear text projection
        return cls(**d)


_REGISTRY: dict[str, ModelConfig] = {}


def register_model(config: ModelConfig) -> ModelConfig:
    """Add a named config to the registry (used by :func:`kmerl_edge.create_model`)."""
    _REGISTRY[config.name] = config
    return config


# The paper's encoder: ViT-tiny (width 192, depth 12, 3 heads, MLP 768), query network 4 layers × 4 heads.
register_model(ModelConfig(name="kmerl-vit-tiny"))
# Device students: one student serves every subset of up to 3 leads through the lead-id embedding.
register_model(
    ModelConfig(
        name="kmerl-student-s",
        width=64,
        depth=4,
        heads=2,
        mlp_dim=128,
        query_layers=1,
        query_heads=2,
        query_mlp_dim=128,
        proj_dim=128,
    )
)
# The knee of the width × depth sweep (benchmarks/results/sweep): wider and shallower than
# kmerl-student-s, +0.02 mean held-out AUC at 10 epochs over 5 seeds and about 15 % faster.
register_model(
    ModelConfig(
        name="kmerl-student-w96d2",
        width=96,
        depth=2,
        heads=2,
        mlp_dim=192,
        query_layers=1,
        query_heads=2,
        query_mlp_dim=192,
        proj_dim=192,
    )
)
register_model(
    ModelConfig(
        name="kmerl-student-xs",
        width=48,
        depth=2,
        heads=2,
        mlp_dim=96,
        query_layers=1,
        query_heads=2,
        query_mlp_dim=96,
        proj_dim=96,
    )
)
# A tiny config for tests; never shipped.
register_model(
    ModelConfig(
        name="kmerl-test-micro",
        width=32,
        depth=1,
        heads=2,
        mlp_dim=64,
        query_layers=1,
        query_heads=2,
        query_mlp_dim=64,
        proj_dim=32,
    )
)


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The registered config ``name``, with optional field overrides."""
    try:
        cfg = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    return with_overrides(cfg, **overrides)


def with_overrides(cfg: ModelConfig, **overrides: Any) -> ModelConfig:
    """``cfg`` with some fields replaced; an unknown field is a :class:`ConfigError`."""
    if not overrides:
        return cfg
    unknown = sorted(set(overrides) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise ConfigError(f"unknown model config field(s) {unknown}")
    return replace(cfg, **overrides)


def _block_shapes(prefix: str, w: int, mlp: int, kv: int | None = None) -> dict[str, tuple[int, ...]]:
    kv = w if kv is None else kv
    s: dict[str, tuple[int, ...]] = {}
    for name, din in (("q", w), ("k", kv), ("v", kv), ("out", w)):
        s[f"{prefix}.{name}.weight"] = (w, din)
        s[f"{prefix}.{name}.bias"] = (w,)
    return s


def expected_weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The exact state-dict shapes of :class:`kmerl_edge._model.KMERLModel` for ``cfg``."""
    w = cfg.width
    s: dict[str, tuple[int, ...]] = {
        "encoder.patch_embed.weight": (w, cfg.patch_len),
        "encoder.patch_embed.bias": (w,),
        "encoder.lead_embed": (cfg.n_leads, w),
        "encoder.time_embed": (cfg.tokens_per_lead, w),
        "encoder.norm.weight": (w,),
        "encoder.norm.bias": (w,),
    }
    for i in range(cfg.depth):
        p = f"encoder.blocks.{i}"
        s.update({f"{p}.norm1.weight": (w,), f"{p}.norm1.bias": (w,)})
        s.update(_block_shapes(f"{p}.attn", w, cfg.mlp_dim))
        s.update({f"{p}.norm2.weight": (w,), f"{p}.norm2.bias": (w,)})
        s.update(
            {
                f"{p}.mlp.fc1.weight": (cfg.mlp_dim, w),
                f"{p}.mlp.fc1.bias": (cfg.mlp_dim,),
                f"{p}.mlp.fc2.weight": (w, cfg.mlp_dim),
                f"{p}.mlp.fc2.bias": (w,),
            }
        )
    for i in range(cfg.query_layers):
        p = f"query_head.layers.{i}"
        if cfg.query_self_attention:
            s.update({f"{p}.norm_self.weight": (w,), f"{p}.norm_self.bias": (w,)})
            s.update(_block_shapes(f"{p}.self_attn", w, cfg.query_mlp_dim))
        s.update({f"{p}.norm_q.weight": (w,), f"{p}.norm_q.bias": (w,)})
        s.update({f"{p}.norm_kv.weight": (w,), f"{p}.norm_kv.bias": (w,)})
        s.update(_block_shapes(f"{p}.cross_attn", w, cfg.query_mlp_dim))
        s.update({f"{p}.norm_mlp.weight": (w,), f"{p}.norm_mlp.bias": (w,)})
        s.update(
            {
                f"{p}.mlp.fc1.weight": (cfg.query_mlp_dim, w),
                f"{p}.mlp.fc1.bias": (cfg.query_mlp_dim,),
                f"{p}.mlp.fc2.weight": (w, cfg.query_mlp_dim),
                f"{p}.mlp.fc2.bias": (w,),
            }
        )
    s.update(
        {
            "query_head.norm.weight": (w,),
            "query_head.norm.bias": (w,),
            "query_head.classifier.weight": (1, w),
            "query_head.classifier.bias": (1,),
            "query_proj.weight": (w, cfg.text_dim),
            "query_proj.bias": (w,),
            "ecg_proj.fc1.weight": (cfg.proj_dim, w),
            "ecg_proj.fc1.bias": (cfg.proj_dim,),
            "ecg_proj.fc2.weight": (cfg.proj_dim, cfg.proj_dim),
            "ecg_proj.fc2.bias": (cfg.proj_dim,),
        }
    )
    if cfg.text_proj_layers == 2:
        s.update({"text_proj.fc1.weight": (cfg.proj_dim, cfg.text_dim), "text_proj.fc1.bias": (cfg.proj_dim,),
                  "text_proj.fc2.weight": (cfg.proj_dim, cfg.proj_dim), "text_proj.fc2.bias": (cfg.proj_dim,)})
    else:
        s.update({"text_proj.weight": (cfg.proj_dim, cfg.text_dim), "text_proj.bias": (cfg.proj_dim,)})
    if cfg.probe_classes:
        c = cfg.probe_classes
        s.update({"probe.weight": (c, w), "probe.bias": (c,), "probe.queries": (c, w)})
    return s


def check_weights(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], *, strict: bool = True) -> None:
    """Raise :class:`ConfigMismatchError` unless ``shapes`` match ``cfg`` exactly.

    With ``strict=False`` the training-only projections (``ecg_proj``, ``text_proj``) may be absent, as
    in a device bundle.
    """
    want = expected_weight_shapes(cfg)
    optional = {k for k in want if k.startswith(("ecg_proj.", "text_proj."))}
    missing = [k for k in want if k not in shapes and (strict or k not in optional)]
    extra = [k for k in shapes if k not in want]
    wrong = [f"{k}: {tuple(shapes[k])} != {want[k]}" for k in shapes if k in want and tuple(shapes[k]) != want[k]]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{'…' if len(missing) > 4 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:4]}{'…' if len(extra) > 4 else ''}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:4]}{'…' if len(wrong) > 4 else ''}")
        raise ConfigMismatchError(f"weights do not match config {cfg.name!r}: " + "; ".join(parts))
