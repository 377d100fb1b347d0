"""Checkpoints: atomic, pickle-free, loadable as a teacher by the exporter.

A checkpoint is a directory::

    model.safetensors        the KMERLModel state dict (fp32)
    config.json              format, ModelConfig, text encoder spec, entity names (the query-BCE
                             columns), preprocess config, training config, step, free-form meta
    text_encoder/            only when text-encoder layers were trained: save_pretrained (safetensors)
    train_state.safetensors  optimizer tensors and per-rank torch / CUDA RNG states (uint8)
    train_state.json         optimizer hyper-parameters, scheduler, grad scaler, numpy/python RNG
                             states and the data position (epoch, step in epoch, global step)
    training_records.json    the record ids the model was trained on, the shard store's dataset and
                             split rule: ``kmerl-train eval`` refuses to score any of them

It is written into ``<name>.tmp-<pid>/``, every file fsynced, then renamed with :func:`os.replace`;
a directory without the ``.tmp`` suffix is always complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmerl_edge._config import ModelConfig
from kmerl_edge._preprocess import PreprocessConfig

from ._errors import CheckpointError, TrainingDataLeakError
from .shards import _fsync_dir, _fsync_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "Teacher",
    "save_checkpoint",
    "load_teacher",
    "load_train_state",
    "latest_checkpoint",
    "training_record_ids",
    "check_held_out",
]

CHECKPOINT_FORMAT = "kmerl-checkpoint/1"
TRAINING_RECORDS_FILE = "training_records.json"


@dataclass
class Teacher:
    """A trained model ready for export: ``model`` is a :class:`kmerl_edge._model.KMERLModel` in eval
    mode, fp32, on CPU. ``text_encoder`` is a spec for :func:`trainer.text.load_text_encoder`."""

    model: Any
    config: ModelConfig
    text_encoder: str
    preprocess: PreprocessConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def entities(self) -> list[str]:
        return list(self.meta.get("entities", []))


def _tensors(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _optimizer_split(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    state_json: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous().clone()
            else:
                state_json.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "state": state_json}


def save_checkpoint(
    path: str | Path,
    *,
    model: Any,
    text_encoder: str,
    entities: Sequence[str],
    preprocess: PreprocessConfig,
    train_config: Mapping[str, Any] | None = None,
    step: int = 0,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng_states: Sequence[Mapping[str, Any]] | None = None,
    position: Mapping[str, Any] | None = None,
    text_model: Any = None,
    text_tokenizer: Any = None,
    text_pooling: str | None = None,
    meta: Mapping[str, Any] | None = None,
    training_records: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` (a directory that must not exist yet).

    ``model`` is a ``KMERLModel`` (its ``cfg`` is stored); ``text_encoder`` the spec it was trained with;
    ``entities`` the query texts of the BCE columns. The training state (``optimizer``, ``scheduler``
    (LambdaLR), ``scaler`` (GradScaler), ``rng_states`` (one dict per rank from
    :func:`trainer.train.rng_state`), ``position``) is optional: a teacher needs only the model part.
    ``text_model`` (+ tokenizer) is saved under ``text_encoder/`` when its layers were trained, and the
    stored spec then points there. ``training_records`` (``{"record_ids": [...], "dataset": ...,
    "split": {...}}``) is written to ``training_records.json``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        raise CheckpointError(f"{path} exists; checkpoints are never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cfg: ModelConfig = model.cfg
    files = ["model.safetensors", "config.json"]
    save_file(_tensors(model.state_dict()), str(tmp / "model.safetensors"), metadata={"format": CHECKPOINT_FORMAT})
    spec_entry: dict[str, Any] = {"spec": str(text_encoder), "trained_copy": None, "pooling": text_pooling}
    if text_model is not None:
        text_model.save_pretrained(str(tmp / "text_encoder"), safe_serialization=True)
        if text_tokenizer is not None:
            text_tokenizer.save_pretrained(str(tmp / "text_encoder"))
        (tmp / "text_encoder" / "kmerl_pooling.json").write_text(json.dumps({"pooling": text_pooling or "mean"}))
        spec_entry["trained_copy"] = "text_encoder"
    config = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "model": cfg.to_dict(),
        "text_encoder": spec_entry,
        "entities": list(entities),
        "preprocess": preprocess.to_dict(),
        "train_config": dict(train_config) if train_config is not None else None,
        "meta": dict(meta or {}),
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    if training_records is not None:
        tr = dict(training_records)
        tr["record_ids"] = sorted({str(r) for r in tr.get("record_ids", [])})
        (tmp / TRAINING_RECORDS_FILE).write_text(json.dumps(tr, sort_keys=True))
        files.append(TRAINING_RECORDS_FILE)
    if optimizer is not None or rng_states is not None or position is not None:
        import torch

        tensors: dict[str, Any] = {}
        state: dict[str, Any] = {"position": dict(position or {})}
        if optimizer is not None:
            t, j = _optimizer_split(optimizer)
            tensors.update(t)
            state["optimizer"] = j
        if scheduler is not None:
            state["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        ranks = []
        for r, rs in enumerate(rng_states or ()):
            tensors[f"rng.torch.{r}"] = rs["torch"]
            for i, c in enumerate(rs.get("cuda", [])):
                tensors[f"rng.cuda.{r}.{i}"] = c
            ranks.append({"numpy": rs["numpy"], "python": rs["python"], "n_cuda": len(rs.get("cuda", []))})
        state["rng"] = ranks
        if not tensors:
            tensors["_empty"] = torch.zeros(0)
        save_file(tensors, str(tmp / "train_state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        files += ["train_state.safetensors", "train_state.json"]
    for p in tmp.rglob("*"):
        if p.is_file():
            _fsync_file(p)
    _fsync_dir(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _step_of(p: Path) -> int:
    try:
        return int(p.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint ``checkpoints/step-XXXXXXXX`` of a run (``.tmp`` dirs ignored)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return None
    done = [p for p in d.iterdir() if p.is_dir() and ".tmp" not in p.name and (p / "config.json").is_file()]
    done = [p for p in done if _step_of(p) >= 0]
    return max(done, key=_step_of) if done else None


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise CheckpointError(f"{p} is neither a checkpoint nor a run directory with checkpoints")
    return latest


def _read_config(p: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: unreadable config.json: {exc}") from exc
    if cfg.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: unsupported checkpoint format {cfg.get('format')!r}")
    return dict(cfg)


def load_teacher(path: str | Path) -> Teacher:
    """Load a checkpoint (or the latest checkpoint of a run directory) as an fp32 eval-mode teacher.

    The weights are checked against the stored :class:`ModelConfig` (names and shapes) before loading.
    """
    from safetensors.torch import load_file

    from kmerl_edge._config import check_weights
    from kmerl_edge._model import KMERLModel

    p = _resolve(path)
    cfg_json = _read_config(p)
    mcfg = ModelConfig.from_dict(cfg_json["model"])
    state = load_file(str(p / "model.safetensors"))
    check_weights(mcfg, {k: tuple(v.shape) for k, v in state.items()})
    model = KMERLModel(mcfg)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    te = cfg_json["text_encoder"]
    spec = str(p / te["trained_copy"]) if te.get("trained_copy") else te["spec"]
    meta = {
        "entities": cfg_json["entities"],
        "step": cfg_json["step"],
        "train_config": cfg_json.get("train_config"),
        "text_encoder_base": te["spec"],
        "path": str(p),
    }
    meta.update(cfg_json.get("meta") or {})
    return Teacher(model, mcfg, spec, PreprocessConfig.from_dict(cfg_json["preprocess"]), meta)


def load_train_state(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, json state) of a checkpoint's training state; :class:`CheckpointError` if absent."""
    from safetensors.torch import load_file

    p = Path(path)
    if not (p / "train_state.json").is_file():
        raise CheckpointError(f"{p} holds no training state (a teacher-only checkpoint cannot be resumed)")
    return load_file(str(p / "train_state.safetensors")), json.loads((p / "train_state.json").read_text())


