"""Typed, JSON-serialisable training configuration and its presets (``paper``, ``cpu-small``, ``test``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ._errors import TrainConfigError

__all__ = ["MaskingConfig", "LossConfig", "TrainConfig", "PRESETS", "get_preset", "list_presets"]


@dataclass(frozen=True)
class MaskingConfig:
    """Dynamic lead masking and lead-independent segment masking (masked tokens are *dropped*).

    - ``lead_mode``: ``dynamic`` (per sample mask a count drawn from ``mask_lead_choices`` of the 12
      leads), ``fixed`` (always mask ``fixed_mask_leads``) or ``none`` (keep every present lead: the
      "no lead masking" ablation).
    - A record with fewer than 12 leads keeps ``few_lead_keep`` (min, max) of the leads it has.
    - ``segment_ratio``: fraction of each kept lead's tokens dropped, chosen independently per lead.
    - ``lead_count_per``: ``sample`` (each 12-lead record draws its own count from ``mask_lead_choices``)
      or ``batch`` (one draw per batch for all its 12-lead records: a batch that keeps many leads does not
      pad its few-lead samples to the many-lead length, so many-lead choices cost far less compute).
    """

    lead_mode: str = "dynamic"
    mask_lead_choices: tuple[int, ...] = (9, 10, 11)
    fixed_mask_leads: int = 10
    few_lead_keep: tuple[int, int] = (1, 3)
    segment_ratio: float = 0.25
    lead_count_per: str = "sample"

    def __post_init__(self) -> None:
        if self.lead_mode not in ("dynamic", "fixed", "none"):
            raise TrainConfigError(f"masking.lead_mode must be dynamic, fixed or none, not {self.lead_mode!r}")
        if not all(0 <= c < 12 for c in self.mask_lead_choices) or not self.mask_lead_choices:
            raise TrainConfigError("masking.mask_lead_choices must be counts in 0..11")
        if not 0 <= self.fixed_mask_leads < 12:
            raise TrainConfigError("masking.fixed_mask_leads must be in 0..11")
        lo, hi = self.few_lead_keep
        if not 1 <= lo <= hi:
            raise TrainConfigError("masking.few_lead_keep must be (min, max) with 1 <= min <= max")
        if self.lead_count_per not in ("sample", "batch"):
            raise TrainConfigError(f"masking.lead_count_per must be sample or batch, not {self.lead_count_per!r}")
        if not 0.0 <= self.segment_ratio < 1.0:
            raise TrainConfigError("masking.segment_ratio must be in [0, 1)")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights. ``clip_weight=0`` or ``bce_weight=0`` are the "one loss alone" ablations.

    ``same_report``: pairs of samples with the same report (``same_key="report"``) or the same entity set
    (``"entities"``) are ``mask``-ed from each other's contrastive negatives (default), made
    ``positive``-s, or kept as ``negative``-s (plain CLIP). With a frozen text encoder identical reports
    have identical logits, so ``positive`` then trains exactly as ``negative`` does; ``mask`` removes the
    log k floor of a group of k, and ``positive`` differs from ``negative`` only with ``same_key="entities"``.
    """

    clip_weight: float = 1.0
    bce_weight: float = 1.0
    temperature: float = 0.07
    gather: bool = True  # gather ECG/text embeddings across DDP ranks (with gradient) for the contrastive loss
    same_report: str = "mask"
    same_key: str = "report"

    def __post_init__(self) -> None:
        if self.same_report not in ("mask", "positive", "negative"):
            raise TrainConfigError(f"loss.same_report must be mask, positive or negative, not {self.same_report!r}")
        if self.same_key not in ("report", "entities"):
            raise TrainConfigError(f"loss.same_key must be report or entities, not {self.same_key!r}")
        if self.clip_weight < 0 or self.bce_weight < 0 or self.clip_weight + self.bce_weight == 0:
            raise TrainConfigError("loss weights must be >= 0 and not both 0")
        if self.temperature <= 0:
            raise TrainConfigError("temperature must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its data paths. ``batch_size`` is per process."""

    model: str = "kmerl-vit-tiny"
    text_encoder: str | None = None  # None: the packaged all-MiniLM-L6-v2; "ncbi/MedCPT-Query-Encoder" = paper
    text_trainable_layers: int = 0  # last N transformer layers of the text encoder that train (0: frozen)
    text_max_length: int = 128
    epochs: int = 50
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when smaller)
    batch_size: int = 512
    lr: float = 2e-4
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32
    seed: int = 42
    num_workers: int = 4
    log_every: int = 50
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise TrainConfigError(f"precision must be auto, bf16, fp16 or fp32, not {self.precision!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise TrainConfigError("batch_size and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainConfigError("max_steps must be >= 1")
        if self.text_trainable_layers < 0:
            raise TrainConfigError("text_trainable_layers must be >= 0")
        if self.ckpt_every < 1 or self.log_every < 1:
            raise TrainConfigError("ckpt_every and log_every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TrainConfigError(f"unknown training config keys: {sorted(unknown)}")
        m = d.pop("masking", {})
        lo = d.pop("loss", {})
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        masking = m if isinstance(m, MaskingConfig) else MaskingConfig(**_tuples(m))
        loss = lo if isinstance(lo, LossConfig) else LossConfig(**lo)
        return cls(**d, masking=masking, loss=loss)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, **kw: Any) -> TrainConfig:
        """A copy with fields replaced; ``masking``/``loss`` accept dicts of their own fields."""
        if isinstance(kw.get("masking"), dict):
            kw["masking"] = replace(self.masking, **_tuples(kw["masking"]))
        if isinstance(kw.get("loss"), dict):
            kw["loss"] = replace(self.loss, **kw["loss"])
        try:
            return replace(self, **kw)
        except TypeError as exc:
            raise TrainConfigError(str(exc)) from None


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


PRESETS: dict[str, TrainConfig] = {
    # The paper: ViT-tiny, 50 epochs, batch 512 per GPU (8 GPUs), AdamW 2e-4 / 1e-5, cosine, bf16.
    "paper": TrainConfig(),
    # A laptop CPU: the small device student, small batches, fp32, no loader workers.
    "cpu-small": TrainConfig(
        model="kmerl-student-s",
        epochs=5,
        batch_size=16,
        num_workers=0,
        log_every=10,
        ckpt_every=200,
        precision="fp32",
    ),
    # Unit tests: the micro model, tiny batches.
    "test": TrainConfig(
        model="kmerl-test-micro",
        epochs=1,
        batch_size=4,
        num_workers=0,
        log_every=1,
        ckpt_every=2,
        precision="fp32",
        lr=1e-3,
    ),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset by name, with optional overrides (see :meth:`TrainConfig.override`)."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise TrainConfigError(f"unknown preset {name!r}; known: {', '.join(list_presets())}") from None
    return cfg.override(**overrides) if overrides else cfg
