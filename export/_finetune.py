"""Optional recipe stage: supervised fine-tuning of the trained network on ground-truth class labels.

The trainer learns the cardiac queries from entities a lexicon reads out of each report (plus the
superclass aggregation); distillation only matches a teacher. This stage trains the network end to end on
the labels themselves — by default the five PTB-XL superclasses of the ``train`` split's PTB-XL records
(``export._corpus``: the official ``scp_statements`` diagnostic classes) — with a binary cross-entropy on
the logits of that label set's queries, while a consistency term keeps every other query's logit (AF, the
other rhythm classes, and the supervised classes on records without those labels) at the starting
network's value on the same window, so nothing else is forgotten. Each step draws one lead count k in
1..``max_leads`` and a random k-lead subset of each window's present leads, as distillation does; with
``augment`` the network sees a device-shifted window (:mod:`export._augment`) and the consistency target
is the starting network on the clean one.

The graph, the query mechanism and the export are unchanged: the fine-tuned network is exported like the
trained one (``python -m export.default_model ... --finetune-steps N``). Off by default (``steps=0``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kmerl_edge._errors import ConfigError

from ._augment import AugmentConfig
from ._corpus import shard_records

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kmerl_edge._model import KMERLModel

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune_af_labels", "finetune_model", "finetune_windows"]


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning stage (``steps=0``: off)."""

    steps: int = 0
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    batch_size: int = 32
    #: lead counts drawn per step: 1..max_leads
    max_leads: int = 12
    #: the label set whose queries learn the ground-truth labels
    label_set: str = "ptbxl_superclass"
    #: weight of the label BCE and of the logit consistency (MSE to the starting network's logits)
    label_weight: float = 1.0
    consistency_weight: float = 1.0
    #: device-shift augmentation of the network's input (None: off)
    augment: AugmentConfig | None = None
    #: weight of a BCE on the AF query's logit against ground-truth AF labels (``af_labels`` of
    #: :func:`finetune_model`; 0: off, the AF logit only takes part in the consistency term)
    af_label_weight: float = 0.0
    #: the AF query: its label set and its index there
    af_label_set: str = "rhythm"
    af_index: int = 0
    #: weight of an extra MSE anchoring the AF logit of every window to the starting network's (0: off)
    af_consistency_weight: float = 0.0
    #: share of steps forced to one lead (0: the lead count is drawn uniformly from 1..max_leads)
    one_lead_share: float = 0.0
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"fine-tuning steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"fine-tuning learning rate must be > 0, got {self.lr}")
        if not 1 <= self.max_leads <= 12:
            raise ConfigError(f"fine-tuning max_leads must be 1-12, got {self.max_leads}")
        if self.batch_size < 1:
            raise ConfigError(f"fine-tuning batch size must be >= 1, got {self.batch_size}")
        if min(self.label_weight, self.consistency_weight, self.af_label_weight, self.af_consistency_weight) < 0:
            raise ConfigError("fine-tuning loss weights must be >= 0")
        if not 0.0 <= self.one_lead_share <= 1.0:
            raise ConfigError(f"fine-tuning one_lead_share must be in [0, 1], got {self.one_lead_share}")
        if self.af_index < 0:
            raise ConfigError(f"fine-tuning af_index must be >= 0, got {self.af_index}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FinetuneResult:
    model: KMERLModel
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    labelled: int = 0
    windows: int = 0


def finetune_windows(shards: str | Path, corpus_records: Sequence[Any], classes: Sequence[str]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows of a shard store with their labels: ``(windows (N, 12, S) float16, labels (N, C)
    float32 over ``classes``, labelled (N,) bool)``. A window is labelled when its corpus record is a PTB-XL
    record with at least one of ``classes`` (the superclasses come from PTB-XL's own statement table; no
    other source has a superclass mapping); the others only take part in the consistency term."""
    store, ids, by_id = shard_records(shards, corpus_records, error=ConfigError)
    x = np.asarray(store.batch(list(range(len(ids)))), dtype=np.float16)
    y = np.zeros((len(ids), len(classes)), np.float32)
    for i, rid in enumerate(ids):
        r = by_id[rid]
        if r.source == "ptbxl":
            y[i] = [c in r.labels for c in classes]
    return x, y, np.asarray(y.any(axis=1), dtype=bool)


def finetune_af_labels(shards: str | Path, corpus_records: Sequence[Any], rhythm_classes: Sequence[str],
                       af_class: str = "atrial fibrillation") -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth AF labels of a shard store's windows, in its order: ``(af (N,) float32, labelled (N,)
    bool)``. A window is labelled when its corpus record is in the ``train`` split and names at least one of
    ``rhythm_classes`` (PTB-XL rhythm statements, CinC SNOMED rhythms, the CPSC-2021 Holter annotations);
    its label is whether it names ``af_class``. Validation and test records (PTB-XL folds 9-10, held-out
    patients, the held-out CPSC-2021 Holter patients) are never labelled."""
    store, ids, by_id = shard_records(shards, corpus_records, error=ConfigError)
    rh = set(rhythm_classes)
    af = np.zeros(len(ids), np.float32)
    lab = np.zeros(len(ids), bool)
    for i, rid in enumerate(ids):
        r = by_id[rid]
        if r.split == "train" and rh & set(r.labels):
            lab[i] = True
            af[i] = float(af_class in r.labels)
    return af, lab


def finetune_model(
    model: KMERLModel,
    text_embeddings: Mapping[str, torch.Tensor],
    windows: np.ndarray,
    labels: np.ndarray,
    labelled: np.ndarray,
    config: FinetuneConfig,
    af_labels: np.ndarray | None = None,
    af_labelled: np.ndarray | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place (see the module docstring). ``text_embeddings``: label set → raw text
    embeddings (n, text_dim), every label set whose logits must be kept, including ``config.label_set``;
    ``windows`` (N, 12, S) in canonical lead order (absent leads are zero rows); ``labels`` (N, C) over
    ``config.label_set``'s classes; ``labelled`` (N,) which rows carry them; ``af_labels`` / ``af_labelled``
    (N,): ground-truth AF and which rows carry it (:func:`finetune_af_labels`), needed when
    ``config.af_label_weight`` > 0."""
    import torch
    import torch.nn.functional as F

    from kmerl_edge._preprocess import PreprocessConfig

    t0 = time.perf_counter()
    if config.label_set not in text_embeddings:
        raise ConfigError(f"fine-tuning label set {config.label_set!r} is not among {sorted(text_embeddings)}")
    x_all = np.asarray(windows)
    y_all = np.asarray(labels, dtype=np.float32)
    lab = np.asarray(labelled, dtype=bool)
    n_cls = int(text_embeddings[config.label_set].shape[0])
    if x_all.ndim != 3 or len(y_all) != len(x_all) or len(lab) != len(x_all) or y_all.shape[1:] != (n_cls,):
        raise ConfigError(f"fine-tuning data: windows {x_all.shape}, labels {y_all.shape}, labelled {lab.shape} "
                          f"do not match ({n_cls} classes in {config.label_set!r})")
    use_af = config.af_label_weight > 0
    af_y = np.zeros(len(x_all), np.float32)
    af_lab = np.zeros(len(x_all), bool)
    if use_af:
        if af_labels is None or af_labelled is None:
            raise ConfigError("af_label_weight > 0 needs af_labels and af_labelled")
        af_y = np.asarray(af_labels, dtype=np.float32)
        af_lab = np.asarray(af_labelled, dtype=bool)
        if af_y.shape != (len(x_all),) or af_lab.shape != (len(x_all),):
            raise ConfigError(f"fine-tuning AF labels {af_y.shape} / {af_lab.shape} do not match "
                              f"{len(x_all)} windows")
    if (use_af or config.af_consistency_weight > 0) and config.af_label_set not in text_embeddings:
        raise ConfigError(f"AF label set {config.af_label_set!r} is not among {sorted(text_embeddings)}")
    present = np.abs(x_all).max(axis=-1) > 0
    n_present = present.sum(axis=1)
    usable = np.flatnonzero(n_present > 0)
    if config.steps and not (lab[usable]).any():
        raise ConfigError("no fine-tuning window carries labels")
    names = list(text_embeddings)
    text = torch.cat([text_embeddings[n].to(torch.float32) for n in names])
    off = 0
    sup = slice(0, 0)
    af_col = -1
    for n in names:
        sz = int(text_embeddings[n].shape[0])
        if n == config.label_set:
            sup = slice(off, off + sz)
        if n == config.af_label_set:
            if config.af_index >= sz and (use_af or config.af_consistency_weight > 0):
                raise ConfigError(f"af_index {config.af_index} is outside {n!r} ({sz} queries)")
            af_col = off + config.af_index
        off += sz
    if config.steps == 0:
        return FinetuneResult(model, [], 0.0, int(lab.sum()), len(x_all))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    fs = PreprocessConfig().target_fs
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if not n.startswith(("ecg_proj.", "text_proj."))]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / max(1, config.warmup_steps)
        frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    sup_mask = torch.zeros(text.shape[0], dtype=torch.bool)
    sup_mask[sup] = True
    history: list[dict[str, float]] = []
    model.train()
    for step in range(config.steps):
        k = int(rng.integers(1, config.max_leads + 1))
        if config.one_lead_share > 0 and rng.random() < config.one_lead_share:
            k = 1
        cand = usable[n_present[usable] >= k]
        if cand.size == 0:
            k = int(n_present[usable].max())
            cand = usable[n_present[usable] >= k]
        idx = rng.choice(cand, size=min(config.batch_size, cand.size), replace=False)
        lid = np.stack([np.sort(rng.choice(np.flatnonzero(present[i]), size=k, replace=False)) for i in idx])
        xs = np.take_along_axis(x_all[idx], lid[:, :, None], axis=1).astype(np.float32)
        x_in = xs
        if config.augment is not None:
            from ._augment import augment_windows

            x_in = augment_windows(xs, rng, fs=fs, config=config.augment)
        lid_t = torch.from_numpy(lid.astype(np.int64))
        with torch.no_grad():
            r_tokens, _, _ = ref.encoder(torch.from_numpy(xs), lid_t)
            r_logits = ref.query_head(ref.project_queries(text), r_tokens, None)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        tokens, _, _ = model.encoder(torch.from_numpy(np.ascontiguousarray(x_in)), lid_t)
        logits = model.query_head(model.project_queries(text), tokens, None)
        is_lab = torch.from_numpy(lab[idx])
        # consistency on every logit except the supervised ones of labelled rows
        keep = ~(is_lab.unsqueeze(1) & sup_mask.unsqueeze(0))
        is_af = torch.from_numpy(af_lab[idx])
        if use_af:  # nor the AF logit of rows with an AF label
            keep[:, af_col] &= ~is_af
        w = keep.to(logits.dtype)
        l_cons = (((logits - r_logits) ** 2) * w).sum() / w.sum().clamp_min(1.0)
        if bool(is_lab.any()):
            l_lab = F.binary_cross_entropy_with_logits(logits[is_lab][:, sup], torch.from_numpy(y_all[idx][lab[idx]]))
        else:
            l_lab = logits.sum() * 0.0
        loss = config.label_weight * l_lab + config.consistency_weight * l_cons
        l_af = logits.sum() * 0.0
        if use_af and bool(is_af.any()):
            l_af = F.binary_cross_entropy_with_logits(logits[is_af][:, af_col], torch.from_numpy(af_y[idx][af_lab[idx]]))
            loss = loss + config.af_label_weight * l_af
        if config.af_consistency_weight > 0:
            loss = loss + config.af_consistency_weight * ((logits[:, af_col] - r_logits[:, af_col]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % max(1, config.log_every) == 0 or step == config.steps - 1:
            history.append({"step": float(step), "loss": loss.item(), "label_bce": l_lab.item(),
                            "consistency": l_cons.item(), "af_bce": l_af.item(), "leads": float(k)})
    model.eval()
    return FinetuneResult(model, history, time.perf_counter() - t0, int(lab.sum()), len(x_all))