def training_record_ids(path: str | Path) -> frozenset[str] | None:
    """The record ids a checkpoint (or a run directory's latest checkpoint) was trained on; ``None`` for
    a checkpoint written before training sets were recorded."""
    p = _resolve(path)
    f = p / TRAINING_RECORDS_FILE
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{f}: unreadable: {exc}") from exc
    return frozenset(str(r) for r in doc.get("record_ids", []))


def check_held_out(path: str | Path, record_ids: Sequence[str], *, what: str = "records",
                   allow_unknown: bool = False) -> dict[str, Any]:
    """Raise :class:`TrainingDataLeakError` if any of ``record_ids`` is in the checkpoint's training set,
    or if that set is unknown (a checkpoint from before it was recorded) unless ``allow_unknown``.

    Record ids compare as strings, with any ``source:`` prefix stripped on both sides (PTB-XL ``ecg_id``,
    CPSC/CinC record names, MIMIC ``study_id``). Returns ``{"training_set": "recorded" | "unknown",
    "n_training_records", "n_checked"}`` for the results file."""
    train = training_record_ids(path)
    if train is None:
        if not allow_unknown:
            raise TrainingDataLeakError(
                f"{path} does not record its training set, so held-out {what} cannot be verified; "
                "retrain with this version or pass --allow-unknown-training-set (recorded in the results)")
        return {"training_set": "unknown", "n_training_records": None, "n_checked": len(record_ids)}

    def bare(r: str) -> str:
        return str(r).split(":", 1)[1] if ":" in str(r) else str(r)

    seen = {bare(r) for r in train}
    leak = sorted({str(r) for r in record_ids if bare(str(r)) in seen})
    if leak:
        raise TrainingDataLeakError(
            f"{len(leak)} of {len(record_ids)} {what} are in the training set of {path} (first: {leak[:5]}); "
            "evaluate on records the model never saw (PTB-XL: train on folds 1-8, score fold 10)")
    return {"training_set": "recorded", "n_training_records": len(train), "n_checked": len(record_ids)}
