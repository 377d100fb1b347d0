"""Named errors of the trainer. Every one is a :class:`kmerl_edge.KmerlError`."""

from __future__ import annotations

from kmerl_edge._errors import KmerlError

__all__ = [
    "TrainerError",
    "DatasetFormatError",
    "ShardError",
    "CheckpointError",
    "TextEncoderUnavailableError",
    "TrainConfigError",
    "LabelAlignmentError",
    "SplitError",
    "TrainingDataLeakError",
]


class TrainerError(KmerlError):
    """Base class of the trainer's errors."""


class DatasetFormatError(TrainerError, ValueError):
    """A dataset directory or CSV does not have the layout / columns its reader expects."""


class ShardError(TrainerError):
    """A shard store is missing, incomplete or inconsistent."""


class CheckpointError(TrainerError):
    """A checkpoint is missing, incomplete or does not match the run."""


class TextEncoderUnavailableError(TrainerError, OSError):
    """A text encoder cannot be loaded (not on disk and no network, or not a Hugging Face encoder)."""


class TrainConfigError(TrainerError, ValueError):
    """A training / evaluation configuration is invalid."""


class LabelAlignmentError(TrainerError, ValueError):
    """A label matrix does not line up with the dataset's record ids."""


class SplitError(TrainerError, ValueError):
    """A data split is missing, unknown or not allowed for the source (splits are always explicit)."""


class TrainingDataLeakError(TrainerError):
    """Evaluation was asked to score records the checkpoint was trained on (or its training set is
    unknown): the numbers would not be held-out numbers."""
