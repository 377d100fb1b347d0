"""A local ``transformers`` causal LM as a chat backend (greedy decoding, one generation at a time)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmerl_edge._errors import require

__all__ = ["TransformersConfig", "TransformersChatBackend"]


@dataclass(frozen=True)
class TransformersConfig:
    """A model directory loadable by ``AutoModelForCausalLM`` / ``AutoTokenizer`` and decoding options."""

    model_path: str
    max_new_tokens: int = 256
    device: str = "cpu"
    max_input_tokens: int | None = None  # None: the model's position limit minus max_new_tokens


class TransformersChatBackend:
    """Chat backend over a local causal LM. Uses the tokenizer's chat template when it has one."""

    def __init__(self, config: TransformersConfig) -> None:
        transformers: Any = require("transformers", "train")
        require("torch", "train")
        self.config = config
        path = Path(config.model_path)
        self.model_id = f"transformers:{path.resolve().name}"
        self.params: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "do_sample": False}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(path)).to(config.device).eval()
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        with self._lock:
            enc = self.tokenizer(self._prompt(messages), return_tensors="pt")
            ids = enc["input_ids"]
            limit = self.config.max_input_tokens
            if limit is None:
                cfg = self.model.config
                pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
                limit = max(1, int(pos) - self.config.max_new_tokens) if pos else None
            if limit is not None and ids.shape[1] > limit:
                ids = ids[:, -limit:]
                self._stats["truncated_prompts"] += 1
            pad = self.tokenizer.pad_token_id
            if pad is None:
                pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=ids.to(self.config.device),
                    attention_mask=torch.ones_like(ids).to(self.config.device),
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                )
            self._stats["generations"] += 1
            return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
