"""K-MERL trainer: dataset readers, training shards, text encoders, masking, losses, the distributed
training loop (``kmerl-train``), checkpoints and evaluation.

Importing ``trainer`` is cheap; torch and transformers load with the submodule that needs them:

- :mod:`trainer.data` — readers (MIMIC-IV-ECG, PTB-XL, CinC 2020/21, CPSC2018, CPSC2021 AF, MERL splits)
- :mod:`trainer.shards` — ``prepare_shards`` / ``open_shards`` (memory-mapped, atomic, resumable)
- :mod:`trainer.text` — ``load_text_encoder``
- :mod:`trainer.train` — ``train`` (torchrun DDP; ``from trainer.train import train``)
- :mod:`trainer.checkpoint` — ``save_checkpoint`` / ``load_teacher`` / ``check_held_out`` (refuses to score
  records a checkpoint trained on)
- :mod:`trainer.evaluate` — ``evaluate_zero_shot``, ``linear_probe``, ``run_eval``
- :mod:`trainer.knowledge` — the knowledge-extraction pipeline (entities + label matrix)
"""

from __future__ import annotations

import importlib
from typing import Any

from ._config import LossConfig, MaskingConfig, TrainConfig, get_preset, list_presets
from ._errors import (
    CheckpointError,
    DatasetFormatError,
    LabelAlignmentError,
    ShardError,
    SplitError,
    TextEncoderUnavailableError,
    TrainConfigError,
    TrainerError,
    TrainingDataLeakError,
)

__all__ = [
    "TrainConfig",
    "MaskingConfig",
    "LossConfig",
    "get_preset",
    "list_presets",
    "load_teacher",
    "save_checkpoint",
    "load_text_encoder",
    "evaluate_zero_shot",
    "prepare_shards",
    "open_shards",
    "TrainerError",
    "DatasetFormatError",
    "ShardError",
    "CheckpointError",
    "TextEncoderUnavailableError",
    "TrainConfigError",
    "LabelAlignmentError",
    "SplitError",
    "TrainingDataLeakError",
    "check_held_out",
    "training_record_ids",
    "read_ptbxl",
]

_LAZY = {
    "load_teacher": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_text_encoder": "text",
    "evaluate_zero_shot": "evaluate",
    "prepare_shards": "shards",
    "open_shards": "shards",
    "check_held_out": "checkpoint",
    "training_record_ids": "checkpoint",
    "read_ptbxl": "data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
